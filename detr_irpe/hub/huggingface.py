"""Hugging Face ``DetrForObjectDetection`` folders: ``config.json`` plus ``model.safetensors`` or
``pytorch_model.bin`` in the key names the Hub stores, read into this project's parameter names and
the config overrides that rebuild the model, and written back. ``transformers`` is not needed.
Folders of ``ConditionalDetrForObjectDetection`` and ``DabDetrForObjectDetection`` are read too:
their key maps and config fields are ``hub.huggingface_family``'s, the reading is this module's.

What the two models share and where they differ (checked against transformers' own model in
tests/test_huggingface.py):

- The backbone is a timm ResNet (``use_timm_backbone``) or transformers' ResNet; both have the
  layout of torchvision's ResNet (stride in the 3x3 convolution, the first block of a dilated stage
  undilated) and frozen batch norm with eps 1e-5, as torchvision's ``FrozenBatchNorm2d``. Only the
  names differ.
- q, k and v are three linear layers there and one packed ``in_proj`` here (q, k, v stacked).
- The sine position embedding is the same (normalised over the unpadded region, scale 2 pi,
  eps 1e-6, y features first); the learned one is the same up to names.
- transformers' DETR has post-norm layers only; with ``auxiliary_loss`` its decoder feeds each
  layer's *normalised* output to the next layer, the reference does not, so for such a folder this
  project's detections (the reference computation) differ from transformers' forward.
- Training only: transformers' ``attention_dropout`` and ``activation_dropout`` are separate (0 by
  default), and it applies dropout to the encoder input; here one ``model.dropout`` covers the
  attention weights and the feed-forward activation, as the reference.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.errors import SourceError, UserError
from .huggingface_family import ARCHITECTURES as FAMILY, Architecture

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
#: weight files in the order they are looked for
WEIGHT_FILES = (SAFETENSORS_FILE, TORCH_FILE)
#: transformers' name of the detection model and its ``model_type``
ARCHITECTURE = "DetrForObjectDetection"
MODEL_TYPE = "detr"
#: the name transformers gives a label it was not told (``LABEL_3``)
PLACEHOLDER_LABEL = re.compile(r"LABEL_\d+")
#: the name the Hub's COCO folders give the category ids that have no category
GAP_LABEL = "N/A"

#: transformers' ResNet (``use_timm_backbone`` false): (layer type, blocks per stage, stage widths) -> name
HF_RESNETS = {
    ("basic", (2, 2, 2, 2), (64, 128, 256, 512)): "resnet18",
    ("basic", (3, 4, 6, 3), (64, 128, 256, 512)): "resnet34",
    ("bottleneck", (3, 4, 6, 3), (256, 512, 1024, 2048)): "resnet50",
    ("bottleneck", (3, 4, 23, 3), (256, 512, 1024, 2048)): "resnet101",
}
#: transformers' ResNetConfig defaults, for fields a config.json leaves out
HF_RESNET_DEFAULTS = {"layer_type": "bottleneck", "depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048],
                      "embedding_size": 64, "downsample_in_first_stage": False, "downsample_in_bottleneck": False,
                      "hidden_act": "relu"}

#: Hub name <-> project name, ``{n}`` a layer index, ``{p}`` weight or bias, ``{rest}`` anything;
#: used both ways (reading and writing)
RENAMES = (
    ("model.backbone.conv_encoder.model.{rest}", "backbone.0.body.{rest}"),
    ("model.position_embedding.row_embeddings.weight", "backbone.1.row_embed.weight"),
    ("model.position_embedding.column_embeddings.weight", "backbone.1.col_embed.weight"),
    ("model.input_projection.{p}", "input_proj.{p}"),
    ("model.query_position_embeddings.weight", "query_embed.weight"),
    ("model.encoder.layers.{n}.self_attn.out_proj.{p}", "transformer.encoder.layers.{n}.self_attn.out_proj.{p}"),
    ("model.encoder.layers.{n}.self_attn_layer_norm.{p}", "transformer.encoder.layers.{n}.norm1.{p}"),
    ("model.encoder.layers.{n}.final_layer_norm.{p}", "transformer.encoder.layers.{n}.norm2.{p}"),
    ("model.encoder.layers.{n}.fc1.{p}", "transformer.encoder.layers.{n}.linear1.{p}"),
    ("model.encoder.layers.{n}.fc2.{p}", "transformer.encoder.layers.{n}.linear2.{p}"),
    ("model.decoder.layers.{n}.self_attn.out_proj.{p}", "transformer.decoder.layers.{n}.self_attn.out_proj.{p}"),
    ("model.decoder.layers.{n}.encoder_attn.out_proj.{p}",
     "transformer.decoder.layers.{n}.multihead_attn.out_proj.{p}"),
    ("model.decoder.layers.{n}.self_attn_layer_norm.{p}", "transformer.decoder.layers.{n}.norm1.{p}"),
    ("model.decoder.layers.{n}.encoder_attn_layer_norm.{p}", "transformer.decoder.layers.{n}.norm2.{p}"),
    ("model.decoder.layers.{n}.final_layer_norm.{p}", "transformer.decoder.layers.{n}.norm3.{p}"),
    ("model.decoder.layers.{n}.fc1.{p}", "transformer.decoder.layers.{n}.linear1.{p}"),
    ("model.decoder.layers.{n}.fc2.{p}", "transformer.decoder.layers.{n}.linear2.{p}"),
    ("model.decoder.layernorm.{p}", "transformer.decoder.norm.{p}"),
    ("class_labels_classifier.{p}", "class_embed.{p}"),
    ("bbox_predictor.layers.{n}.{p}", "bbox_embed.layers.{n}.{p}"),
)
#: other Hub names of the same tensors, read only: transformers before 5.0 kept the learned
#: position embedding under the backbone
ALIASES = (
    ("model.backbone.position_embedding.row_embeddings.weight", "backbone.1.row_embed.weight"),
    ("model.backbone.position_embedding.column_embeddings.weight", "backbone.1.col_embed.weight"),
)
#: the separate q / k / v projections of the Hub <-> the packed ``in_proj`` (q, k, v stacked)
QKV = (
    ("model.encoder.layers.{n}.self_attn.{x}_proj.{p}", "transformer.encoder.layers.{n}.self_attn.in_proj_{p}"),
    ("model.decoder.layers.{n}.self_attn.{x}_proj.{p}", "transformer.decoder.layers.{n}.self_attn.in_proj_{p}"),
    ("model.decoder.layers.{n}.encoder_attn.{x}_proj.{p}",
     "transformer.decoder.layers.{n}.multihead_attn.in_proj_{p}"),
)
QKV_ORDER = ("q", "k", "v")
#: frozen batch norm keeps no step count; transformers' folders may still hold one
DROPPED_SUFFIX = ".num_batches_tracked"

_FIELDS = {"n": r"\d+", "p": r"weight|bias", "rest": r".+", "x": r"[qkv]"}


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_FIELDS[part]})" for i, part in enumerate(parts))
    return re.compile(regex)


def _compiled(pairs, reverse: bool = False):
    return [(_pattern(b if reverse else a), a if reverse else b) for a, b in pairs]


@dataclass(frozen=True)
class KeyMap:
    """Hub names <-> this project's names of one architecture, compiled both ways."""

    #: the model's name in messages
    label: str
    read: list
    read_qkv: list
    write: list
    write_qkv: list

    @classmethod
    def of(cls, label: str, renames, aliases=(), qkv=()) -> "KeyMap":
        """From (Hub, project) templates: ``renames`` both ways, ``aliases`` read only, ``qkv`` the
        separate q / k / v projections of the Hub <-> a packed ``in_proj``."""
        return cls(label, _compiled(tuple(renames) + tuple(aliases)), _compiled(qkv),
                   _compiled(renames, reverse=True), _compiled(qkv, reverse=True))


