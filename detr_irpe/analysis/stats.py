"""Paired statistics of an ablation: a variant against the baseline over seed-matched runs.

Runs with the same seed share the data order and, where the architectures allow, the initial
weights, so the per-seed difference removes most of the seed-to-seed spread that two independent
means would keep. The mean difference gets a Student t confidence interval; a verdict says
whether the interval excludes zero; and the spread of the differences estimates how many seeds
an interval of a given half-width needs.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
#: the largest seed count :func:`seeds_needed` searches (beyond it the answer is "more than this")
MAX_SEEDS = 10_000


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval (``low``, ``high``; NaN when undefined)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class PairedDifference:
    """``variant - baseline`` of one metric over the seeds both have."""

    metric: str
    variant: str
    baseline: str
    seeds: tuple
    differences: tuple[float, ...]
    interval: Interval
    verdict: str


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` and its Student t confidence interval (NaN bounds for fewer than 2
    values, where no spread can be estimated)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sem = statistics.stdev(values) / math.sqrt(n)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    return Interval(mean, mean - half, mean + half, n)


def verdict(interval: Interval) -> str:
    """``better`` when the whole interval is above zero, ``worse`` when below, otherwise no
    difference detected at this number of seeds."""
    if interval.low > 0:
        return "better"
    if interval.high < 0:
        return "worse"
    n = interval.n
    return f"no difference detected at {n} seed{'s' if n != 1 else ''}"


def defined(value) -> bool:
    """Whether a COCO metric value is defined (COCO writes -1 where no object of a size exists)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value >= 0


def paired_difference(variant: str, baseline: str, metric: str, variant_values: dict, baseline_values: dict,
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """The difference ``variant - baseline`` of ``metric`` over the seeds present (and defined) in
    both mappings ``seed -> value``."""
    seeds = tuple(s for s in variant_values if s in baseline_values
                  and defined(variant_values[s]) and defined(baseline_values[s]))
    diffs = tuple(float(variant_values[s]) - float(baseline_values[s]) for s in seeds)
    interval = t_interval(diffs, confidence)
    return PairedDifference(metric, variant, baseline, seeds, diffs, interval, verdict(interval))


def seeds_needed(differences, half_width: float, confidence: float = CONFIDENCE) -> int | None:
    """The smallest seed count whose t interval would have at most ``half_width`` either side,
    taking the standard deviation of ``differences`` as the spread (None for fewer than 2
    differences; MAX_SEEDS + 1 when even MAX_SEEDS would not do)."""
    if len(differences) < 2:
        return None
    sd = statistics.stdev(float(d) for d in differences)
    if sd == 0:
        return 2
    n = np.arange(2, MAX_SEEDS + 1)
    fits = np.nonzero(scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1) * sd / np.sqrt(n) <= half_width)[0]
    return int(n[fits[0]]) if fits.size else MAX_SEEDS + 1
