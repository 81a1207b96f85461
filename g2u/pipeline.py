"""The G→U loop: edit (stage I), then understand (stage II), over a batch of planned requests.

    Î = M_G(I, q; p_edit)     stage I  — the backend's editing pathway makes a visual thought
    a = M_U(I, q, Î)          stage II — the understanding pathway answers from [I, q, Î]

A request is checked and planned once (``g2u.plan``: size, prompt, budget), the loop runs its jobs — one
backend call per stage for the whole batch — and ``g2u.reduce`` builds the results. What each mode needs
comes from ``g2u.modes.MODES``. Callers that serve raw user input go through ``g2u.batch`` (parsing and
per-item failure isolation) rather than here. Streamed requests see their progress through
``g2u.progress``: the loop says whose rows each backend call computes (``progress.rows``) and emits the
prompt chosen; without a listener these cost one ContextVar read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from g2u import progress, reduce
from g2u.answer_prompt import cot_prompt
from g2u.backends import Backend, load_backend
from g2u.budget import WorkBudget
from g2u.errors import InputError
from g2u.gate import decide
from g2u.measures import edit_measures
from g2u.modes import MODES
from g2u.plan import EditJob, Planner, RequestPlan
from g2u.prompts import PromptLibrary, default_library
from g2u.results import DEMO_NOTE, G2UResult
from g2u.selection import Judge
from g2u.thought_cache import CachedEditor, ThoughtCache
from g2u.types import Answer, EditOutput, G2URequest, Thought


class G2UPipeline:
    """Runs planned G→U requests on one backend: ``edit`` (stage I), ``understand`` (stage II), or both
    (``__call__``). Components, as a diffusers pipeline registers them: the backend, the prompt library,
    the planner, the editor (the backend's ``edit``, behind the thought cache when there is one), the judge."""

    def __init__(self, backend: Backend, library: PromptLibrary | None = None, writer_config: Any = None,
                 thought_cache: ThoughtCache | None = None, judge: Judge | None = None, routes: Any = None,
                 budget: WorkBudget | None = None):
        self.backend = backend
        self.library = library or default_library()
        self.thought_cache = thought_cache
        self.editor = backend if thought_cache is None else CachedEditor(backend, thought_cache, self.library.version)
        self.judge = judge
        """Fidelity judge ``score(original, thought, prompt) -> float | None`` for ``selection: judge``."""
        self.writer_config = writer_config
        """``g2u.writers.WriterConfig`` for the openai/self writers (None: read from the environment)."""
        self.planner = Planner(backend, self.library, budget or WorkBudget.for_backend(backend.default_edit_area),
                               has_judge=judge is not None,
                               routes=self._route_table, writer=self._writer)
        self._routes, self._writers = routes, {}
        self.checkpoint_label: str | None = None
        """What results report as ``model.checkpoint`` (None: the checkpoint as loaded; a server sets a name,
        so responses do not carry its filesystem paths)."""

    @classmethod
    def from_checkpoint(cls, checkpoint: str | None, backend: str | None = None, **kwargs) -> G2UPipeline:
        """Load a checkpoint (folder or hub id; entry points resolve the demo default first:
        ``g2u.checkpoints.resolve_checkpoint``). ``thought_cache`` defaults to ``G2U_THOUGHT_CACHE``."""
        own = {k: kwargs.pop(k) for k in ("library", "writer_config", "judge", "routes", "budget") if k in kwargs}
        cache = kwargs.pop("thought_cache", "env")
        return cls(load_backend(checkpoint, backend, **kwargs),
                   thought_cache=ThoughtCache.from_env() if cache == "env" else cache, **own)

    @property
    def budget(self) -> WorkBudget:
        """Per-request work budget (``g2u.budget``): requests over it are refused before any work."""
        return self.planner.budget

    @budget.setter
    def budget(self, value: WorkBudget) -> None:
        self.planner.budget = value

    @property
    def modes(self) -> tuple[str, ...]:
        return self.backend.modes

    @property
    def model_info(self) -> dict[str, Any]:
        info = self.backend.info
        out = {"backend": info.backend, "checkpoint": self.checkpoint_label or info.checkpoint, "demo": info.demo,
               "device": info.device, "dtype": info.dtype}
        if info.demo:
            out["note"] = DEMO_NOTE
        return out

    def plan(self, request: G2URequest, thought: Thought | None = None) -> RequestPlan:
        """Check and plan one request (InputError naming the field); ``thought``: one made earlier."""
        return self.planner.plan(request, thought)

    def __call__(self, requests: Sequence[G2URequest]) -> list[G2UResult]:
        plans = [self.plan(r) for r in requests]
        return self.understand(plans, self.edit(plans))

    # ------------------------------------------------------------------ stage I
    def edit(self, plans: Sequence[RequestPlan]) -> list[Thought | None]:
        """Stage I: a thought for each plan whose mode needs one (None for the others, and for those the
        confidence gate answered)."""
        thoughts, jobs = self.prepare_edit(plans)
        if not jobs:
            return thoughts

        # 4. Stage I, batched: every thought of every request in one call (the backend groups compatible
        #    items; the thought cache answers what it has seen).
        start = time.perf_counter()
        with progress.rows([plans[j.plan] for j in jobs], "edit"):
            outputs = self.editor.edit([j.image for j in jobs], [j.record.prompt for j in jobs],
                                       [j.params for j in jobs])
        return self.finish_edit(plans, thoughts, jobs, outputs, (time.perf_counter() - start) * 1000)

    def prepare_edit(self, plans: Sequence[RequestPlan]) -> tuple[list[Thought | None], list[EditJob]]:
        """Stage I before any denoising: the gate's pre-pass, brought thoughts measured, and one edit job
        per thought to make (``g2u.scheduler`` runs the jobs step by step; ``edit`` in one call)."""
        thoughts: list[Thought | None] = [p.thought for p in plans]

        # 1. The gate (beyond the paper): a confident baseline answer skips stage I.
        gated = [i for i, p in enumerate(plans) if p.wants_gate and p.thought is None]
        if gated:
            start = time.perf_counter()
            with progress.rows([plans[i] for i in gated], "gate", stream=[False] * len(gated)):
                answers = self.backend.answer_grouped([self.planner.baseline_contents(plans[i].request)
                                                       for i in gated],
                                                      [replace(plans[i].request.answer, return_scores=True)
                                                       for i in gated])
            ms = (time.perf_counter() - start) * 1000
            for i, ans in zip(gated, answers):
                plans[i].gated = decide(ans, plans[i].request.strategy.gate_threshold, ms)

        # 2. Thoughts the caller brought are measured and used as they are.
        todo = [i for i, p in enumerate(plans) if p.needs_thought and p.thought is None and not p.fired]
        for i in [i for i in todo if plans[i].request.thought is not None]:
            req = plans[i].request
            start = time.perf_counter()
            measures = edit_measures(req.image, req.thought)
            thoughts[i] = Thought(image=req.thought, edit=self.planner.provided_record(req), measures=measures,
                                  timings_ms={"measures": (time.perf_counter() - start) * 1000}, gate=plans[i].gated)
        todo = [i for i in todo if plans[i].request.thought is None]

        # 3. What to imagine: one edit job per candidate thought (prompts written where a writer decides).
        jobs = self.planner.edit_jobs(plans, todo)
        for job in jobs:  # streamed requests show the prompt chosen (``g2u.progress``; nothing otherwise)
            progress.emit(plans[job.plan], "prompt", prompt=job.record.prompt, prompt_name=job.record.prompt_name,
                          family=job.record.family, writer=job.record.writer, candidate=job.candidate)
        return thoughts, jobs

    def finish_edit(self, plans: Sequence[RequestPlan], thoughts: list[Thought | None], jobs: Sequence[EditJob],
                    outputs: Sequence[EditOutput], edit_ms: float) -> list[Thought | None]:
        """Stage I after denoising: each job's output measured and gathered into its plan's thought."""
        # 5. Edit measures of each Î against its I (SSIM, PSNR: how much the pixels changed).
        made: dict[int, list[Thought]] = {}
        for job, out in zip(jobs, outputs):
            start = time.perf_counter()
            measures = edit_measures(job.image, out.image)
            thought = reduce.thought_of(job, out, measures, edit_ms, (time.perf_counter() - start) * 1000)
            made.setdefault(job.plan, []).append(thought)
        for i, candidates in made.items():
            thoughts[i] = reduce.gather(plans[i], candidates)
        return thoughts

    # ------------------------------------------------------------------ stage II
    def understand(self, plans: Sequence[RequestPlan], thoughts: Sequence[Thought | None]) -> list[G2UResult]:
        """Stage II: answer every plan from the parts its mode allows, batched."""
        for plan, thought in zip(plans, thoughts):
            if plan.gated is None and thought is not None and thought.gate is not None:
                plan.gated = thought.gate  # a thought made in an earlier call carries its gate
            if plan.needs_thought and thought is None and not plan.fired:
                raise InputError("mode", f"{plan.request.mode} needs a thought: run edit() first")
        live = [i for i, p in enumerate(plans) if not p.fired]  # the gate answered the others

        # 1. Modes that reason in text write their reasoning first (``reasoning_tokens``, one batched pass);
        #    a backend with its own reasoning format (BAGEL's think prompt) reasons and answers in one go.
        start = time.perf_counter()
        reasoning, answered = self._reason(plans, [i for i in live if "R" in (MODES[plans[i].request.mode].parts
                                                                             or ())])
        stage_ms = {"reasoning": (time.perf_counter() - start) * 1000}

        # 2. Stage II, batched: one answer per job (a request's own, one per candidate, a vote's baseline).
        jobs = self.planner.answer_jobs(plans, thoughts, reasoning, [i for i in live if i not in answered])
        start = time.perf_counter()
        with progress.rows([plans[j.plan] for j in jobs], "answer", stream=[j.candidate is None for j in jobs]):
            answers = self.backend.answer_grouped([j.contents for j in jobs], [j.params for j in jobs]) if jobs else []
        stage_ms["understand"] = (time.perf_counter() - start) * 1000

        # 3. Reduce: selection among candidates, the gate's answers, timings, one result per request.
        by_plan: dict[int, dict[int | None, Answer]] = {i: {None: a} for i, a in answered.items()}
        for job, ans in zip(jobs, answers):
            by_plan.setdefault(job.plan, {})[job.candidate] = ans
        return [reduce.result(plan, thought, by_plan.get(i, {}), reasoning.get(i), stage_ms, self.model_info,
                              self.judge) for i, (plan, thought) in enumerate(zip(plans, thoughts))]

    def _reason(self, plans: Sequence[RequestPlan], cot: list[int]) -> tuple[dict[int, str], dict[int, Answer]]:
        """The written reasoning of ``textual_cot`` plans; with a backend's own format, their answers too."""
        reasoning: dict[int, str] = {}
        answered: dict[int, Answer] = {}
        for i in cot:
            req = plans[i].request
            native = self.backend.think_answer([[req.image, cot_prompt(req, final=True)]], req.answer,
                                               max_think_tokens=req.reasoning_tokens)
            if native is None:
                break
            [(reasoning[i], answered[i])] = native
        todo = [i for i in cot if i not in answered]
        if todo:
            reqs = [plans[i].request for i in todo]
            with progress.rows([plans[i] for i in todo], "reasoning"):
                texts = self.backend.answer_grouped([[r.image, cot_prompt(r)] for r in reqs],
                                                    [replace(r.answer, max_new_tokens=r.reasoning_tokens)
                                                     for r in reqs])
            reasoning.update((i, t.text) for i, t in zip(todo, texts))
        return reasoning, answered

    # ------------------------------------------------------------------ components made on first use
    def _route_table(self):
        """The router's table (``g2u/data/routes.yaml`` unless one was given), loaded on first use."""
        if self._routes is None:
            from g2u.router import RouteTable

            self._routes = RouteTable.load(library=self.library)
        return self._routes

    def _writer(self, name: str):
        if name not in self._writers:
            from g2u.writers import make_writer

            self._writers[name] = make_writer(name, backend=self.backend, library=self.library,
                                              config=self.writer_config)
        return self._writers[name]


__all__ = ["G2UPipeline", "G2UResult", "RequestPlan"]
