"""The typed iRPE specification: the reference's string ``rpe-{ratio}-{method}-{mode}-{shared}-{on}``
parsed once at the edge (config, command line) into a value that every layer passes around."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import UserError

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
