"""A per-request work budget: each request's cost is estimated before any work, and a request over the
budget is refused with 422 naming the fields, the estimate and the budget (instead of running for
minutes and taking its batch-mates down with it).

Stage I costs working pixels × denoising steps × CFG branches (× candidate thoughts); stage II costs the
tokens decoded (answer, plus the reasoning of ``textual_cot``). Defaults are sized from the model: the
paper's settings (30 steps, text CFG on) at the backend's own working area fit four times over.
"""

from __future__ import annotations

from dataclasses import dataclass

from g2u.errors import InputError
from g2u.modes import MODES
from g2u.schema import field_default
from g2u.types import G2URequest

HEADROOM = 4.0
MIN_EDIT_WORK = 16.0
"""Floor of the default budget (MP·steps·branches): demo checkpoints' tiny areas still allow a 512² edit."""


@dataclass(frozen=True)
class WorkBudget:
    max_edit_work: float
    """Megapixel · steps · CFG branches one request may ask of stage I."""
    max_decode_tokens: int
    """Tokens one request may decode in stage II."""

    @classmethod
    def for_backend(cls, default_edit_area: int, max_edit_work: float | None = None,
                    max_decode_tokens: int | None = None) -> WorkBudget:
        paper = default_edit_area / 1e6 * field_default("steps") * 2  # the schema's steps, text CFG on
        return cls(max_edit_work=float(max_edit_work or max(HEADROOM * paper, MIN_EDIT_WORK)),
                   max_decode_tokens=int(max_decode_tokens or 4096 + 512))


def cfg_branches(req: G2URequest) -> int:
    """Forward passes per denoising step: the conditional one, plus text CFG and image CFG when > 1."""
    return 1 + (req.edit.text_cfg > 1.0) + (req.edit.image_cfg > 1.0)


def estimate(req: G2URequest, size: tuple[int, int] | None) -> tuple[float, int]:
    """(stage-I work in MP·steps·branches, stage-II decoded tokens) of one request."""
    mode = MODES[req.mode]
    edit = 0.0
    if mode.needs_thought and size is not None:
        candidates = req.strategy.candidates
        edit = size[0] * size[1] / 1e6 * req.edit.steps * cfg_branches(req) * candidates
    tokens = req.answer.max_new_tokens + (req.reasoning_tokens if "R" in (mode.parts or ()) else 0)
    return edit, tokens


def check_budget(req: G2URequest, size: tuple[int, int] | None, budget: WorkBudget | None) -> None:
    if budget is None:
        return
    edit, tokens = estimate(req, size)
    if edit > budget.max_edit_work:
        w, h = size or (0, 0)
        raise InputError("steps" if req.edit.size is None else "edit_size",
                         f"stage I would cost {edit:.1f} MP·steps·branches (edit_size {w}x{h}, steps "
                         f"{req.edit.steps}, {cfg_branches(req)} CFG branches), over this server's budget of "
                         f"{budget.max_edit_work:.1f}: lower steps or edit_size", status=422)
    if tokens > budget.max_decode_tokens:
        raise InputError("max_new_tokens", f"stage II would decode {tokens} tokens, over this server's budget of "
                                           f"{budget.max_decode_tokens}", status=422)
