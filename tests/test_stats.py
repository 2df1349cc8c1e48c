"""Paired statistics: t intervals equal scipy's, verdicts follow the interval's sign, pairs are
matched by seed, and the seed estimate is the smallest count that reaches the half-width."""

import math

import numpy as np
import pytest
from scipy import stats

from detr_irpe.analysis.stats import Interval, paired_difference, seeds_needed, t_interval, verdict


def test_t_interval_equals_scipys():
    values = np.random.default_rng(0).normal(0.02, 0.03, size=6)
    iv = t_interval(values)
    low, high = stats.t.interval(0.95, df=5, loc=values.mean(), scale=stats.sem(values))
    assert iv.n == 6 and iv.mean == pytest.approx(values.mean())
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))
    assert iv.half_width == pytest.approx((high - low) / 2)


def test_one_value_has_no_interval():
    iv = t_interval([0.3])
    assert iv.mean == 0.3 and math.isnan(iv.low) and math.isnan(iv.high)


def test_verdict_follows_the_sign_of_the_interval():
    assert verdict(Interval(0.02, 0.001, 0.04, 5)) == "better"
    assert verdict(Interval(-0.02, -0.04, -0.001, 5)) == "worse"
    assert verdict(Interval(0.01, -0.01, 0.03, 5)) == "no difference detected at 5 seeds"
    assert verdict(t_interval([0.05])) == "no difference detected at 1 seed"


def test_pairs_are_matched_by_seed_and_undefined_values_dropped():
    variant = {0: 0.30, 1: 0.25, 2: 0.40, 3: -1.0}
    baseline = {1: 0.20, 0: 0.28, 3: 0.1, 4: 0.5}
    d = paired_difference("v", "b", "AP", variant, baseline)
    assert d.seeds == (0, 1)
    assert d.differences == (pytest.approx(0.02), pytest.approx(0.05))
    assert d.interval.mean == pytest.approx(0.035)
    assert d.verdict == verdict(d.interval)


def test_consistent_gain_is_better_and_noisy_one_is_not():
    rng = np.random.default_rng(1)
    base = {s: v for s, v in enumerate(rng.normal(0.3, 0.05, size=8))}
    better = {s: v + 0.03 + rng.normal(0, 0.002) for s, v in base.items()}
    noisy = {s: v + rng.normal(0, 0.05) for s, v in base.items()}
    assert paired_difference("v", "b", "AP", better, base).verdict == "better"
    assert paired_difference("v", "b", "AP", noisy, base).verdict.startswith("no difference detected")


def test_seeds_needed_is_the_smallest_count_that_reaches_the_half_width():
    diffs = [0.01, -0.02, 0.03, 0.0]
    sd = np.std(diffs, ddof=1)
    n = seeds_needed(diffs, half_width=0.01)
    half = lambda k: stats.t.ppf(0.975, df=k - 1) * sd / math.sqrt(k)
    assert half(n) <= 0.01 < half(n - 1)
    assert seeds_needed(diffs, half_width=0.005) > n
    assert seeds_needed([0.01], half_width=0.01) is None
