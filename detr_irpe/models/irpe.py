"""Image relative position encoding (iRPE): the typed spec, bucket functions and lookup tables.

The encoding maps the 2-D offset between a query token and a key token of the encoder feature map
to a bucket, and each bucket owns a learned scalar (bias mode) or vector (contextual mode).
Parameter names follow the released iRPE-DETR checkpoints: ``rpe_{q,k,v}.lookup_table_weight`` /
``lookup_table_bias``, and ``rp_rows`` / ``rp_cols`` children for the cross method.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from ..errors import UserError

METHODS = ("euc", "quant", "cross", "product")
MODES = ("bias", "ctx")
SIDES = "qkv"

GRAMMAR = (
    "expected 'rpe-{ratio}-{method}-{mode}-{shared_head}-{rpe_on}' with ratio > 0, "
    "method one of euc|quant|cross|product, mode one of bias|ctx, shared_head 0|1, "
    "rpe_on a non-empty subset of q,k,v (bias mode is not defined on v), e.g. 'rpe-2.0-product-ctx-1-k'"
)


class RPESpecError(UserError, ValueError):
    """An iRPE specification that does not follow the grammar."""


@dataclass(frozen=True)
class RPESpec:
    """A typed iRPE configuration, equivalent to the reference string ``rpe-2.0-product-ctx-1-k``."""

    ratio: float = 2.0
    method: str = "product"
    mode: str = "ctx"
    shared_head: bool = True
    rpe_on: str = "k"

    def __post_init__(self):
        mode = {"contextual": "ctx"}.get(self.mode, self.mode)
        object.__setattr__(self, "mode", mode)
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)):
            raise RPESpecError(f"iRPE ratio {self.ratio!r} is not a number; {GRAMMAR}")
        object.__setattr__(self, "ratio", float(self.ratio))
        if not math.isfinite(self.ratio) or self.ratio <= 0:
            raise RPESpecError(f"iRPE ratio {self.ratio!r} must be > 0; {GRAMMAR}")
        if self.method not in METHODS:
            raise RPESpecError(f"unknown iRPE method {self.method!r}; {GRAMMAR}")
        if self.mode not in MODES:
            raise RPESpecError(f"unknown iRPE mode {self.mode!r}; {GRAMMAR}")
        if not isinstance(self.shared_head, bool):
            if self.shared_head in (0, 1):
                object.__setattr__(self, "shared_head", bool(self.shared_head))
            else:
                raise RPESpecError(f"iRPE shared_head {self.shared_head!r} must be 0 or 1; {GRAMMAR}")
        on = str(self.rpe_on)
        if not on or any(c not in SIDES for c in on) or len(set(on)) != len(on):
            raise RPESpecError(f"iRPE rpe_on {self.rpe_on!r} must be a non-empty subset of q, k, v; {GRAMMAR}")
        object.__setattr__(self, "rpe_on", "".join(c for c in SIDES if c in on))
        if self.mode == "bias" and "v" in self.rpe_on:
            raise RPESpecError(f"iRPE bias mode cannot be applied to values (rpe_on={self.rpe_on!r}); {GRAMMAR}")

    @classmethod
    def parse(cls, text: str) -> "RPESpec | None":
        """Parse a reference string such as ``rpe-2.0-product-ctx-1-k``; ``""`` means no iRPE."""
        text = text.strip()
        if text == "":
            return None
        parts = text.split("-")
        if len(parts) != 6 or parts[0] != "rpe":
            raise RPESpecError(f"invalid iRPE string {text!r}; {GRAMMAR}")
        _, ratio, method, mode, shared, on = parts
        if not re.fullmatch(r"\d+(\.\d*)?|\.\d+", ratio):
            raise RPESpecError(f"invalid iRPE ratio {ratio!r} in {text!r}; {GRAMMAR}")
        if shared not in ("0", "1"):
            raise RPESpecError(f"invalid iRPE shared_head {shared!r} in {text!r}; {GRAMMAR}")
        if mode == "contextual":
            mode = "ctx"
        return cls(ratio=float(ratio), method=method, mode=mode, shared_head=shared == "1", rpe_on=on)

    def __str__(self) -> str:
        return f"rpe-{float(self.ratio)!r}-{self.method}-{self.mode}-{int(self.shared_head)}-{self.rpe_on}"

    @property
    def alpha(self) -> float:
        return 1.0 * self.ratio

    @property
    def beta(self) -> float:
        return 2.0 * self.ratio

    @property
    def gamma(self) -> float:
        return 8.0 * self.ratio

    @property
    def half_width(self) -> int:
        """B = floor(beta): the largest bucket offset on one axis."""
        return int(self.beta)

    @property
    def num_buckets(self) -> int:
        """Entries of one lookup table (for cross: of each of the rows / cols tables)."""
        side = 2 * self.half_width + 1
        return side * side if self.method == "product" else side

    @property
    def num_index_buckets(self) -> int:
        """Size of the bucket space the attention indexes (cross: rows x cols product space)."""
        side = 2 * self.half_width + 1
        return side * side if self.method in ("product", "cross") else side


def piecewise_index(x: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """Map relative positions to signed bucket offsets: exact near zero, logarithmic beyond alpha."""
    x = x.float()
    ax = x.abs()
    far = alpha + torch.log(ax.clamp_min(alpha) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    far = torch.sign(x) * far.round().clamp(max=beta)
    # truncation toward zero, as the reference's cast to an integer dtype
    return torch.where(ax <= alpha, x.round(), far).long()


def _offsets(height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    # query minus key: entry [i, j] is the offset of token i relative to token j
    return rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]


def bucket_ids(spec: RPESpec, height: int, width: int, device=None) -> dict[str, torch.Tensor]:
    """Bucket tables (L x L, long) for a height x width map, keyed by ``index`` (the one the
    attention uses) and, for the cross method, ``rows`` / ``cols`` (its two halves)."""
    dr, dc = _offsets(height, width, device)
    a, b, g, B = spec.alpha, spec.beta, spec.gamma, spec.half_width
    if spec.method in ("product", "cross"):
        r = piecewise_index(dr, a, b, g) + B
        c = piecewise_index(dc, a, b, g) + B
        out = {"index": r * (2 * B + 1) + c}
        if spec.method == "cross":
            out.update(rows=r, cols=c)
        return out
    if spec.method == "euc":
        d = (dr.square() + dc.square()).float().sqrt().round()
    else:  # quant
        d = (dr.square() + dc.square()).float()
    return {"index": piecewise_index(d, a, b, g) + B}


@lru_cache(maxsize=64)
def cached_index(spec: RPESpec, height: int, width: int, device: torch.device) -> torch.Tensor:
    """The attention's bucket index for a map shape, computed once per (spec, shape, device)."""
    return bucket_ids(spec, height, width, device)["index"].contiguous()


