"""Numbers that survive a busy machine: paired per-round ratios with a bootstrap interval, an A/A control
measured in the same rounds, and a verdict on whether a ratio is inside the noise.

On a shared 2-core machine one round can take 5× another (other tenants' bursts), so stage medians taken
separately over stock and fast rounds mix different loads. A ratio taken *within* a round (stock and fast
back to back) cancels most of it; its spread over rounds, and that of an identical-setting ratio (stock
against stock, the A/A control), say how much is left. Intervals are scipy's bootstrap (BCa where it can,
percentile otherwise) of the median over rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95


def interval(values: Sequence[float], stat: Callable[[np.ndarray], float] = np.median,
             confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of ``stat`` over ``values`` (one per round or pair); one value: (v, v)."""
    data = np.asarray(values, dtype=float)
    if len(data) < 2 or np.all(data == data[0]):
        v = float(stat(data)) if len(data) else float("nan")
        return v, v
    from scipy.stats import bootstrap

    def statistic(x, axis=-1):
        return np.apply_along_axis(stat, axis, x)

    for method in ("BCa", "percentile"):
        try:
            res = bootstrap((data,), statistic, confidence_level=confidence, n_resamples=2000, method=method,
                            random_state=np.random.default_rng(seed))
        except Exception:  # noqa: BLE001 - BCa fails on degenerate resamples; the percentile method does not
            continue
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            return lo, hi
    v = float(stat(data))
    return v, v


def ratio_row(num: Sequence[float], den: Sequence[float], control: Sequence[float] | None = None,
              ) -> dict[str, Any]:
    """Per-round ratios num/den: their median and interval; with ``control`` (the same rounds' A/A
    ratios), the control's too and ``inside_noise``: the ratio's interval overlaps the control's (widened
    to include 1), i.e. an identical setting could have produced it."""
    ratios = [n / d for n, d in zip(num, den) if d]
    row: dict[str, Any] = {"ratio": statistics.median(ratios) if ratios else None, "rounds": len(ratios)}
    if ratios:
        row["low"], row["high"] = interval(ratios)
    if control is not None and ratios:
        aa = [c for c in control if c == c]
        a_lo, a_hi = interval(aa) if aa else (1.0, 1.0)
        a_lo, a_hi = min(a_lo, 1.0), max(a_hi, 1.0)
        row["aa_ratio"] = statistics.median(aa) if aa else None
        row["aa_low"], row["aa_high"] = a_lo, a_hi
        row["inside_noise"] = bool(row["low"] <= a_hi and row["high"] >= a_lo)
    return row


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, float]:
    """p50(b) − p50(a) over paired samples, with a paired bootstrap interval (pairs resampled together, so
    load that hit both of a pair stays paired)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    point = float(np.median(y) - np.median(x))
    if len(x) < 2:
        return {"diff": point, "low": point, "high": point, "pairs": len(x)}
    from scipy.stats import bootstrap

    res = bootstrap((x, y), lambda u, v, axis=-1: np.median(v, axis=axis) - np.median(u, axis=axis), paired=True,
                    confidence_level=CONFIDENCE, n_resamples=4000, method="percentile",
                    random_state=np.random.default_rng(seed))
    return {"diff": point, "low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high),
            "pairs": len(x), "median_paired_diff": float(np.median(y - x))}


__all__ = ["CONFIDENCE", "interval", "paired_difference", "ratio_row"]
