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

from g2u.backends import Backend, load_backend
from g2u.errors import InputError
from g2u.fidelity import fidelity
from g2u.gate import decide
from g2u.images import check_edit_size, working_size
from g2u.modes import MODES
from g2u.prompts import EditPrompt, PromptLibrary, default_library, find_leak
from g2u.selection import Candidate, Judge, candidate_dicts, select
from g2u.thought_cache import ThoughtCache
from g2u.types import Answer, AnswerParams, EditRecord, G2URequest, Thought

MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."
COT_INSTRUCTION = "Think step by step about the image and write your reasoning. Do not give the final answer yet."
COT_MAX_NEW_TOKENS = 128
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
        out["timings_ms"] = self.timings_ms
        out["model"] = self.model
        return out


def format_question(question: str, options: Sequence[str] | None) -> str:
    """The question as the answer model reads it (VLMEvalKit/lmms-eval MCQ style)."""
    if not options:
        return question
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "\n".join([question, *(f"{letters[i]}. {opt}" for i, opt in enumerate(options))])


class G2UPipeline:
    """Runs validated G→U requests on one backend: ``imagine`` (stage I), ``understand`` (stage II), or
    both (``__call__``)."""

    def __init__(self, backend: Backend, library: PromptLibrary | None = None, writer_config: Any = None,
                 thought_cache: ThoughtCache | None = None, judge: Judge | None = None, routes: Any = None):
        self.backend = backend
        self.library = library or default_library()
        self.writer_config = writer_config
        """``g2u.writers.WriterConfig`` for the openai/self writers (None: read from the environment)."""
        self.thought_cache = thought_cache
        """Persistent thought store (``g2u.thought_cache``); None: every thought is made anew."""
        self.judge = judge
        """Fidelity judge ``score(original, thought, prompt) -> float | None`` for ``selection: judge``."""
        self._routes = routes
        self._writers: dict[str, Any] = {}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | None = None, backend: str | None = None, **kwargs) -> G2UPipeline:
        """Load a checkpoint (folder or hub id); none at all: the embedded demo checkpoint of ``backend``.
        ``thought_cache`` defaults to ``G2U_THOUGHT_CACHE`` (unset: none)."""
        library, writer_config = kwargs.pop("library", None), kwargs.pop("writer_config", None)
        cache = kwargs.pop("thought_cache", "env")
        judge, routes = kwargs.pop("judge", None), kwargs.pop("routes", None)
        if checkpoint is None and not (kwargs.get("editor") or kwargs.get("answerer")):
            from g2u.demo import ensure_demo_checkpoint

            checkpoint = str(ensure_demo_checkpoint(backend or "qwen_image_edit"))
        return cls(load_backend(checkpoint, backend, **kwargs), library=library, writer_config=writer_config,
                   thought_cache=ThoughtCache.from_env() if cache == "env" else cache, judge=judge, routes=routes)

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
        out = {"backend": info.backend, "checkpoint": info.checkpoint, "demo": info.demo,
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
        self.backend.validate_edit(replace(req.edit, size=self._edit_size(req)))

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
                scores = fidelity(requests[i].image, out.image)
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
        answers = self._answer_grouped(contents, [replace(requests[i].answer, return_scores=True) for i in gated])
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
        scores = fidelity(req.image, req.thought)
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
        leak = find_leak(chosen.text, req.options, req.gold_answer)
        if leak:
            raise InputError("prompt" if req.prompt else "prompt_name", f"leaks the answer: {leak}")
        return chosen

    def _edit_size(self, req: G2URequest) -> tuple[int, int]:
        if req.edit.size is not None:
            return check_edit_size(req.edit.size, self.backend.size_multiple)
        return working_size(*req.image.size, self.backend.default_edit_area, self.backend.size_multiple)

    def _edit_record(self, req: G2URequest) -> EditRecord:
        fallback, reason, writer = False, None, req.writer
        if req.writer == "library":
            chosen = self._library_prompt(req)
        elif req.writer == "route":
            _, chosen = self.routes.pick(req.question, self.library, req.family)
            leak = find_leak(chosen.text, req.options, req.gold_answer)
            if leak:  # a library prompt never names an answer; should one do, the family default stands in
                chosen, fallback, reason = self.library.default(chosen.family or "enhancement"), True, f"leak: {leak}"
        else:
            written = self._writer(req.writer).write(req.image, req.question, req.options, req.family,
                                                     answer=req.gold_answer)
            chosen, fallback, reason = written.prompt, written.fallback, written.fallback_reason
        return self._record(req, chosen, writer, fallback, reason)

    def _record(self, req: G2URequest, chosen: EditPrompt, writer: str, fallback: bool = False,
                reason: str | None = None) -> EditRecord:
        e = req.edit
        return EditRecord(prompt=chosen.text, prompt_name=chosen.name, family=chosen.family, writer=writer,
                          steps=e.steps, text_cfg=e.text_cfg, image_cfg=e.image_cfg, seed=e.seed,
                          size=self._edit_size(req), writer_fallback=fallback, writer_fallback_reason=reason,
                          options=dict(e.options))

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

        # 1. Modes that reason in text write their reasoning first (one batched pass).
        reasoning: dict[int, str] = {}
        cot = [i for i in live if "R" in (MODES[requests[i].mode].parts or ())]
        cot_ms = 0.0
        if cot:
            start = time.perf_counter()
            contents = [[requests[i].image, f"{self._question(requests[i])}\n{COT_INSTRUCTION}"] for i in cot]
            texts = self._answer_grouped(contents, [AnswerParams(max_new_tokens=COT_MAX_NEW_TOKENS)] * len(cot))
            reasoning = dict(zip(cot, texts))
            cot_ms = (time.perf_counter() - start) * 1000

        # 2. Each answer prompt in its mode's order: [I, q, Î], [Î, q], [I, q], [I, q, reasoning]; a request
        #    with candidate thoughts gets one prompt per candidate (and, to vote, its baseline's).
        jobs: list[tuple[int, int | None]] = []  # (request, candidate; None: its one answer / "-1": baseline)
        contents, params = [], []
        for i in live:
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

        # 3. Stage II, batched.
        start = time.perf_counter()
        answers = self._answer_grouped(contents, params) if jobs else []
        understand_ms = (time.perf_counter() - start) * 1000
        by_job = dict(zip(jobs, answers))

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
                                     thought=thought, reasoning=reasoning.get(i), id=req.id, gate=gate, **extra))
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

    def _question(self, req: G2URequest) -> str:
        return format_question(req.question, req.options)

    def _contents(self, req: G2URequest, thought: Thought | None, reasoning: str | None) -> list[Any]:
        """The mode's parts in order; consecutive text parts are joined, and the answer instruction ends
        the last text part."""
        mode = MODES[req.mode]
        texts = {"q": self._question(req), "R": f"Reasoning: {reasoning}"}
        images = {"I": req.image}
        if thought is not None:
            images["T"] = self.backend.thought_part(thought.image, mode)
        order = mode.parts or req.order
        last_text = max(i for i, k in enumerate(order) if k in texts)
        parts: list[Any] = []
        for i, key in enumerate(order):
            if key in texts:
                text = texts[key] + ("\n" + (MCQ_INSTRUCTION if req.options else OPEN_INSTRUCTION)
                                     if i == last_text else "")
                if parts and isinstance(parts[-1], str):
                    parts[-1] = f"{parts[-1]}\n{text}"
                else:
                    parts.append(text)
            else:
                parts.append(images[key])
        return parts

    def _answer_grouped(self, contents: list[list[Any]], params: list[AnswerParams]) -> list[str | Answer]:
        """One backend call per distinct AnswerParams (requests almost always share one). An item whose
        params ask for scores gets an ``Answer``, the others a text."""
        out: list[str | Answer | None] = [None] * len(contents)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault((p.max_new_tokens, p.temperature, p.return_scores), []).append(i)
        for idx in groups.values():
            texts = self.backend.answer([contents[i] for i in idx], params[idx[0]])
            for i, text in zip(idx, texts):
                out[i] = text
        return out  # type: ignore[return-value]


def _text(answer: str | Answer) -> str:
    return answer.text if isinstance(answer, Answer) else answer
