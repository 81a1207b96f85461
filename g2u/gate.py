"""The confidence gate: imagine only when the model is unsure without a thought.

Stage I is the costly part of G→U. The gate answers the baseline ``[I, q]`` first, with token
probabilities; when the answer's mean token probability reaches τ (``gate_threshold``), that answer is
returned and stage I never runs ("fired"). Otherwise the request goes on through the paper's loop. τ is
calibrated per benchmark by ``mlflow_project/calibrate_gate.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from g2u.types import Answer


@dataclass
class GateDecision:
    """What the gate saw and did for one request."""

    baseline: Answer
    threshold: float
    fired: bool
    ms: float = 0.0
    """Time of the baseline pass (batched: the whole batch's pass)."""

    def to_dict(self) -> dict[str, Any]:
        return {"policy": "confidence", "threshold": self.threshold, "fired": self.fired,
                "baseline_answer": self.baseline.text, "baseline_prob": round(self.baseline.prob, 6)}


def decide(baseline: Answer, threshold: float, ms: float = 0.0) -> GateDecision:
    """Fire (skip stage I) when the baseline's mean token probability is at least ``threshold``."""
    return GateDecision(baseline, threshold, baseline.prob >= threshold, ms)





# ------------------------------------------------------------------------------------------ calibration
@dataclass
class GatePoint:
    """The gate at one τ over a benchmark split."""

    threshold: float
    accuracy: float
    imagined: float
    """Fraction of samples that would go on to stage I."""
    ms_per_sample: float


def calibration_curve(records: list[dict], thresholds: list[float]) -> list[GatePoint]:
    """Accuracy, fraction imagined and time per τ, from one evaluation run with ``gate: confidence`` at
    τ = 1 (the gate never fires, so every g2u record carries the baseline's probability, the baseline's
    correctness in its ``baseline`` record, and the full G→U cost). At τ a sample keeps the baseline answer
    (and costs the baseline pass) when its probability ≥ τ, else it costs the whole G→U loop."""
    base = {r["id"]: r for r in records if r.get("mode") == "baseline" and r.get("correct") is not None}
    rows = []
    for r in records:
        if r.get("mode") != "g2u" or r.get("correct") is None or not r.get("gate") or r["id"] not in base:
            continue
        t = r.get("timings_ms") or {}
        gate_ms = float(t.get("gate", 0.0))
        rows.append((float(r["gate"]["baseline_prob"]), bool(base[r["id"]]["correct"]), bool(r["correct"]),
                     gate_ms, float(t.get("total", 0.0))))
    if not rows:
        raise ValueError("no g2u records with a gate decision and a matching baseline record: run the evaluation "
                         "with modes baseline,g2u and gate=confidence, gate_threshold=1")
    out = []
    for tau in thresholds:
        keep = [p >= tau for p, *_ in rows]
        acc = sum(b if k else g for k, (_, b, g, _, _) in zip(keep, rows)) / len(rows)
        ms = sum(gm if k else total for k, (_, _, _, gm, total) in zip(keep, rows)) / len(rows)
        out.append(GatePoint(tau, acc, 1 - sum(keep) / len(rows), ms))
    return out


def pick_threshold(curve: list[GatePoint], max_imagined: float) -> GatePoint:
    """The most accurate τ that imagines at most ``max_imagined`` of the samples (ties: the cheaper);
    when none is that cheap, the τ that imagines least."""
    fitting = [p for p in curve if p.imagined <= max_imagined + 1e-12]
    if not fitting:
        return min(curve, key=lambda p: (p.imagined, -p.accuracy))
    return max(fitting, key=lambda p: (p.accuracy, -p.ms_per_sample))
__all__ = ["GateDecision", "GatePoint", "calibration_curve", "decide", "pick_threshold"]
