"""Paired ratios and their noise verdict (g2u.bench.stats): a real effect is called beyond the noise of
the same rounds' A/A control, an effect no larger than the control's spread inside it."""

from __future__ import annotations

import numpy as np

from g2u.bench.stats import interval, paired_difference, ratio_row


def _rounds(n: int, seed: int, spread: float) -> np.ndarray:
    """Per-round load factors of a busy machine (each round's every run slowed alike)."""
    return np.random.default_rng(seed).uniform(1.0, spread, n)


def test_a_real_speedup_is_beyond_the_noise_even_when_rounds_differ_5x():
    load = _rounds(8, 0, 5.0)
    jitter = np.random.default_rng(1).normal(1.0, 0.03, (3, 8))
    stock, fast, control = 100 * load * jitter[0], 50 * load * jitter[1], 100 * load * jitter[2]
    row = ratio_row(stock, fast, control=stock / control)
    assert 1.8 < row["ratio"] < 2.2 and row["low"] <= row["ratio"] <= row["high"]
    assert row["inside_noise"] is False
    # the separately taken medians would mix loads: their ratio is not what the paired one says
    assert row["aa_low"] <= 1.0 <= row["aa_high"]


def test_an_effect_within_the_control_spread_is_inside_the_noise():
    load = _rounds(8, 2, 5.0)
    jitter = np.random.default_rng(3).normal(1.0, 0.15, (3, 8))
    stock, fast, control = 100 * load * jitter[0], 97 * load * jitter[1], 100 * load * jitter[2]
    assert ratio_row(stock, fast, control=stock / control)["inside_noise"] is True


def test_paired_difference_recovers_a_fixed_overhead_under_drifting_load():
    load = np.linspace(100, 600, 30)  # the machine slowing down across the reps
    local = load
    rest = load + 12 + np.random.default_rng(0).normal(0, 1, 30)
    d = paired_difference(local, rest)
    assert d["pairs"] == 30 and d["low"] <= d["median_paired_diff"] <= d["high"]
    assert 10 < d["median_paired_diff"] < 14
    assert interval([5.0]) == (5.0, 5.0)
