"""The G→U loop: imagine (stage I), then understand (stage II).

    Î = M_G(I, q; p_edit)     stage I  — the backend's editing pathway makes a visual thought
    a = M_U(I, q, Î)          stage II — the understanding pathway answers from [I, q, Î]

What each mode needs (a thought or not, which parts in which order) comes from ``g2u.modes.MODES``.
Everything is batched: one call handles many requests, one backend call per stage. Callers that serve
raw user input go through ``g2u.batch`` (validation and per-item failure isolation) rather than here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from g2u.answer_prompt import answer_contents, answer_prompt_record, cot_prompt
from g2u.backends import Backend, load_backend
from g2u.budget import WorkBudget, check_budget
from g2u.errors import InputError
from g2u.fidelity import edit_magnitude
from g2u.gate import decide
from g2u.modes import MODES
from g2u.prompts import EditPrompt, PromptLibrary, default_library, find_leak, prompt_leak
from g2u.selection import Candidate, Judge, candidate_dicts, select
from g2u.thought_cache import ThoughtCache
from g2u.types import Answer, AnswerParams, EditRecord, G2URequest, Thought

DEMO_NOTE = "demo checkpoint: random weights, the answer is meaningless"


@dataclass
class G2UResult:
    answer: str
    mode: str
    model: dict[str, Any]
    timings_ms: dict[str, float]
    thought: Thought | None = None
    reasoning: str | None = None
    id: str | None = None
    gate: dict[str, Any] | None = None
    """The confidence gate's decision (requests with ``gate: confidence``)."""
    candidates: list[dict[str, Any]] | None = None
    """Every candidate thought's prompt, scores and answer, and which was chosen (``candidates > 1``)."""
    selection: dict[str, Any] | None = None
    layout: str | None = None
    """The stage-II layout a thought mode used (None: a mode without a thought)."""
    stage2: dict[str, Any] | None = None
    """How stage II sized the request's images (``g2u.sizing``)."""
    answer_prompt: dict[str, Any] | None = None
    """The g2u order used and, for ``replace`` with a threshold, which image was read (``g2u.answer_prompt``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result (the thought image itself is left to the caller: PNG file or base64)."""
        out: dict[str, Any] = {"answer": self.answer, "mode": self.mode}
        if self.id is not None:
            out["id"] = self.id
        out["edit"] = self.thought.edit.to_dict() if self.thought else None
        out["fidelity"] = self.thought.fidelity if self.thought else None
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


