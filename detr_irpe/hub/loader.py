"""One way in: a model *source* (this project's checkpoint, a reference-code checkpoint, a
weights-only state dict, an http(s) URL, a model-zoo name or a Hugging Face DETR folder) becomes
weights in this project's names plus the resolved config that rebuilds the model.

Where the config comes from, first match wins: ``config`` (a file given by the user), the
checkpoint's own ``config`` (this project) or ``args`` (the reference code), else the architecture
inferred from the weights' names and shapes. The zoo entry's or the Hugging Face folder's
overrides, then the user's ``key=value`` overrides, go on top.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import SourceError

log = logging.getLogger(__name__)

URL = re.compile(r"^https?://", re.IGNORECASE)


@dataclass
class ModelSource:
    """What a source holds: weights in this project's names and what is known of its config."""

    label: str
    state: dict
    #: the full checkpoint (optimizer, epoch, ...) for a file of this project or of the reference
    checkpoint: dict = field(default_factory=dict)
    #: key=value overrides the source itself implies (a zoo entry's architecture, config.json)
    overrides: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    path: Path | None = None

    @property
    def kind(self) -> str:
        """project (a stored config), reference (``args``) or weights (the architecture is inferred)."""
        if isinstance(self.checkpoint.get("config"), dict):
            return "project"
        if self.checkpoint.get("args") is not None:
            return "reference"
        return "weights"


@dataclass
class LoadedModel:
    """A model in eval mode with its post-processor, resolved config and class names."""

    model: torch.nn.Module
    postprocess: torch.nn.Module
    cfg: object
    source: str
    device: torch.device
    class_names: list[str] | None = None

    @property
    def label(self) -> str:
        """A short description for figure titles: the source's name and its position encoding."""
        irpe = self.cfg.model.irpe
        return f"{Path(self.source).name} ({irpe if irpe else 'abs only'})"


def open_source(source: str | os.PathLike, raw_weights: bool = False) -> ModelSource:
    """Read a model source (see the module's docstring) without building a model. A checkpoint of
    a run with model EMA gives its EMA weights, or with ``raw_weights`` its raw ones."""
    from .checkpoint import load_checkpoint
    from .huggingface import is_hf_folder, read_hf_folder
    from .zoo import ZOO, zoo_entry

    text = str(source)
    if isinstance(source, str) and (text in ZOO or URL.match(text)):
        path = local_file(text)
        src = _checkpoint_source(load_checkpoint(path), text, path, raw_weights)
        src.overrides = list(zoo_entry(text).overrides) if text in ZOO else []
        return src
    path = Path(text).expanduser()
    if path.is_dir():
        if not is_hf_folder(path):
            raise SourceError(f"model source {path} is a folder but not a Hugging Face DETR folder "
                              f"(expected config.json and model.safetensors or pytorch_model.bin)")
        hf = read_hf_folder(path)
        return ModelSource(label=text, state=hf.state, overrides=list(hf.overrides), class_names=hf.class_names,
                           path=path)
    if path.is_file():
        return _checkpoint_source(load_checkpoint(path), text, path, raw_weights)
    if isinstance(source, str) and "/" not in text and not path.suffix:
        import difflib

        near = difflib.get_close_matches(text, list(ZOO), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else f"; zoo names: {', '.join(ZOO)}"
        raise SourceError(f"model source {text!r} is neither a file, a folder, a URL nor a zoo name{hint}")
    raise SourceError(f"model source {path} does not exist (expected a checkpoint file, a Hugging Face folder, "
                      f"an http(s) URL or a zoo name: see detr-irpe zoo)")


def local_file(source: str | os.PathLike) -> Path:
    """The local file of a source that is one file: a zoo name or URL is downloaded (once) and
    checked; a path is returned as it is."""
    from .download import download
    from .zoo import ZOO, manual_file, zoo_entry

    text = str(source)
    if text in ZOO:
        entry = zoo_entry(text)
        return download(entry.url, sha256=entry.sha256) if entry.url else manual_file(entry)
    if URL.match(text):
        return download(text)
    return Path(text).expanduser()


def _checkpoint_source(ckpt: dict, label: str, path: Path, raw_weights: bool = False) -> ModelSource:
    ema = ckpt.get("ema")
    if isinstance(ema, dict) and isinstance(ema.get("model"), dict):
        which = "raw weights (--raw-weights)" if raw_weights else "EMA weights (the raw ones with --raw-weights)"
        log.info("model source %s: a run with model EMA; using its %s", label, which)
        if not raw_weights:
            return ModelSource(label=label, state=ema["model"], checkpoint=ckpt, path=path)
    return ModelSource(label=label, state=ckpt["model"], checkpoint=ckpt, path=path)


def source_config(src: ModelSource, config: str | os.PathLike | None = None, overrides: Sequence[str] = ()):
    """The resolved config that rebuilds ``src``'s model (see the module's docstring). The class
    count is the weights' own, and the backbone comes from the weights."""
    from .checkpoint import config_of_checkpoint
    from ..config import apply_overrides, load_config
    from ..config.resolve import resolve_config
    from .infer import infer_architecture

    given = [*src.overrides, *overrides]
    if config:
        cfg = load_config(config, given)
    elif src.kind != "weights":
        cfg = apply_overrides(config_of_checkpoint(src.checkpoint), given, f"model source {src.label}")
    else:
        inferred = infer_architecture(src.state, source=f"model source {src.label}", given=given)
        if inferred.undetermined:
            # defaults for what the weights cannot tell: say which, so a wrong default is found
            log.warning("model source %s: the weights do not tell %s; the defaults apply (give them as "
                        "key=value overrides or with --config)", src.label, ", ".join(inferred.undetermined))
        cfg = load_config(None, [*inferred.overrides, *given])
    cfg = apply_overrides(cfg, ["model.backbone.weights=checkpoint"], f"model source {src.label}")
    return resolve_config(cfg, weights=src.state, class_names=src.class_names, source=f"model source {src.label}")


def load_model(source, overrides: Sequence[str] = (), device="cpu", config: str | os.PathLike | None = None,
               raw_weights: bool = False) -> LoadedModel:
    """Build the model of ``source`` (a checkpoint file, URL, zoo name or Hugging Face folder),
    load its weights strictly and put it in eval mode on ``device``; ``overrides`` are
    ``key=value`` strings (e.g. ``data.root=/data/coco`` for the data the tools read);
    ``raw_weights``: a model-EMA run's raw weights instead of its EMA ones."""
    from .checkpoint import load_state_dict
    from ..core.runtime import resolve_device
    from ..models import build_model

    src = source if isinstance(source, ModelSource) else open_source(source, raw_weights)
    cfg = source_config(src, config, overrides)
    model, _, post = build_model(cfg)
    load_state_dict(model, src.state, source=f"model source {src.label}")
    device = resolve_device(device, "--device") if isinstance(device, str) else device
    model.eval().to(device)
    return LoadedModel(model=model, postprocess=post["bbox"], cfg=cfg, source=src.label, device=device,
                       class_names=list(cfg.model.class_names) if cfg.model.class_names else None)
