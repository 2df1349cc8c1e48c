"""The names commands give what they write: a model's label (from its source) and a file name
made of it. Standard library only (imported by the parsers of ``--help``)."""

from __future__ import annotations

from pathlib import Path


def default_label(source) -> str:
    """A model's name from its source: the file's stem (a checkpoint file or URL), the run
    folder's name for a run's ``checkpoint*.pth``, the zoo name, or the folder's name (a Hugging
    Face folder)."""
    path = Path(str(source).rstrip("/"))
    return path.parent.name if path.stem.startswith("checkpoint") and path.parent.name else path.stem


def file_stem(label: str) -> str:
    """``label`` as a file name (no folder separators, no ``:``)."""
    return str(label).replace("/", "_").replace("\\", "_").replace(":", "_") or "model"


def model_file_name(source, suffix: str) -> str:
    """The file name of what a command writes for one model source: ``<label><suffix>``,
    e.g. ``tiny_irpe.onnx`` for ``outputs/tiny_irpe/checkpoint_best.pth``."""
    return file_stem(default_label(source)) + suffix
