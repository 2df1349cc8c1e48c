"""The reference code's model, built from a checkout of it outside this repository, for timing
beside this project's model in the same process.

``path`` is the DETR-with-iRPE folder of a checkout of the reference repository (the folder
holding its ``main.py``, ``models/`` and ``util/``; its ``easydict`` import must be installed).
Its modules are top-level packages (``models``, ``util``, ``datasets``), so they are imported
with that folder first on ``sys.path``, once per process. Its backbone would download ImageNet
weights; here it starts from random weights, as this project's benchmarks do. Its optional
``rpe_ops`` extension is used when it was built in the checkout, else its PyTorch fallback.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

import torch

from ..core.errors import UserError


class ReferenceCodeError(UserError):
    """A reference checkout that cannot be used; the message names the path and what is missing."""


def _reference_main(path: Path):
    """The reference's ``main`` module (its argument parser and imports)."""
    if not (path / "main.py").is_file() or not (path / "models" / "rpe_attention").is_dir():
        raise ReferenceCodeError(f"--reference {path}: expected the DETR-with-iRPE folder of the reference checkout "
                             f"(main.py and models/rpe_attention/ in it)")
    folder = str(path.resolve())
    loaded = sys.modules.get("main")
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve().parent != Path(folder):
        raise ReferenceCodeError(f"--reference {path}: another module named 'main' is already imported ({loaded.__file__})")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        return importlib.import_module("main")
    except ImportError as exc:
        raise ReferenceCodeError(f"--reference {path}: its code does not import here ({exc}); "
                             f"it needs easydict (pip install easydict) and pycocotools") from None


@contextlib.contextmanager
def _random_backbone_weights():
    """torchvision's ResNets without pretrained weights while the reference builds its backbone
    (it asks for ImageNet weights, which are downloaded)."""
    import torchvision

    originals = {}
    for name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        original = originals[name] = getattr(torchvision.models, name)

        def build(*args, _original=original, pretrained=False, **kwargs):
            kwargs.pop("weights", None)
            return _original(*args, weights=None, **kwargs)

        setattr(torchvision.models, name, build)
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torchvision.models, name, original)


def build_reference(path: str | Path, irpe: str, backbone: str, device: str):
    """(model, criterion, postprocessors) of the reference code for iRPE string ``irpe`` ('' for
    none), with its default DETR settings (6 + 6 layers, 100 queries, COCO's 91 classes)."""
    main = _reference_main(Path(path))
    args = main.get_args_parser().parse_args(["--backbone", backbone, "--enc_rpe2d", irpe, "--device", device])
    from models import build_model  # the reference's, first on sys.path

    with _random_backbone_weights():
        model, criterion, post = build_model(args)
    return model.to(device), criterion.to(device), post


def build_reference_encoder(path: str | Path, irpe: str, dim: int, heads: int, layers: int):
    """The reference code's transformer encoder (sequence-first inputs, dropout 0.1, a
    feed-forward width of 8 x ``dim``, as in DETR)."""
    main = _reference_main(Path(path))
    args = main.get_args_parser().parse_args(
        ["--enc_rpe2d", irpe, "--hidden_dim", str(dim), "--nheads", str(heads), "--enc_layers", str(layers),
         "--dim_feedforward", str(8 * dim), "--dropout", "0.1"])
    from models.transformer import build_transformer  # the reference's

    return build_transformer(args).encoder


def reference_batch(images: list[torch.Tensor]):
    """The reference's padded batch (its NestedTensor) of a list of images."""
    from util.misc import nested_tensor_from_tensor_list

    return nested_tensor_from_tensor_list(images)
