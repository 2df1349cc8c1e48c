"""The memory a model needs, estimated from its config before anything is allocated, and the
check that refuses a model that cannot fit on this machine (rather than an allocator crash).

The estimate is a lower bound: the float32 parameters and buffers, and the values one forward
pass of one image holds at once in the decoder (its queries, their feed-forward hidden layer and
the class logits). Gradients, optimizer state, the encoder's tokens and attention maps come on
top, so a model refused here could never run; one accepted may still need more.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.names import SIGMOID_DECODERS
from ..core.runtime import resolve_device

BYTES_PER_VALUE = 4  # float32
#: the fields a user sizes; the refusal names the one whose value costs the most
SIZE_FIELDS = ("num_queries", "num_classes", "hidden_dim", "dim_feedforward", "enc_layers", "dec_layers")
#: memory limits of the container, when it has one (cgroup v2, then v1)
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


@dataclass(frozen=True)
class MemoryEstimate:
    """Values (float32) a model of a config holds: ``parameters`` (and buffers) and the
    ``activations`` one forward pass of one image holds at once at least."""

    parameters: int
    activations: int

    @property
    def weight_bytes(self) -> int:
        return BYTES_PER_VALUE * self.parameters

    @property
    def activation_bytes(self) -> int:
        return BYTES_PER_VALUE * self.activations

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes


def estimate_memory(mcfg) -> MemoryEstimate:
    """The lower-bound memory estimate of the model a ModelConfig describes (iRPE tables, a few
    thousand values, and the sigmoid decoders' extra projections left out: a lower bound)."""
    d, ff, queries = mcfg.hidden_dim, mcfg.dim_feedforward, mcfg.num_queries
    outputs = mcfg.num_classes + (0 if mcfg.decoder in SIGMOID_DECODERS else 1)  # DETR's no-object logit
    attention = 4 * d * d + 4 * d          # in_proj (3 d x d + 3 d) and out_proj (d x d + d)
    feed_forward = 2 * d * ff + ff + d
    norm = 2 * d
    encoder = mcfg.enc_layers * (attention + feed_forward + 2 * norm) + (norm if mcfg.pre_norm else 0)
    decoder = mcfg.dec_layers * (2 * attention + feed_forward + 3 * norm) + norm
    b = mcfg.backbone
    backbone, channels = _backbone_size(b.name, b.width, b.dilation)
    heads = (d * outputs + outputs                 # class_embed
             + 2 * (d * d + d) + 4 * d + 4         # bbox_embed, a 3-layer MLP
             + queries * d                         # query_embed
             + channels * d + d)                   # input_proj
    parameters = backbone + _position_size(mcfg.position_embedding, d) + encoder + decoder + heads
    return MemoryEstimate(parameters=parameters, activations=queries * (d + ff + outputs))


def memory_limits(device: str = "cpu") -> list[tuple[str, int]]:
    """``(what, bytes)`` the model must fit in: this machine's memory (the model is built there)
    and, for a CUDA ``device`` (or ``auto`` with CUDA present), that GPU's memory."""
    limits = [("the memory of this machine", machine_memory())]
    if device == "auto":
        device = str(resolve_device("auto"))
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        if index < torch.cuda.device_count():
            limits.append((f"the memory of cuda:{index}", torch.cuda.get_device_properties(index).total_memory))
    return limits


def machine_memory() -> int:
    """Physical memory in bytes, or the container's limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_LIMITS:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def check_model_fits(cfg) -> MemoryEstimate:
    """Raise ConfigError, naming the estimate, the limit and the field that costs the most, when
    the model of ``cfg`` (a Config, or its model section) cannot fit; returns the estimate."""
    from ..config import ConfigError, ModelConfig

    mcfg = getattr(cfg, "model", cfg)
    train = getattr(cfg, "train", None)
    estimate = estimate_memory(mcfg)
    for what, limit in memory_limits(train.device if train is not None else "cpu"):
        if estimate.total_bytes <= limit:
            continue
        default = ModelConfig()
        saved = {f: estimate.total_bytes - estimate_memory(dataclasses.replace(mcfg, **{f: getattr(default, f)})).total_bytes
                 for f in SIZE_FIELDS if getattr(mcfg, f) != getattr(default, f)}
        largest = max(saved, key=saved.get) if saved else None
        lead = f"model.{largest}={getattr(mcfg, largest)}" if largest else "the model"
        raise ConfigError(
            f"{lead} cannot fit: the model needs at least {format_bytes(estimate.total_bytes)} "
            f"({format_bytes(estimate.weight_bytes)} for {estimate.parameters:,} parameters and buffers, "
            f"{format_bytes(estimate.activation_bytes)} of activations in one forward pass of one image), more than "
            f"the {format_bytes(limit)} of {what}" + (f"; lower model.{largest}" if largest else ""))
    return estimate


def format_bytes(n: int) -> str:
    """``n`` bytes in binary units, e.g. ``23.4 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=None)
def _backbone_size(name: str, width: int, dilation: bool) -> tuple[int, int]:
    """(parameters and buffers, output channels) of a backbone, built on the meta device (no
    memory); batch norm stands in for every norm (the same count, give or take one per layer)."""
    from .backbone import Backbone

    with torch.device("meta"):
        net = Backbone(name, weights="none", norm="bn", trainable_layers=(), dilation=dilation, width=width)
    return sum(t.numel() for t in (*net.parameters(), *net.buffers())), net.num_channels


def _position_size(kind: str, hidden_dim: int) -> int:
    from .position_encoding import build_position_encoding

    with torch.device("meta"):
        return sum(p.numel() for p in build_position_encoding(kind, hidden_dim).parameters())