class _Table(nn.Module):
    """One lookup table: a vector per bucket (contextual) or a scalar per bucket (bias)."""

    def __init__(self, mode: str, side: str, heads: int, head_dim: int, buckets: int):
        super().__init__()
        if mode == "bias":
            self.lookup_table_bias = nn.Parameter(torch.zeros(heads, buckets))
        elif side == "v":
            self.lookup_table_weight = nn.Parameter(torch.zeros(heads, buckets, head_dim))
        else:
            self.lookup_table_weight = nn.Parameter(torch.zeros(heads, head_dim, buckets))

    def table(self) -> torch.Tensor:
        return self.lookup_table_bias if hasattr(self, "lookup_table_bias") else self.lookup_table_weight


class RelativePositionEncoding(_Table):
    """The iRPE of one side (q, k or v) of a multi-head attention.

    ``effective_table()`` returns the table over the attention's bucket space: for the cross
    method, the sum of the rows and cols tables over their product space, which lets every method
    share one attention kernel.
    """

    def __init__(self, spec: RPESpec, side: str, num_heads: int, head_dim: int):
        nn.Module.__init__(self)
        self.spec, self.side = spec, side
        heads = 1 if spec.shared_head else num_heads
        if spec.method == "cross":
            self.rp_rows = _Table(spec.mode, side, heads, head_dim, spec.num_buckets)
            self.rp_cols = _Table(spec.mode, side, heads, head_dim, spec.num_buckets)
        else:
            _Table.__init__(self, spec.mode, side, heads, head_dim, spec.num_buckets)

    def effective_table(self) -> torch.Tensor:
        """(H', K) for bias, (H', head_dim, K) for contextual q/k, (H', K, head_dim) for v."""
        if self.spec.method != "cross":
            return self.table()
        rows, cols = self.rp_rows.table(), self.rp_cols.table()
        if self.side == "v" and self.spec.mode == "ctx":  # (H', K, head_dim) tables
            return (rows.unsqueeze(-2) + cols.unsqueeze(-3)).flatten(-3, -2)
        return (rows.unsqueeze(-1) + cols.unsqueeze(-2)).flatten(-2)

    def extra_repr(self) -> str:
        return f"{self.spec}, side={self.side}"