class G2UPipeline:
    """Runs validated G→U requests on one backend: ``imagine`` (stage I), ``understand`` (stage II), or
    both (``__call__``)."""

    def __init__(self, backend: Backend, library: PromptLibrary | None = None, writer_config: Any = None,
                 thought_cache: ThoughtCache | None = None, judge: Judge | None = None, routes: Any = None,
                 budget: WorkBudget | None = None):
        self.backend = backend
        self.budget = budget or WorkBudget.for_backend(backend.default_edit_area)
        """Per-request work budget (``g2u.budget``): requests over it are refused before any work."""
        self.library = library or default_library()
        self.writer_config = writer_config
        """``g2u.writers.WriterConfig`` for the openai/self writers (None: read from the environment)."""
        self.thought_cache = thought_cache
        """Persistent thought store (``g2u.thought_cache``); None: every thought is made anew."""
        self.judge = judge
        """Fidelity judge ``score(original, thought, prompt) -> float | None`` for ``selection: judge``."""
        self._routes = routes
        self.checkpoint_label: str | None = None
        """What results report as ``model.checkpoint`` (None: the checkpoint as loaded; a server sets a name,
        so responses do not carry its filesystem paths)."""
        self._writers: dict[str, Any] = {}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | None = None, backend: str | None = None, **kwargs) -> G2UPipeline:
        """Load a checkpoint (folder or hub id); none at all: the embedded demo checkpoint of ``backend``.
        ``thought_cache`` defaults to ``G2U_THOUGHT_CACHE`` (unset: none)."""
        library, writer_config = kwargs.pop("library", None), kwargs.pop("writer_config", None)
        cache = kwargs.pop("thought_cache", "env")
        judge, routes, budget = kwargs.pop("judge", None), kwargs.pop("routes", None), kwargs.pop("budget", None)
        if checkpoint is None and not (kwargs.get("editor") or kwargs.get("answerer")):
            from g2u.demo import ensure_demo_checkpoint

            checkpoint = str(ensure_demo_checkpoint(backend or "qwen_image_edit"))
        return cls(load_backend(checkpoint, backend, **kwargs), library=library, writer_config=writer_config,
                   thought_cache=ThoughtCache.from_env() if cache == "env" else cache, judge=judge, routes=routes,
                   budget=budget)

    @property
    def routes(self):
        """The router's table (``g2u/data/routes.yaml`` unless one was given), loaded on first use."""
        if self._routes is None:
            from g2u.router import RouteTable

            self._routes = RouteTable.load(library=self.library)
        return self._routes

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

    def __call__(self, requests: Sequence[G2URequest]) -> list[G2UResult]:
        return self.understand(requests, self.imagine(requests))

    def check(self, req: G2URequest) -> None:
        """Per-request checks that need the backend or the prompt library (mode, options, prompt, leak,
        size). Raises InputError; ``g2u.batch`` runs it per item, so one bad item never reaches a
        batched stage."""
        if req.mode not in self.modes:
            raise InputError("mode", f"must be one of {', '.join(self.modes)} for the {self.backend.info.backend} "
                                     f"backend; got {req.mode!r}")
        known = set(self.backend.options_model.model_fields) if self.backend.options_model else set()
        for name in req.edit.options:
            if name not in known:
                raise InputError(name, f"is not read by the {self.backend.info.backend} backend")
        if not MODES[req.mode].needs_thought:
            if req.thought is not None:
                raise InputError("thought", f"the {req.mode} mode uses no thought")
            check_budget(req, None, self.budget)
            return
        if req.strategy.selection == "judge" and req.strategy.candidates > 1 and self.judge is None:
            raise InputError("selection", "'judge' needs a fidelity judge, and none is configured on this "
                                          "server; use 'confidence' or 'agreement'")
        for k, text in enumerate(req.strategy.candidate_prompts or ()):
            leak = find_leak(text, req.options, req.gold_answer)
            if leak:
                raise InputError(f"candidate_prompts[{k}]", f"leaks the answer: {leak}")
        if req.writer == "library":
            self._library_prompt(req)
        size = self._plan(req).size
        self.backend.validate_edit(replace(req.edit, size=size))
        check_budget(req, size if req.thought is None else None, self.budget)

    # ------------------------------------------------------------------ stage I
    def imagine(self, requests: Sequence[G2URequest]) -> list[Thought | None]:
        """Stage I for the requests whose mode needs a thought; ``None`` for the others (and for those
        the confidence gate answered: ``request.gated.fired``)."""
        for req in requests:
            self.check(req)
        todo = [i for i, r in enumerate(requests) if MODES[r.mode].needs_thought]
        thoughts: list[Thought | None] = [None] * len(requests)

        # 1. The gate (beyond the paper): a confident baseline answer skips stage I.
        todo = self._gate(requests, todo)

        # 2. Thoughts the caller brought are used as they are.
        for i in [i for i in todo if requests[i].thought is not None]:
            thoughts[i] = replace(self._provided(requests[i]), gate=requests[i].gated)
        todo = [i for i in todo if requests[i].thought is None]
        if not todo:
            return thoughts

        # 3. Decide what to imagine: the edit prompt of each request (library, a writer or the router,
        #    leak-guarded), and one record per candidate where several are asked for.
        records, write_ms = {}, {}
        for i in todo:
            start = time.perf_counter()
            records[i] = self._candidate_records(requests[i])
            write_ms[i] = (time.perf_counter() - start) * 1000
        jobs = [(i, k) for i in todo for k in range(len(records[i]))]
        params = {(i, k): replace(requests[i].edit, size=records[i][k].size, seed=records[i][k].seed)
                  for i, k in jobs}

        # 4. The thought cache: a thought made before (same pixels, prompt, parameters, checkpoint) is reused.
        made: dict[tuple[int, int], Thought] = {}
        keys: dict[tuple[int, int], str] = {}
        if self.thought_cache is not None:
            for i, k in jobs:
                start = time.perf_counter()
                keys[(i, k)] = self.thought_cache.key(self.backend, requests[i].image, records[i][k].prompt,
                                                      params[(i, k)], self.library.version)
                hit = self.thought_cache.get(keys[(i, k)])
                if hit is not None:
                    rec = replace(records[i][k], cached=True, plan=hit.meta.get("plan"))
                    made[(i, k)] = Thought(image=hit.image, edit=rec, fidelity=hit.meta.get("fidelity", {}),
                                           timings_ms={"write_prompt": write_ms[i],
                                                       "cache": (time.perf_counter() - start) * 1000})

        # 5. Stage I, batched: every missing thought of every request (candidates included) in one call;
        #    the backend groups compatible items itself.
        missing = [job for job in jobs if job not in made]
        if missing:
            start = time.perf_counter()
            outputs = self.backend.edit([requests[i].image for i, _ in missing],
                                        [records[i][k].prompt for i, k in missing], [params[j] for j in missing])
            edit_ms = (time.perf_counter() - start) * 1000

            # 6. Fidelity of each Î against its I; new thoughts go into the cache.
            for (i, k), out in zip(missing, outputs):
                rec = replace(records[i][k], plan=out.plan)
                start = time.perf_counter()
                scores = edit_magnitude(requests[i].image, out.image)
                timings = {"write_prompt": write_ms[i], "edit": edit_ms,
                           "fidelity": (time.perf_counter() - start) * 1000}
                made[(i, k)] = Thought(image=out.image, edit=rec, fidelity=scores, timings_ms=timings)
                if self.thought_cache is not None:
                    self.thought_cache.put(keys[(i, k)], out.image, {"fidelity": scores, "plan": out.plan})

        for i in todo:
            cands = [made[(i, k)] for k in range(len(records[i]))]
            thoughts[i] = replace(cands[0], candidates=cands if len(cands) > 1 else None, gate=requests[i].gated)
        return thoughts

    def _gate(self, requests: Sequence[G2URequest], todo: list[int]) -> list[int]:
        """Answer the baseline of gated requests (one scored pass); return the requests still to imagine."""
        gated = [i for i in todo if requests[i].strategy.gate == "confidence"]
        if not gated:
            return todo
        start = time.perf_counter()
        contents = [self._contents(replace(requests[i], mode="baseline"), None, None) for i in gated]
        answers, _ = self._answer_grouped(contents, [replace(requests[i].answer, return_scores=True) for i in gated])
        ms = (time.perf_counter() - start) * 1000
        for i, ans in zip(gated, answers):
            requests[i].gated = decide(ans, requests[i].strategy.gate_threshold, ms)
        return [i for i in todo if not (requests[i].gated is not None and requests[i].gated.fired)]

    def _provided(self, req: G2URequest) -> Thought:
        """A thought the caller brought: recorded as provided (no prompt, no stage I), fidelity measured."""
        start = time.perf_counter()
        e = req.edit
        rec = EditRecord(prompt="", prompt_name=None, family=None, writer="provided", steps=0, text_cfg=e.text_cfg,
                         image_cfg=e.image_cfg, seed=e.seed, size=req.thought.size, provided=True)
        scores = edit_magnitude(req.image, req.thought)
        return Thought(image=req.thought, edit=rec, fidelity=scores,
                       timings_ms={"fidelity": (time.perf_counter() - start) * 1000})

    def _candidate_records(self, req: G2URequest) -> list[EditRecord]:
        """One edit record per candidate: the ``candidate_prompts`` first, then the request's own prompt,
        the other family's default prompt, and the same again with the next seeds."""
        n, given = req.strategy.candidates, list(req.strategy.candidate_prompts or ())
        first = self._edit_record(req) if n > len(given) else None
        if first is not None and n == 1:
            return [first]
        base = first or self._record(req, self.library.resolve(prompt=given[0]), req.writer)
        out = [replace(base, prompt=text, prompt_name=None, family=None) for text in given]
        if first is not None:
            pool = [first] + [replace(first, prompt=p.text, prompt_name=p.name, family=p.family)
                              for p in (self.library.default(f) for f in self.library.family_defaults)
                              if p.text != first.prompt and p.family != first.family]
            for j in range(n - len(given)):
                rec = pool[j % len(pool)]
                out.append(replace(rec, seed=(req.edit.seed + j // len(pool)) % 2**32))
        return out

    def _library_prompt(self, req: G2URequest):
        chosen = self.library.resolve(req.prompt, req.prompt_name, req.family)
        leak = prompt_leak(chosen, req.options, req.gold_answer)
        if leak:
            raise InputError("prompt" if req.prompt else "prompt_name", f"leaks the answer: {leak}")
        return chosen

    def _plan(self, req: G2URequest):
        """The working size by the backend's own rule and limits (``g2u.sizing``): the request's
        ``edit_size``, else its ``edit_area``, else the model's rule; any input shape fits."""
        return self.backend.plan_edit_size(req.image.size, size=req.edit.size, area=req.edit.area)

    def _edit_record(self, req: G2URequest) -> EditRecord:
        fallback, reason, writer = False, None, req.writer
        if req.writer == "library":
            chosen = self._library_prompt(req)
        elif req.writer == "route":
            _, chosen = self.routes.pick(req.question, self.library, req.family)
            leak = prompt_leak(chosen, req.options, req.gold_answer)
            if leak:  # a library prompt never names an answer; should one do, the family default stands in
                chosen, fallback, reason = self.library.default(chosen.family or "enhancement"), True, f"leak: {leak}"
        else:
            written = self._writer(req.writer).write(req.image, req.question, req.options, req.family,
                                                     answer=req.gold_answer)
            chosen, fallback, reason = written.prompt, written.fallback, written.fallback_reason
        return self._record(req, chosen, writer, fallback, reason)

    def _record(self, req: G2URequest, chosen: EditPrompt, writer: str, fallback: bool = False,
                reason: str | None = None) -> EditRecord:
        e, plan = req.edit, self._plan(req)
        return EditRecord(prompt=chosen.text, prompt_name=chosen.name, family=chosen.family, writer=writer,
                          steps=e.steps, text_cfg=e.text_cfg, image_cfg=e.image_cfg, seed=e.seed,
                          size=plan.size, writer_fallback=fallback, writer_fallback_reason=reason,
                          options=dict(e.options), sizing=plan.record())

    def _writer(self, name: str):
        if name not in self._writers:
            from g2u.writers import make_writer

            self._writers[name] = make_writer(name, backend=self.backend, library=self.library,
                                              config=self.writer_config)
        return self._writers[name]

    # ------------------------------------------------------------------ stage II
    def understand(self, requests: Sequence[G2URequest], thoughts: Sequence[Thought | None]) -> list[G2UResult]:
        """Stage II: answer every request from the parts its mode allows, batched."""
        for req, thought in zip(requests, thoughts):
            if MODES[req.mode].needs_thought and thought is None and not self._fired(req):
                raise InputError("mode", f"{req.mode} needs a thought: run imagine() first")
        for req, thought in zip(requests, thoughts):  # a thought made in an earlier call carries its gate
            if req.gated is None and thought is not None and thought.gate is not None:
                req.gated = thought.gate
        live = [i for i, r in enumerate(requests) if not self._fired(r)]  # 0. the gate answered the others

        # 1. Modes that reason in text write their reasoning first (``reasoning_tokens``, one batched pass);
        #    a backend with its own reasoning format (BAGEL's think prompt) reasons and answers in one go.
        cot = [i for i in live if "R" in (MODES[requests[i].mode].parts or ())]
        start = time.perf_counter()
        reasoning, answered = self._reason(requests, cot)
        cot_ms = (time.perf_counter() - start) * 1000

        # 2. Each answer prompt in its mode's order: [I, q, Î], [Î, q], [I, q], [I, q, reasoning]; a request
        #    with candidate thoughts gets one prompt per candidate (and, to vote, its baseline's).
        jobs: list[tuple[int, int | None]] = []  # (request, candidate; None: its one answer / "-1": baseline)
        contents, params = [], []
        for i in (i for i in live if i not in answered):
            req, thought = requests[i], thoughts[i]
            if thought is not None and thought.candidates:
                scored = replace(req.answer, return_scores=True)
                for k, cand in enumerate(thought.candidates):
                    jobs.append((i, k))
                    contents.append(self._contents(req, cand, None))
                    params.append(scored)
                if req.strategy.selection == "agreement" and req.gated is None:
                    jobs.append((i, -1))
                    contents.append(self._contents(replace(req, mode="baseline"), None, None))
                    params.append(scored)
            else:
                jobs.append((i, None))
                contents.append(self._contents(req, thought, reasoning.get(i)))
                params.append(req.answer)

        # 3. Stage II, batched; the backend reports how it sized each request's images.
        start = time.perf_counter()
        answers, stage2 = self._answer_grouped(contents, params) if jobs else ([], [])
        understand_ms = (time.perf_counter() - start) * 1000
        by_job = {**{(i, None): a for i, a in answered.items()}, **dict(zip(jobs, answers))}
        stage2_of = {i: rec for (i, _), rec in zip(jobs, stage2)}

        # 4. Selection among candidate thoughts (beyond the paper), then the results.
        results = []
        for i, (req, thought) in enumerate(zip(requests, thoughts)):
            timings = dict(thought.timings_ms) if thought else {}
            gate = req.gated.to_dict() if req.gated is not None else None
            if req.gated is not None:
                timings["gate"] = req.gated.ms
            extra: dict[str, Any] = {}
            if self._fired(req):
                answer = req.gated.baseline.text
            elif thought is not None and thought.candidates:
                answer, thought, extra = self._select(req, thought.candidates, by_job, i)
                timings["understand"] = understand_ms
            else:
                answer = _text(by_job[(i, None)])
                if i in reasoning:
                    timings["reasoning"] = cot_ms
                timings["understand"] = understand_ms
            timings = {k: round(v, 2) for k, v in timings.items()}
            timings["total"] = round(sum(timings.values()), 2)
            results.append(G2UResult(answer=answer, mode=req.mode, model=self.model_info, timings_ms=timings,
                                     thought=thought, reasoning=reasoning.get(i), id=req.id, gate=gate,
                                     layout=req.layout if MODES[req.mode].needs_thought else None,
                                     stage2=stage2_of.get(i), answer_prompt=answer_prompt_record(req, thought),
                                     **extra))
        return results

    @staticmethod
    def _fired(req: G2URequest) -> bool:
        return req.gated is not None and req.gated.fired

    def _select(self, req: G2URequest, cands: list[Thought], by_job: dict, i: int
                ) -> tuple[str, Thought | None, dict[str, Any]]:
        """Apply the request's selection policy; returns (answer, chosen thought or None, result fields)."""
        policy = req.strategy.selection
        scored = [Candidate(c, by_job[(i, k)]) for k, c in enumerate(cands)]
        if policy == "judge":
            for c in scored:
                c.judge = self.judge(req.image, c.thought.image, c.thought.edit.prompt)
        baseline = req.gated.baseline if req.gated is not None else by_job.get((i, -1))
        choice = select(policy, scored, baseline)
        selection = {"policy": policy, "chosen": choice.index, "note": choice.note}
        if choice.votes:
            selection["votes"] = choice.votes
        if baseline is not None:
            selection["baseline_answer"] = baseline.text
        chosen = cands[choice.index] if choice.index is not None else None
        return choice.answer, chosen, {"candidates": candidate_dicts(scored, choice), "selection": selection}

    def _reason(self, requests: Sequence[G2URequest], cot: list[int]) -> tuple[dict[int, str], dict[int, str]]:
        """The written reasoning of ``textual_cot`` requests; with BAGEL's ``think_answer``, their answers too."""
        think_answer = getattr(self.backend, "think_answer", None)
        reasoning: dict[int, str] = {}
        answered: dict[int, str] = {}
        for i in cot if think_answer is not None else ():
            req = requests[i]
            [(reasoning[i], answered[i])] = think_answer([[req.image, cot_prompt(req, final=True)]], req.answer,
                                                         max_think_tokens=req.reasoning_tokens)
        todo = [i for i in cot if i not in answered]
        if todo:
            contents = [[requests[i].image, cot_prompt(requests[i])] for i in todo]
            params = [replace(requests[i].answer, max_new_tokens=requests[i].reasoning_tokens) for i in todo]
            texts, _ = self._answer_grouped(contents, params)
            reasoning.update((i, _text(t)) for i, t in zip(todo, texts))
        return reasoning, answered

    def _contents(self, req: G2URequest, thought: Thought | None, reasoning: str | None) -> list[Any]:
        return answer_contents(req, thought, reasoning, self.backend)

    def _answer_grouped(self, contents: list[list[Any]],
                        params: list[AnswerParams]) -> tuple[list[str | Answer], list[dict | None]]:
        """One backend call per distinct AnswerParams (requests almost always share one). An item whose
        params ask for scores gets an ``Answer``, the others a text; with each, how the backend sized its
        stage-II images."""
        out: list[str | Answer | None] = [None] * len(contents)
        sizing: list[dict | None] = [None] * len(contents)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault((p.max_new_tokens, p.temperature, p.return_scores, p.stage2_max_pixels,
                               p.stage2_sizing), []).append(i)
        for idx in groups.values():
            texts = self.backend.answer([contents[i] for i in idx], params[idx[0]])
            records = list(getattr(self.backend, "last_stage2", None) or [])
            for k, (i, text) in enumerate(zip(idx, texts)):
                out[i] = text
                sizing[i] = records[k] if k < len(records) else None
        return out, sizing  # type: ignore[return-value]


def _text(answer: str | Answer) -> str:
    return answer.text if isinstance(answer, Answer) else answer
