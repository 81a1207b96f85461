"""What a G→U request gives back: ``G2UResult`` and its JSON form (the REST body, a CLI line, a pyfunc row)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from g2u.types import Thought

DEMO_NOTE = "demo checkpoint: random weights, the answer is meaningless"

DEPRECATED_KEYS = {"fidelity": "measures"}
"""Response keys kept under their older name for one release (old name → new name): ``fidelity`` held
SSIM/PSNR, which measure how much the pixels changed, not fidelity (``g2u.measures``)."""


@dataclass
class G2UResult:
    answer: str
    mode: str
    model: dict[str, Any]
    timings_ms: dict[str, float]
    thought: Thought | None
    reasoning: str | None
    id: str | None
    gate: dict[str, Any] | None
    """The confidence gate's decision (requests with ``gate: confidence``)."""
    candidates: list[dict[str, Any]] | None
    """Every candidate thought's prompt, scores and answer, and which was chosen (``candidates > 1``)."""
    selection: dict[str, Any] | None
    layout: str | None
    """The stage-II layout a thought mode used (None: a mode without a thought)."""
    stage2: dict[str, Any] | None
    """How stage II sized the request's images (``g2u.sizing``)."""
    answer_prompt: dict[str, Any] | None
    """The g2u order used and, for ``replace`` with a threshold, which image was read (``g2u.answer_prompt``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result (the thought image itself is left to the caller: PNG file or base64)."""
        out: dict[str, Any] = {"answer": self.answer, "mode": self.mode}
        if self.id is not None:
            out["id"] = self.id
        out["edit"] = self.thought.edit.to_dict() if self.thought else None
        out["measures"] = self.thought.measures if self.thought else None
        for old, new in DEPRECATED_KEYS.items():
            out[old] = out[new]
        if self.reasoning is not None:
            out["reasoning"] = self.reasoning
        if self.gate is not None:
            out["gate"] = self.gate
        if self.candidates is not None:
            out["candidates"] = self.candidates
            out["selection"] = self.selection
        out["layout"] = self.layout
        out["stage2"] = self.stage2
        out["answer_prompt"] = self.answer_prompt
        out["timings_ms"] = self.timings_ms
        out["model"] = self.model
        return out