#: DetrForObjectDetection's names
DETR_KEYS = KeyMap.of("DETR", RENAMES, ALIASES, QKV)
_FAMILY_KEYS: dict[str, KeyMap] = {}


def family_keys(arch: Architecture) -> KeyMap:
    """The compiled key map of an architecture of ``hub.huggingface_family``."""
    if arch.model_type not in _FAMILY_KEYS:
        _FAMILY_KEYS[arch.model_type] = KeyMap.of(arch.label, arch.renames, arch.aliases, arch.qkv)
    return _FAMILY_KEYS[arch.model_type]


def _rename(name: str, rules) -> tuple[str, dict] | None:
    for pattern, template in rules:
        m = pattern.fullmatch(name)
        if m:
            return template.format(**m.groupdict()), m.groupdict()
    return None


@dataclass
class HFModel:
    """A Hugging Face DETR folder in this project's terms."""

    #: the weights in this project's parameter names
    state: dict[str, torch.Tensor]
    #: ``key=value`` config overrides that rebuild the model (architecture, classes, loss weights)
    overrides: list[str]
    #: class names indexed by category id ("" where id2label has none); None when id2label holds
    #: only transformers' placeholders (``LABEL_0``, ...)
    class_names: list[str] | None
    #: the folder read
    source: str


