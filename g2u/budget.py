"""A per-request work budget: each request's cost is estimated before any work, and a request over the
budget is refused with 422 naming the fields, the estimate and the budget (instead of running for
minutes and taking its batch-mates down with it).

Stage I costs working pixels × denoising steps × CFG branches (× candidate thoughts); stage II costs the
tokens decoded (the answer once per answer pass: each candidate, the agreement or gate baseline; plus the
reasoning of ``textual_cot``) and the prompt it reads (``g2u.cost``: text tokens by the answer model's
tokenizer, image tokens by the stage-II sizing; at most ``max_prompt_tokens`` and the model's positions).
Defaults are sized from the model: the paper's settings (30 steps, text CFG on) at the backend's own
working area fit four times over. A brought thought costs no stage I; its measures run at a bounded size
(``g2u.measures``) and its stage-II tokens are counted like any image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from g2u.errors import InputError
from g2u.modes import MODES
from g2u.schema import field_default
from g2u.types import G2URequest

HEADROOM = 4.0
MIN_EDIT_WORK = 16.0
"""Floor of the default budget (MP·steps·branches): demo checkpoints' tiny areas still allow a 512² edit."""
MAX_PROMPT_TOKENS = 32768
"""Default ceiling of one stage-II prompt (below the model's own positions where those are fewer): three
images at Qwen2.5-VL's largest default size plus the longest question and options fit."""


@dataclass(frozen=True)
class WorkBudget:
    max_edit_work: float
    """Megapixel · steps · CFG branches one request may ask of stage I."""
    max_decode_tokens: int
    """Tokens one request may decode in stage II (every answer pass and the reasoning together)."""
    max_prompt_tokens: int | None = None
    """Tokens one stage-II prompt may have (None: not counted, where no backend is known)."""
    max_batch_tokens: int | None = None
    """Padded tokens one batched stage-II call may have (rows × the longest prompt): ``g2u.cost.plan_groups``."""
    positions: int | None = None
    """The answer model's position limit: prompt + decoded tokens beyond it are refused."""
    backend: Any = field(default=None, compare=False, repr=False)
    """The backend whose tokenizer and stage-II sizing count prompts (None: prompts are not counted)."""

    @classmethod
    def for_backend(cls, default_edit_area: int, max_edit_work: float | None = None,
                    max_decode_tokens: int | None = None, backend: Any = None,
                    max_prompt_tokens: int | None = None, max_batch_tokens: int | None = None) -> WorkBudget:
        paper = default_edit_area / 1e6 * field_default("steps") * 2  # the schema's steps, text CFG on
        prompt = batch = positions = None
        if backend is not None:
            from g2u.cost import max_positions

            positions = max_positions(backend)
            prompt = int(max_prompt_tokens or min(MAX_PROMPT_TOKENS, positions or MAX_PROMPT_TOKENS))
            batch = int(max_batch_tokens or prompt)
        return cls(max_edit_work=float(max_edit_work or max(HEADROOM * paper, MIN_EDIT_WORK)),
                   max_decode_tokens=int(max_decode_tokens or 4096 + 512), max_prompt_tokens=prompt,
                   max_batch_tokens=batch, positions=positions, backend=backend)


def cfg_branches(req: G2URequest) -> int:
    """Forward passes per denoising step: the conditional one, plus text CFG and image CFG when > 1."""
    return 1 + (req.edit.text_cfg > 1.0) + (req.edit.image_cfg > 1.0)


def answer_passes(req: G2URequest) -> int:
    """Answers stage II decodes for one request: one per candidate thought, plus the baseline that
    ``agreement`` votes with or the confidence gate scores."""
    mode = MODES[req.mode]
    if not mode.needs_thought:
        return 1
    candidates = req.strategy.candidates if req.thought is None else 1
    extra = 1 if candidates > 1 and req.strategy.selection == "agreement" else 0
    return candidates + extra + (1 if req.strategy.gate == "confidence" else 0)


def estimate(req: G2URequest, size: tuple[int, int] | None) -> tuple[float, int]:
    """(stage-I work in MP·steps·branches, stage-II decoded tokens) of one request."""
    mode = MODES[req.mode]
    edit = 0.0
    if mode.needs_thought and size is not None:
        candidates = req.strategy.candidates
        edit = size[0] * size[1] / 1e6 * req.edit.steps * cfg_branches(req) * candidates
    tokens = req.answer.max_new_tokens * answer_passes(req)
    tokens += req.reasoning_tokens if "R" in (mode.parts or ()) else 0
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
        passes = answer_passes(req)
        field_name = ("reasoning_tokens" if "R" in (MODES[req.mode].parts or ()) and req.reasoning_tokens
                      > req.answer.max_new_tokens else "candidates" if passes > 1 else "max_new_tokens")
        raise InputError(field_name, f"stage II would decode {tokens} tokens ({passes} answer pass(es) of "
                                     f"max_new_tokens {req.answer.max_new_tokens}"
                                     + (f" + reasoning_tokens {req.reasoning_tokens}"
                                        if "R" in (MODES[req.mode].parts or ()) else "")
                                     + f"), over this server's budget of {budget.max_decode_tokens}", status=422)
    check_prompt(req, budget)


def check_prompt(req: G2URequest, budget: WorkBudget) -> Any:
    """Refuse a stage-II prompt over ``max_prompt_tokens``, the model's positions (with what it decodes),
    or whose padded rows alone exceed ``max_batch_tokens``. Returns the ``g2u.cost.PromptCost`` (None when
    the budget counts no prompts)."""
    if budget.backend is None or budget.max_prompt_tokens is None:
        return None
    from g2u.cost import prompt_cost

    cost = prompt_cost(budget.backend, req)
    limits = [(budget.max_prompt_tokens, "this server's max_prompt_tokens")]
    if budget.positions:
        limits.append((budget.positions - req.answer.max_new_tokens,
                       f"the model's {budget.positions} positions less the {req.answer.max_new_tokens} it decodes"))
    text_field = "options" if req.options and len("".join(req.options)) > len(req.question) else "question"
    field_name = text_field if cost.text >= cost.images else "stage2_max_pixels"
    for limit, what in limits:
        if cost.tokens > limit:
            raise InputError(field_name, f"stage II would read a prompt of {cost.tokens} tokens ({cost.text} of "
                                         f"text, {cost.image_count} image(s) of {cost.images // cost.image_count} "
                                         f"tokens each), over {what} ({limit}): shorten the question and "
                                         "options or lower stage2_max_pixels", status=422)
    if budget.max_batch_tokens and cost.padded > budget.max_batch_tokens:
        raise InputError("candidates", f"stage II would read {cost.passes} prompts of {cost.tokens} tokens "
                                       f"({cost.padded} in all), over this server's max_batch_tokens "
                                       f"({budget.max_batch_tokens})", status=422)
    return cost
