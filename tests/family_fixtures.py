"""Shared by the DETR-family exactness fixtures (tests/fixture_makers/*.py) and their tests: the
rule that gives every tensor of a state dict its value from its name alone, so that the reference
model and the project's model hold the same weights without either seeing the other; and the
per-parameter gradient summary both sides record.

The base draw of every tensor is ``torch.randn(shape, generator=g)`` with
``g = torch.Generator().manual_seed(zlib.crc32(name.encode()))``, then scaled by kind, so that a
50-layer random ResNet neither vanishes nor explodes and its output depends on the image (with a
bare ``randn * 0.05`` it does not, to 1e-7, and a fixture could not see the backbone, the padding
or the images):

- ``running_var``: uniform in [0.5, 1.5) (a frozen batch norm divides by its root);
- query embeddings (``query_embed``, ``refpoint_embed``, ``patterns``): N(0, 1), as their
  initialisation, so that the queries and their reference points or anchors differ clearly;
- matrices and kernels (2-D and up): N(0, 1) / sqrt(fan-in), fan-in = numel / shape[0];
- PReLU slopes (``.activation.weight``): 0.25 + 0.05 N(0, 1) (about the reference's init);
- other 1-D ``weight`` (LayerNorm and batch-norm scales): 1 + 0.05 N(0, 1);
- everything else (biases, running means): 0.05 N(0, 1).

DAB-DETR's box head is one module under two names (``bbox_embed`` and
``transformer.decoder.bbox_embed``); both names take the value of ``bbox_embed.*``, so the order in
which a state dict is loaded cannot matter.
"""

from __future__ import annotations

import math
import zlib

import torch

#: state-dict prefixes that name the same tensors as another prefix: alias -> canonical name
TIED_PREFIXES = {"transformer.decoder.bbox_embed.": "bbox_embed."}
#: the embeddings drawn unscaled
QUERY_EMBEDDINGS = ("query_embed", "refpoint_embed", "patterns")


def canonical_name(name: str) -> str:
    """``name`` with a tied alias prefix replaced by its canonical one."""
    for alias, canonical in TIED_PREFIXES.items():
        if name.startswith(alias):
            return canonical + name[len(alias):]
    return name


def named_tensor(name: str, shape) -> torch.Tensor:
    """The float32 value (whatever the default dtype) of the state-dict entry ``name`` of
    ``shape`` (see the module docstring)."""
    name = canonical_name(name)
    shape = tuple(int(s) for s in shape)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if name.endswith("running_var"):
        return torch.rand(shape, generator=g, dtype=torch.float32) + 0.5
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    if name.split(".")[-2] in QUERY_EMBEDDINGS:
        return x
    if len(shape) >= 2:
        return x / math.sqrt(math.prod(shape[1:]))
    if name.endswith(".activation.weight"):
        return 0.25 + 0.05 * x
    if name.endswith("weight"):
        return 1.0 + 0.05 * x
    return 0.05 * x


def named_state_dict(shapes: dict) -> dict[str, torch.Tensor]:
    """A state dict holding ``named_tensor`` for every ``name: shape`` of ``shapes``."""
    return {name: named_tensor(name, shape) for name, shape in shapes.items()}


def fill_by_name(module: torch.nn.Module) -> torch.nn.Module:
    """Load ``named_tensor`` values into every floating-point entry of ``module.state_dict()``
    (strict: the names are the module's own); integer buffers keep their values."""
    state = module.state_dict()
    new = {k: (named_tensor(k, v.shape) if v.is_floating_point() else v) for k, v in state.items()}
    module.load_state_dict(new, strict=True)
    return module


def gradient_summary(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Per parameter with a gradient, under its canonical name (a tied parameter once): float64
    [sum, L2 norm, n, v0 .. v7], the first n <= 8 flattened values, zero-padded."""
    out = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        name = canonical_name(name)
        if p.grad is None or name in out:
            continue
        g = p.grad.detach().double().flatten()
        n = min(8, g.numel())
        first = torch.zeros(8, dtype=torch.float64)
        first[:n] = g[:n]
        out[name] = torch.cat([torch.stack([g.sum(), g.norm(), torch.tensor(float(n), dtype=torch.float64)]), first])
    return out
