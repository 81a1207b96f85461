"""The plan: everything about a request that is decided before a model runs, checked once.

    plan          per request, as the batch path parses it: mode and backend fields, the leak guard, the
                  working size (computed once), the library or routed edit prompt, the work budget
    edit_jobs     after the gate's pre-pass: one job per thought to make — its edit prompt (a writer's, where
                  one decides), the candidate fan-out (prompts, families, seeds), its parameters at the size
    answer_jobs   one stage-II prompt per answer to decode: the request's own, one per candidate thought, and
                  the baseline a vote needs

The loop (``g2u.pipeline``) runs the jobs; ``g2u.reduce`` turns their outputs into results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from g2u.answer_prompt import answer_contents
from g2u.budget import WorkBudget, check_budget
from g2u.errors import InputError
from g2u.gate import GateDecision
from g2u.modes import MODES
from g2u.prompts import EditPrompt, PromptLibrary, find_leak, prompt_leak
from g2u.sizing import SizePlan
from g2u.types import AnswerParams, EditParams, EditRecord, G2URequest, Thought


@dataclass
class RequestPlan:
    """One request, checked, with what stage I and stage II will do for it."""

    request: G2URequest
    size: SizePlan | None
    """Stage I's working size (None: the mode makes no thought)."""
    prompt: EditPrompt | None
    """The edit prompt where the library or the router chose it at planning time (None: a writer will)."""
    thought: Thought | None = None
    """A thought that is already there: made earlier (evaluation resume) or, once measured, brought."""
    gated: GateDecision | None = None
    """The confidence gate's decision, once its pre-pass ran."""

    @property
    def needs_thought(self) -> bool:
        return MODES[self.request.mode].needs_thought

    @property
    def wants_gate(self) -> bool:
        return self.needs_thought and self.request.strategy.gate == "confidence"

    @property
    def fired(self) -> bool:
        """The gate answered from the baseline: no thought is made, no other answer decoded."""
        return self.gated is not None and self.gated.fired


@dataclass
class EditJob:
    """One thought to make: request ``plan`` (its index in the batch), candidate ``candidate``."""

    plan: int
    candidate: int
    image: Image.Image
    record: EditRecord
    params: EditParams
    write_ms: float
    """Time spent choosing the prompt (a writer's call, where one wrote it)."""


@dataclass
class AnswerJob:
    """One answer to decode: request ``plan``, for its candidate ``candidate`` (None: its one answer;
    -1: the baseline an ``agreement`` vote needs)."""

    plan: int
    candidate: int | None
    contents: list[Any]
    params: AnswerParams


class Planner:
    """Makes plans and jobs for one backend and prompt library (``G2UPipeline`` holds one)."""

    def __init__(self, backend: Any, library: PromptLibrary, budget: WorkBudget, *, has_judge: bool,
                 routes: Callable[[], Any], writer: Callable[[str], Any]):
        self.backend, self.library, self.budget = backend, library, budget
        self.has_judge = has_judge
        self._routes, self._writer = routes, writer

    # ------------------------------------------------------------------ per request
    def plan(self, req: G2URequest, thought: Thought | None = None) -> RequestPlan:
        """Check ``req`` against the backend and the library (raises InputError naming the field) and
        plan it. ``thought``: one made earlier for it (stage I is skipped)."""
        backend = self.backend
        if req.mode not in backend.modes:
            raise InputError("mode", f"must be one of {', '.join(backend.modes)} for the {backend.info.backend} "
                                     f"backend; got {req.mode!r}")
        known = set(backend.options_model.model_fields) if backend.options_model else set()
        for name in req.edit.options:
            if name not in known:
                raise InputError(name, f"is not read by the {backend.info.backend} backend")
        if not MODES[req.mode].needs_thought:
            if req.thought is not None:
                raise InputError("thought", f"the {req.mode} mode uses no thought")
            check_budget(req, None, self.budget)
            return RequestPlan(req, None, None)
        if req.strategy.selection == "judge" and req.strategy.candidates > 1 and not self.has_judge:
            raise InputError("selection", "'judge' needs a fidelity judge, and none is configured on this "
                                          "server; use 'confidence' or 'agreement'")
        for k, text in enumerate(req.strategy.candidate_prompts or ()):
            leak = find_leak(text, req.options, req.gold_answer)
            if leak:
                raise InputError(f"candidate_prompts[{k}]", f"leaks the answer: {leak}")
        prompt = self._planned_prompt(req)
        size = backend.plan_edit_size(req.image.size, size=req.edit.size, area=req.edit.area)
        backend.validate_edit(replace(req.edit, size=size.size))
        check_budget(req, size.size if req.thought is None else None, self.budget)
        return RequestPlan(req, size, prompt, thought=thought)

    def _planned_prompt(self, req: G2URequest) -> EditPrompt | None:
        """The library's prompt (leak-guarded: refused) or the router's (a leak falls back to the family
        default); None where a writer will write it."""
        if req.writer == "library":
            chosen = self.library.resolve(req.prompt, req.prompt_name, req.family)
            leak = prompt_leak(chosen, req.options, req.gold_answer)
            if leak:
                raise InputError("prompt" if req.prompt else "prompt_name", f"leaks the answer: {leak}")
            return chosen
        return None

    def provided_record(self, req: G2URequest) -> EditRecord:
        """The edit record of a thought the caller brought: no prompt, no stage I."""
        e = req.edit
        return EditRecord(prompt="", prompt_name=None, family=None, writer="provided", steps=0,
                          text_cfg=e.text_cfg, image_cfg=e.image_cfg, seed=e.seed, size=req.thought.size,
                          provided=True)

    # ------------------------------------------------------------------ stage I jobs
    def edit_jobs(self, plans: Sequence[RequestPlan], todo: Sequence[int]) -> list[EditJob]:
        """Every thought to make for the plans ``todo``: one job per candidate."""
        jobs = []
        for i in todo:
            start = time.perf_counter()
            records = self._candidate_records(plans[i])
            write_ms = (time.perf_counter() - start) * 1000
            req = plans[i].request
            for k, rec in enumerate(records):
                params = replace(req.edit, size=rec.size, seed=rec.seed)
                jobs.append(EditJob(i, k, req.image, rec, params, write_ms))
        return jobs

    def _candidate_records(self, plan: RequestPlan) -> list[EditRecord]:
        """One edit record per candidate: the ``candidate_prompts`` first, then the request's own prompt,
        the other family's default prompt, and the same again with the next seeds."""
        req = plan.request
        n, given = req.strategy.candidates, list(req.strategy.candidate_prompts or ())
        first = self._edit_record(plan) if n > len(given) else None
        if first is not None and n == 1:
            return [first]
        base = first or self._record(plan, self.library.resolve(prompt=given[0]), req.writer)
        out = [replace(base, prompt=text, prompt_name=None, family=None) for text in given]
        if first is not None:
            pool = [first] + [replace(first, prompt=p.text, prompt_name=p.name, family=p.family)
                              for p in (self.library.default(f) for f in self.library.family_defaults)
                              if p.text != first.prompt and p.family != first.family]
            for j in range(n - len(given)):
                rec = pool[j % len(pool)]
                out.append(replace(rec, seed=(req.edit.seed + j // len(pool)) % 2**32))
        return out

    def _edit_record(self, plan: RequestPlan) -> EditRecord:
        req = plan.request
        if plan.prompt is not None:
            return self._record(plan, plan.prompt, req.writer)
        if req.writer == "route":
            _, chosen = self._routes().pick(req.question, self.library, req.family)
            leak = prompt_leak(chosen, req.options, req.gold_answer)
            if leak:  # a library prompt never names an answer; should one do, the family default stands in
                return self._record(plan, self.library.default(chosen.family or "enhancement"), req.writer,
                                    True, f"leak: {leak}")
            return self._record(plan, chosen, req.writer)
        written = self._writer(req.writer).write(req.image, req.question, req.options, req.family,
                                                 answer=req.gold_answer)
        return self._record(plan, written.prompt, req.writer, written.fallback, written.fallback_reason)

    @staticmethod
    def _record(plan: RequestPlan, chosen: EditPrompt, writer: str, fallback: bool = False,
                reason: str | None = None) -> EditRecord:
        e, size = plan.request.edit, plan.size
        return EditRecord(prompt=chosen.text, prompt_name=chosen.name, family=chosen.family, writer=writer,
                          steps=e.steps, text_cfg=e.text_cfg, image_cfg=e.image_cfg, seed=e.seed,
                          size=size.size, writer_fallback=fallback, writer_fallback_reason=reason,
                          options=dict(e.options), sizing=size.record())

    # ------------------------------------------------------------------ stage II jobs
    def answer_jobs(self, plans: Sequence[RequestPlan], thoughts: Sequence[Thought | None],
                    reasoning: dict[int, str], todo: Sequence[int]) -> list[AnswerJob]:
        """Each answer prompt in its mode's order ([I, q, Î], [Î, q], [I, q], [I, q, reasoning]); a request
        with candidate thoughts gets one per candidate (scored) and, to vote, its baseline's."""
        jobs = []
        for i in todo:
            req, thought = plans[i].request, thoughts[i]
            if thought is not None and thought.candidates:
                scored = replace(req.answer, return_scores=True)
                for k, cand in enumerate(thought.candidates):
                    jobs.append(AnswerJob(i, k, answer_contents(req, cand, None, self.backend), scored))
                if req.strategy.selection == "agreement" and plans[i].gated is None:
                    jobs.append(AnswerJob(i, -1, self.baseline_contents(req), scored))
            else:
                jobs.append(AnswerJob(i, None, answer_contents(req, thought, reasoning.get(i), self.backend),
                                      req.answer))
        return jobs

    def baseline_contents(self, req: G2URequest) -> list[Any]:
        """The request's prompt as the baseline mode lays it out ([I, q]): the gate and the vote read it."""
        return answer_contents(replace(req, mode="baseline"), None, None, self.backend)