def is_hf_folder(path: str | os.PathLike) -> bool:
    """True for a folder holding a ``config.json`` (read_hf_folder says what else is missing)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def read_hf_folder(path: str | os.PathLike) -> HFModel:
    """Read a Hugging Face ``DetrForObjectDetection`` folder (or a ``ConditionalDetrForObjectDetection``
    or ``DabDetrForObjectDetection`` one) into this project's names; every tensor must map and the
    mapped weights must fit the model the overrides describe (SourceError otherwise, naming the
    folder and what was expected)."""
    folder = Path(path).expanduser()
    config = read_hf_config(folder)
    arch = FAMILY.get(config.get("model_type"))
    keys = DETR_KEYS if arch is None else family_keys(arch)
    where = f"Hugging Face folder {folder}"
    weights_file = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights_file is None:
        raise SourceError(f"{where} has no weights: expected {' or '.join(WEIGHT_FILES)} beside {CONFIG_FILE}")
    backbone, timm = _backbone(config, where)
    state = hf_to_project(_read_weights(weights_file), timm_backbone=timm, source=str(weights_file), keys=keys)
    if arch is not None:
        state = arch.tie(state, config, source=str(weights_file))
    head = state.get("class_embed.weight")
    if head is None:
        head_name, expected = ("class_labels_classifier.weight", ARCHITECTURE) if arch is None else \
            (arch.class_head, arch.architecture)
        raise SourceError(f"{weights_file} has no class head ({head_name}): expected the weights of a {expected}")
    # DETR's head has a no-object row; the sigmoid heads of the family have one row per class
    num_classes = int(head.shape[0]) - (1 if arch is None else 0)
    if arch is None:
        overrides = _overrides(config, backbone, timm, num_classes, where)
    else:
        pairs = _backbone_pairs(config, backbone, timm) + arch.overrides(config, num_classes, where)
        overrides = [f"{key}={_value(value)}" for key, value in pairs]
    check_fits(state, overrides, source=str(weights_file), keys=keys)
    names = _class_names(config, num_classes, where, no_object=arch is None)
    return HFModel(state=state, overrides=overrides, class_names=names, source=str(folder))


def read_hf_config(folder: Path) -> dict:
    """``config.json`` of a detection folder of DETR, Conditional DETR or DAB-DETR (SourceError if
    unreadable or of another model)."""
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"Hugging Face folder {folder} has no {CONFIG_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path} cannot be read as JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise SourceError(f"{path} is not a JSON object: expected a transformers model config")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list):
        architectures = [architectures]
    named = f"model_type {model_type!r}" + (f", architectures {architectures}" if architectures else "")
    supported = {MODEL_TYPE: ARCHITECTURE, **{t: a.architecture for t, a in FAMILY.items()}}
    if model_type not in supported:
        listed = ", ".join(f"{t!r} ({a})" for t, a in supported.items())
        raise SourceError(f"{path} describes a {named} model, which this project does not read: expected "
                          f"model_type {listed}")
    expected = supported[model_type]
    if architectures and expected not in architectures:
        raise SourceError(f"{path} describes {', '.join(map(str, architectures))}: expected architectures "
                          f"['{expected}'] (the detection model alone)")
    return config


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.name == SAFETENSORS_FILE:
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # both readers raise many types for a damaged file; all mean the same here
        text = str(exc).strip()
        raise SourceError(f"{path} cannot be read: {text.splitlines()[0] if text else type(exc).__name__}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SourceError(f"{path} is not a state dict: expected tensors by name")
    return state


def _backbone(config: dict, where: str) -> tuple[str, bool]:
    """(this project's backbone name, whether the folder uses timm's names)."""
    from ..core.names import BACKBONES

    resnets = [name for name in BACKBONES if name.startswith("resnet")]
    sub = config.get("backbone_config") or {}
    if not isinstance(sub, dict):
        raise SourceError(f"{where}: {CONFIG_FILE} backbone_config is not an object")
    kind = sub.get("model_type")
    if kind == "timm_backbone" or (not sub and config.get("use_timm_backbone", True)):
        raw = str(sub.get("backbone") or config.get("backbone") or "resnet50")
        # a timm name may carry a hub prefix and a pretrained tag: the architecture is the same
        name = raw.removeprefix("timm/").split(".")[0]
        if name not in resnets:
            raise SourceError(f"{where}: timm backbone {raw!r} is not supported; expected one of {', '.join(resnets)}")
        if sub.get("num_channels", config.get("num_channels", 3)) != 3:
            raise SourceError(f"{where}: num_channels must be 3 (RGB images)")
        return name, True
    if kind == "resnet":
        hf = {**HF_RESNET_DEFAULTS, **sub}
        for key in ("downsample_in_first_stage", "downsample_in_bottleneck"):
            if hf[key]:
                raise SourceError(f"{where}: backbone_config {key}=true has no torchvision ResNet equivalent; "
                                  f"expected false")
        if hf["hidden_act"] != "relu" or hf["embedding_size"] != 64:
            raise SourceError(f"{where}: backbone_config hidden_act {hf['hidden_act']!r}, embedding_size "
                              f"{hf['embedding_size']}: expected relu and 64 (a standard ResNet)")
        arch = (hf["layer_type"], tuple(hf["depths"]), tuple(hf["hidden_sizes"]))
        if arch not in HF_RESNETS:
            raise SourceError(f"{where}: backbone_config (layer_type {arch[0]!r}, depths {list(arch[1])}, "
                              f"hidden_sizes {list(arch[2])}) is none of {', '.join(HF_RESNETS.values())}")
        return HF_RESNETS[arch], False
    if sub:
        raise SourceError(f"{where}: backbone_config model_type {kind!r} is not supported; expected a ResNet "
                          f"(timm_backbone or resnet)")
    raise SourceError(f"{where}: use_timm_backbone is false and {CONFIG_FILE} has no backbone_config; expected "
                      f"the ResNet's backbone_config")


def hf_resnet_to_torchvision(name: str) -> str | None:
    """A parameter name of transformers' ResNet in torchvision's names (None if it is not one)."""
    m = re.fullmatch(r"embedder\.embedder\.(convolution|normalization)\.(.+)", name)
    if m:
        return f"{'conv1' if m[1] == 'convolution' else 'bn1'}.{m[2]}"
    m = re.fullmatch(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(?:shortcut|layer\.(\d+))\.(convolution|normalization)"
                     r"\.(.+)", name)
    if not m:
        return None
    block = f"layer{int(m[1]) + 1}.{m[2]}"
    if m[3] is None:
        return f"{block}.downsample.{0 if m[4] == 'convolution' else 1}.{m[5]}"
    i = int(m[3]) + 1
    return f"{block}.{'conv' if m[4] == 'convolution' else 'bn'}{i}.{m[5]}"


def hf_to_project(hf_state: Mapping[str, torch.Tensor], timm_backbone: bool = True,
                  source: str = "state dict", keys: KeyMap = DETR_KEYS) -> dict[str, torch.Tensor]:
    """Hub key names -> this project's (q, k, v packed into ``in_proj``), by ``keys`` (DETR's
    unless given); a key that maps to nothing, or a projection without its two siblings, is a
    SourceError naming a few."""
    state, packs, left = {}, {}, []
    for key, tensor in hf_state.items():
        if key.endswith(DROPPED_SUFFIX):
            continue
        qkv = _rename(key, keys.read_qkv)
        if qkv:
            target, fields = qkv
            packs.setdefault(target, {})[fields["x"]] = (key, tensor)
            continue
        renamed = _rename(key, keys.read)
        if renamed and not timm_backbone and renamed[0].startswith("backbone.0.body."):
            body = hf_resnet_to_torchvision(renamed[0].removeprefix("backbone.0.body."))
            renamed = (f"backbone.0.body.{body}", {}) if body else None
        if renamed is None:
            left.append(key)
            continue
        state[renamed[0]] = tensor
    if left:
        raise SourceError(f"{source}: {len(left)} tensor(s) match no {keys.label} parameter, "
                          f"e.g. {', '.join(left[:3])}")
    for target, parts in packs.items():
        seen = next(iter(parts.values()))[0]
        absent = [re.sub(r"\.[qkv]_proj\.", f".{x}_proj.", seen) for x in QKV_ORDER if x not in parts]
        if absent:
            raise SourceError(f"{source}: missing {', '.join(absent)} (q, k and v are needed for {target})")
        state[target] = torch.cat([parts[x][1] for x in QKV_ORDER], dim=0)
    return state


def project_to_hf(state: Mapping[str, torch.Tensor], keys: KeyMap = DETR_KEYS) -> dict[str, torch.Tensor]:
    """This project's names -> the Hub's (timm backbone names; ``in_proj`` split into q, k, v), by
    ``keys`` (DETR's unless given)."""
    out = {}
    for key, tensor in state.items():
        if key.endswith(DROPPED_SUFFIX):
            continue
        packed = next(((p.fullmatch(key), t) for p, t in keys.write_qkv if p.fullmatch(key)), None)
        if packed:
            m, template = packed
            for x, part in zip(QKV_ORDER, tensor.chunk(len(QKV_ORDER), dim=0)):
                out[template.format(x=x, **m.groupdict())] = part.contiguous()
            continue
        renamed = _rename(key, keys.write)
        if renamed is None:
            raise HFExportError(f"parameter {key} has no Hugging Face {keys.label} equivalent")
        out[renamed[0]] = tensor.contiguous()
    return out


def hub_name(key: str, keys: KeyMap = DETR_KEYS) -> str:
    """The Hub's name of one of this project's parameters (``{q,k,v}`` for a packed projection)."""
    for pattern, template in keys.write_qkv:
        m = pattern.fullmatch(key)
        if m:
            return template.format(x="{q,k,v}", **m.groupdict())
    renamed = _rename(key, keys.write)
    return renamed[0] if renamed else key


#: DetrConfig's defaults, for fields a config.json leaves out
HF_DETR_DEFAULTS = {"d_model": 256, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
                    "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048,
                    "num_queries": 100, "dropout": 0.1, "auxiliary_loss": False, "position_embedding_type": "sine",
                    "dilation": False, "activation_function": "relu"}
#: DetrConfig's loss fields -> this project's; given only where config.json has them
HF_LOSS_FIELDS = {"class_cost": "set_cost_class", "bbox_cost": "set_cost_bbox", "giou_cost": "set_cost_giou",
                  "bbox_loss_coefficient": "bbox_loss_coef", "giou_loss_coefficient": "giou_loss_coef",
                  "eos_coefficient": "eos_coef"}


def _number(v: float) -> int | float:
    # transformers types its matching costs and loss coefficients int (all but eos_coefficient)
    return int(v) if float(v).is_integer() else v


def _value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _overrides(config: dict, backbone: str, timm: bool, num_classes: int, where: str) -> list[str]:
    hf = {**HF_DETR_DEFAULTS, **config}
    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if hf[enc] != hf[dec]:
            raise SourceError(f"{where}: {enc}={hf[enc]} and {dec}={hf[dec]} differ; this project's DETR has one "
                              f"value for both")
    if hf["activation_function"] != "relu":
        raise SourceError(f"{where}: activation_function {hf['activation_function']!r} is not supported; "
                          f"expected relu")
    if hf["position_embedding_type"] not in ("sine", "learned"):
        raise SourceError(f"{where}: position_embedding_type {hf['position_embedding_type']!r}: "
                          f"expected sine or learned")
    if hf["auxiliary_loss"]:
        log.warning("%s: auxiliary_loss is true; transformers' DETR then feeds each decoder layer's normalised "
                    "output to the next layer, the reference DETR (this project) does not, so detections can "
                    "differ from transformers' for these weights", where)
    pairs = [
        *_backbone_pairs(config, backbone, timm),
        ("model.position_embedding", hf["position_embedding_type"]), ("model.encoder_abs_pos", True),
        ("model.irpe", None), ("model.pre_norm", False),
        ("model.hidden_dim", hf["d_model"]), ("model.nheads", hf["encoder_attention_heads"]),
        ("model.enc_layers", hf["encoder_layers"]), ("model.dec_layers", hf["decoder_layers"]),
        ("model.dim_feedforward", hf["encoder_ffn_dim"]), ("model.num_queries", hf["num_queries"]),
        ("model.num_classes", num_classes), ("model.dropout", hf["dropout"]),
        ("model.aux_loss", bool(hf["auxiliary_loss"])),
    ]
    pairs += [(f"loss.{ours}", config[theirs]) for theirs, ours in HF_LOSS_FIELDS.items() if theirs in config]
    return [f"{key}={_value(value)}" for key, value in pairs]


def _backbone_pairs(config: dict, backbone: str, timm: bool) -> list[tuple[str, object]]:
    """The backbone's overrides (the same for every architecture of the family)."""
    sub = config.get("backbone_config") or {}
    # transformers dilates the last stage of a timm backbone only (output stride 16)
    dilation = timm and bool(config.get("dilation", False) or sub.get("output_stride") == 16)
    return [("model.backbone.name", backbone), ("model.backbone.dilation", dilation),
            ("model.backbone.weights", "checkpoint"), ("model.backbone.norm", "frozen_bn")]


def _class_names(config: dict, num_classes: int, where: str, no_object: bool = True) -> list[str] | None:
    id2label = config.get("id2label") or {}
    if not isinstance(id2label, dict):
        raise SourceError(f"{where}: {CONFIG_FILE} id2label is not an object of id -> name")
    if id2label and len(id2label) != num_classes:
        raise SourceError(f"{where}: id2label has {len(id2label)} labels but the class head has {num_classes} "
                          f"classes{' (plus no-object)' if no_object else ''}; expected one label per class")
    names = [""] * num_classes
    for key, name in id2label.items():
        try:
            i = int(key)
        except (TypeError, ValueError):
            raise SourceError(f"{where}: id2label key {key!r} is not a category id") from None
        if not 0 <= i < num_classes:
            raise SourceError(f"{where}: id2label id {i} is outside 0..{num_classes - 1}")
        names[i] = "" if name == GAP_LABEL else str(name)
    if not id2label or all(PLACEHOLDER_LABEL.fullmatch(str(n)) for n in id2label.values()):
        return None
    return names


def check_fits(state: Mapping[str, torch.Tensor], overrides: Sequence[str], source: str,
               keys: KeyMap = DETR_KEYS) -> None:
    """SourceError unless ``state`` has exactly the keys and shapes of the model ``overrides``
    describe (built on the meta device: no memory, no time); ``keys`` names the Hub's tensors."""
    from ..config import ConfigError, load_config
    from ..models import build_model

    try:
        cfg = load_config(None, list(overrides))
    except ConfigError as exc:
        raise SourceError(f"{source}: {CONFIG_FILE} describes a model this project cannot build: {exc}") from None
    try:
        with torch.device("meta"):
            own = build_model(cfg)[0].state_dict()
    except ValueError as exc:  # a size the model's constructor refuses
        raise SourceError(f"{source}: {CONFIG_FILE} describes a model this project cannot build: {exc}") from None
    missing = [hub_name(k, keys) for k in own if k not in state]
    extra = [hub_name(k, keys) for k in state if k not in own]
    shapes = [f"{hub_name(k, keys)} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
              for k in own if k in state and state[k].shape != own[k].shape]
    parts = [f"{label} {len(items)}, e.g. {', '.join(items[:3])}" for label, items in
             (("missing", missing), ("not in the model", extra), ("shapes differ for", shapes)) if items]
    if parts:
        raise SourceError(f"{source} does not fit the {keys.label} its {CONFIG_FILE} describes: {'; '.join(parts)}")


class HFExportError(UserError):
    """A model that transformers' DetrForObjectDetection cannot represent."""


def write_hf_folder(model: nn.Module | Mapping[str, torch.Tensor], cfg, class_names: Sequence[str] | None,
                    path: str | os.PathLike) -> Path:
    """Write ``model`` (or its state dict) with its Config as a Hugging Face
    ``DetrForObjectDetection`` folder (``config.json`` + ``model.safetensors``, timm backbone)
    that transformers loads; ``class_names`` indexed by category id ("" for none) fill id2label."""
    from safetensors.torch import save_file

    m = cfg.model
    unsupported = [(m.backbone.name.startswith("resnet"), f"backbone {m.backbone.name} (a ResNet is needed)"),
                   (m.backbone.norm in ("frozen_bn", "bn"), f"backbone norm {m.backbone.norm}"),
                   (m.irpe is None, f"iRPE {m.irpe}"), (not m.pre_norm, "pre_norm"),
                   (m.encoder_abs_pos, "encoder_abs_pos false"),
                   (m.position_embedding in ("sine", "learned"), f"position_embedding {m.position_embedding}")]
    refused = [what for ok, what in unsupported if not ok]
    if refused:
        raise HFExportError(f"transformers' DETR cannot represent {', '.join(refused)}; "
                            f"expected a ResNet DETR without iRPE")
    state = model.state_dict() if isinstance(model, nn.Module) else model
    num_classes = int(state["class_embed.weight"].shape[0]) - 1
    names = list(class_names) if class_names else [f"LABEL_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise HFExportError(f"{len(names)} class names for {num_classes} classes; expected one per class id")
    id2label = {str(i): name or GAP_LABEL for i, name in enumerate(names)}
    config = {
        "architectures": [ARCHITECTURE], "model_type": MODEL_TYPE,
        "backbone": m.backbone.name, "use_timm_backbone": True, "use_pretrained_backbone": False,
        "dilation": m.backbone.dilation, "num_channels": 3, "position_embedding_type": m.position_embedding,
        "d_model": m.hidden_dim, "encoder_layers": m.enc_layers, "decoder_layers": m.dec_layers,
        "encoder_attention_heads": m.nheads, "decoder_attention_heads": m.nheads,
        "encoder_ffn_dim": m.dim_feedforward, "decoder_ffn_dim": m.dim_feedforward, "num_queries": m.num_queries,
        "activation_function": "relu", "dropout": m.dropout, "attention_dropout": m.dropout,
        "activation_dropout": m.dropout,
        # true would change transformers' inference (see the module's docstring)
        "auxiliary_loss": False,
        "id2label": id2label, "label2id": {name: int(i) for i, name in id2label.items()},
        **{theirs: _number(getattr(cfg.loss, ours)) for theirs, ours in HF_LOSS_FIELDS.items()},
    }
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    hub = {k: v.detach().cpu().clone() for k, v in project_to_hf(state).items()}
    save_file(hub, str(folder / SAFETENSORS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder
