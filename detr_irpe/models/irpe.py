"""Image relative position encoding (iRPE): bucket functions and lookup tables (the typed spec is
detr_irpe.core.rpe_spec).

The encoding maps the 2-D offset between a query token and a key token of the encoder feature map
to a bucket, and each bucket owns a learned scalar (bias mode) or vector (contextual mode).
Parameter names follow the released iRPE-DETR checkpoints: ``rpe_{q,k,v}.lookup_table_weight`` /
``lookup_table_bias``, and ``rp_rows`` / ``rp_cols`` children for the cross method.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn

from ..core.rpe_spec import RPESpec


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
