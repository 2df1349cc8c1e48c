"""Shared by the DETR-family exactness fixtures (tests/fixture_makers/*.py) and their tests: the
rule that gives every tensor of a state dict its value from its name alone, so that the reference
model and the project's model hold the same weights without either seeing the other."""

from __future__ import annotations

import math
import zlib

import torch


def named_tensor(name: str, shape) -> torch.Tensor:
    """The float32 value of the state-dict entry ``name`` of ``shape``, from a generator seeded
    with the CRC-32 of the name.

    - ``running_var``: uniform in [0.5, 1.5) (a frozen batch norm divides by its root);
    - query embeddings (``query_embed``, ``refpoint_embed``, ``patterns``): N(0, 1), as their
      initialisation, so that the queries, and their reference points, differ clearly;
    - matrices and kernels (2-D and up): N(0, 1) / sqrt(fan-in), fan-in = numel / shape[0], so a
      50-layer random ResNet neither vanishes nor explodes;
    - other 1-D ``weight`` (LayerNorm and batch-norm scales): 1 + 0.05 N(0, 1);
    - everything else (biases, running means): 0.05 N(0, 1).
    """
    shape = tuple(int(s) for s in shape)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if name.endswith("running_var"):
        return torch.rand(shape, generator=g) + 0.5
    x = torch.randn(shape, generator=g)
    if name.split(".")[-2:-1] in (["query_embed"], ["refpoint_embed"], ["patterns"]):
        return x
    if len(shape) >= 2:
        return x / math.sqrt(math.prod(shape[1:]))
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


def gradient_summary(named_parameters) -> dict[str, torch.Tensor]:
    """Per parameter with a gradient: float64 (sum, L2 norm, first 8 flattened values, zero-padded)
    and the number of values kept, packed as a 11-vector [sum, norm, n, v0..v7]."""
    out = {}
    for name, p in named_parameters:
        if p.grad is None:
            continue
        g = p.grad.detach().double().flatten()
        first = torch.zeros(8, dtype=torch.float64)
        n = min(8, g.numel())
        first[:n] = g[:n]
        out[name] = torch.cat([torch.stack([g.sum(), g.norm(), torch.tensor(float(n), dtype=torch.float64)]), first])
    return out
