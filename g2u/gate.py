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


__all__ = ["GateDecision", "decide"]
