"""Checkpoints: safe loading (no pickled code is ever run), atomic saving, and the config stored in
a checkpoint of this project or of the reference code (DETR / iRPE-DETR); models are built from
any source by detr_irpe.hub.loader.

Loading uses ``torch.load(weights_only=True)``; the only class allowed beyond tensors and plain
Python data is ``argparse.Namespace``, which the reference code stores under ``args``.
"""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from ..core.io import atomic_write
from ..core.errors import UserError

#: the classes a checkpoint may contain beyond what weights_only loading allows by default
SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, strict: bool = True,
                    mmap: bool = False) -> dict:
    """Read a checkpoint (a dict with a ``model`` state dict) without executing pickled code;
    with ``model``, load its weights (``strict``: every key and shape must match). ``mmap``
    reads tensors only when they are used (cheap when only the progress entries are wanted)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = _load(path, mmap)
    except Exception as exc:  # torch.load raises many types for damaged files; all mean the same here
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError) and ("Unsupported global" in text or "GLOBAL" in text):
            raise CheckpointError(f"checkpoint {path} was refused: it holds objects outside the allow-list "
                                  f"(nothing was executed): {_unsupported_global(text) or first}") from None
        raise CheckpointError(f"checkpoint {path} is truncated or not a checkpoint: {first}") from None
    if isinstance(ckpt, dict) and "model" not in ckpt and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = {"model": ckpt}  # a bare state dict
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"checkpoint {path} is not a checkpoint: expected a dict with a 'model' state dict")
    if model is not None:
        load_state_dict(model, ckpt["model"], source=str(path), strict=strict)
    return ckpt


def _load(path: Path, mmap: bool):
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a file in torch's legacy format cannot be mapped
            pass
    return torch.load(path, map_location="cpu", weights_only=True)


def _unsupported_global(text: str) -> str:
    """The line of torch's refusal that names the blocked class or function."""
    for line in text.splitlines():
        if "Unsupported global" in line or "unsupported GLOBAL" in line:
            return line.strip()
    return ""


def load_state_dict(model: nn.Module, state: dict, source: str = "state dict", strict: bool = True) -> None:
    """``model.load_state_dict`` with an error that lists the first mismatching keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s) e.g. {', '.join(unexpected[:3])}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) e.g. {'; '.join(shapes[:3])}")
        raise CheckpointError(f"{source} does not match the model architecture: {'; '.join(parts)}")
    model.load_state_dict(state, strict=strict)


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """Write atomically (see utils.io.atomic_write): an interruption, or a full disk, leaves the
    previous file intact."""
    atomic_write(path, lambda f: torch.save(obj, f))


def config_of_checkpoint(ckpt: dict, base=None):
    """The Config a checkpoint was trained with: this project's ``config`` entry, or the
    reference's ``args``."""
    from ..config import config_from_dict, config_from_reference_args

    if isinstance(ckpt.get("config"), dict):
        return config_from_dict(ckpt["config"], "checkpoint config")
    if ckpt.get("args") is not None:
        return config_from_reference_args(ckpt["args"], base)
    raise CheckpointError("checkpoint carries neither a 'config' nor reference 'args' (weights only: the "
                          "loader reads the architecture from the weights)")
