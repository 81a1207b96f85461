"""The G→U loop: imagine (stage I), then understand (stage II).

    Î = M_G(I, q; p_edit)     stage I  — the backend's editing pathway makes a visual thought
    a = M_U(I, q, Î)          stage II — the understanding pathway answers from [I, q, Î]

Modes: ``baseline`` (stage I never runs), ``g2u`` (default), ``replace`` (the answer model sees Î
only), ``textual_cot`` (a written reasoning instead of an image). Everything is batched: one call
handles many requests, one backend call per stage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from g2u.backends import Backend, load_backend
from g2u.errors import InputError
from g2u.fidelity import fidelity
from g2u.images import check_edit_size, working_size
from g2u.prompts import PromptLibrary, default_library, find_leak
from g2u.requests import G2URequest
from g2u.types import MODES, AnswerParams, ContentPart, EditRecord, Thought

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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result (the thought image itself is left to the caller: PNG file or base64)."""
        out: dict[str, Any] = {"answer": self.answer, "mode": self.mode}
        if self.id is not None:
            out["id"] = self.id
        out["edit"] = self.thought.edit.to_dict() if self.thought else None
        out["fidelity"] = self.thought.fidelity if self.thought else None
        if self.reasoning is not None:
            out["reasoning"] = self.reasoning
        out["timings_ms"] = self.timings_ms
        out["model"] = self.model
        return out


def format_question(question: str, options: Sequence[str] | None) -> str:
    """The question as the answer model reads it (VLMEvalKit/lmms-eval MCQ style)."""
    if not options:
        return question
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lines = [question, *(f"{letters[i]}. {opt}" for i, opt in enumerate(options))]
    return "\n".join(lines)


class G2UPipeline:
    """Runs G→U requests on one backend. The TorchServe handler, the CLI and the evaluation all call
    ``imagine`` and ``understand`` (or ``__call__``, which is both)."""

    def __init__(self, backend: Backend, library: PromptLibrary | None = None, writer_config: Any = None):
        self.backend = backend
        self.library = library or default_library()
        self.writer_config = writer_config
        """``g2u.writers.WriterConfig`` for the openai/self writers (None: read from the environment)."""
        self.modes = MODES + tuple(backend.extra_modes)
        self._writers: dict[str, Any] = {}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | None = None, backend: str | None = None, **kwargs) -> G2UPipeline:
        library, writer_config = kwargs.pop("library", None), kwargs.pop("writer_config", None)
        return cls(load_backend(checkpoint, backend, **kwargs), library=library, writer_config=writer_config)

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

    # ------------------------------------------------------------------ stage I
    def imagine(self, requests: Sequence[G2URequest]) -> list[Thought | None]:
        """Stage I for the requests whose mode needs a thought; ``None`` for the others."""
        for req in requests:
            self.check(req)
        todo = [i for i, r in enumerate(requests) if r.mode not in ("baseline", "textual_cot")]
        thoughts: list[Thought | None] = [None] * len(requests)
        if not todo:
            return thoughts

        # 1. Decide what to imagine: the edit prompt of each request (library or a writer, leak-guarded).
        records, write_ms = [], []
        for i in todo:
            start = time.perf_counter()
            records.append(self._edit_record(requests[i]))
            write_ms.append((time.perf_counter() - start) * 1000)

        # 2. Stage I, batched: the backend groups compatible items itself.
        params = [replace(requests[i].edit, size=rec.size) for i, rec in zip(todo, records)]
        start = time.perf_counter()
        images = self.backend.edit([requests[i].image for i in todo], [r.prompt for r in records], params)
        edit_ms = (time.perf_counter() - start) * 1000
        plans = getattr(self.backend, "last_plans", None) or [None] * len(todo)
        for rec, plan in zip(records, plans):
            rec.plan = plan

        # 3. Fidelity of each Î against its I.
        for k, i in enumerate(todo):
            start = time.perf_counter()
            scores = fidelity(requests[i].image, images[k])
            timings = {"write_prompt": write_ms[k], "edit": edit_ms,
                       "fidelity": (time.perf_counter() - start) * 1000}
            thoughts[i] = Thought(image=images[k], edit=records[k], fidelity=scores, timings_ms=timings)
        return thoughts

    def check(self, req: G2URequest) -> None:
        """Per-request checks that need the backend or the prompt library (mode, prompt, leak, size).
        Raises InputError; callers that batch (the TorchServe handler) run it per item first, so one
        bad item never reaches a batched stage."""
        if req.mode not in self.modes:
            raise InputError("mode", f"must be one of {', '.join(self.modes)} for this backend; got {req.mode!r}")
        if req.mode in ("baseline", "textual_cot"):
            return
        if req.writer == "library":
            self._library_prompt(req)
        self.backend.validate_edit(replace(req.edit, size=self._edit_size(req)))

    def _library_prompt(self, req: G2URequest):
        chosen = self.library.resolve(req.prompt, req.prompt_name, req.family)
        leak = find_leak(chosen.text, req.options, req.gold_answer)
        if leak:
            raise InputError("prompt" if req.prompt else "prompt_name", f"leaks the answer: {leak}")
        return chosen

    def _edit_size(self, req: G2URequest) -> tuple[int, int]:
        plan_edit_size = getattr(self.backend, "plan_edit_size", None)
        if plan_edit_size is not None:  # the backend's own rule and limits (g2u.sizing), issue 13
            return plan_edit_size(req.image.size, size=req.edit.size, area=req.edit.area).size
        if req.edit.size is not None:
            return check_edit_size(req.edit.size, self.backend.size_multiple)
        area = req.edit.area or self.backend.default_edit_area
        return working_size(*req.image.size, area, self.backend.size_multiple)

    def _edit_record(self, req: G2URequest) -> EditRecord:
        fallback, reason, writer = False, None, req.writer
        if req.writer == "library":
            chosen = self._library_prompt(req)
        else:
            written = self._writer(req.writer).write(req.image, req.question, req.options, req.family,
                                                     answer=req.gold_answer)
            chosen, fallback, reason = written.prompt, written.fallback, written.fallback_reason
        size = self._edit_size(req)
        e = req.edit
        return EditRecord(prompt=chosen.text, prompt_name=chosen.name, family=chosen.family, writer=writer,
                          steps=e.steps, text_cfg=e.text_cfg, image_cfg=e.image_cfg, seed=e.seed, size=size,
                          writer_fallback=fallback, writer_fallback_reason=reason, think=e.think)

    def _writer(self, name: str):
        if name not in self._writers:
            from g2u.writers import make_writer

            self._writers[name] = make_writer(name, backend=self.backend, library=self.library,
                                              config=self.writer_config)
        return self._writers[name]

    # ------------------------------------------------------------------ stage II
    def understand(self, requests: Sequence[G2URequest], thoughts: Sequence[Thought | None]) -> list[G2UResult]:
        """Stage II: answer every request from the parts its mode allows, batched."""
        # 1. Textual CoT writes its reasoning first (one batched pass over those requests).
        reasoning: dict[int, str] = {}
        cot = [i for i, r in enumerate(requests) if r.mode == "textual_cot"]
        cot_ms = 0.0
        if cot:
            start = time.perf_counter()
            contents = [[requests[i].image, f"{self._question(requests[i])}\n{COT_INSTRUCTION}"] for i in cot]
            texts = self._answer_grouped(contents, [AnswerParams(max_new_tokens=COT_MAX_NEW_TOKENS)] * len(cot))
            reasoning = dict(zip(cot, texts))
            cot_ms = (time.perf_counter() - start) * 1000

        # 2. Build each answer prompt in its mode's order: [I, q, Î], [Î, q], [I, q].
        contents = [self._contents(r, t, reasoning.get(i)) for i, (r, t) in enumerate(zip(requests, thoughts))]

        # 3. Stage II, batched.
        start = time.perf_counter()
        answers = self._answer_grouped(contents, [r.answer for r in requests])
        understand_ms = (time.perf_counter() - start) * 1000

        # 4. Assemble the results.
        results = []
        for i, (req, thought) in enumerate(zip(requests, thoughts)):
            timings = dict(thought.timings_ms) if thought else {}
            if i in reasoning:
                timings["reasoning"] = cot_ms
            timings["understand"] = understand_ms
            timings = {k: round(v, 2) for k, v in timings.items()}
            timings["total"] = round(sum(timings.values()), 2)
            results.append(G2UResult(answer=answers[i], mode=req.mode, model=self.model_info, timings_ms=timings,
                                     thought=thought, reasoning=reasoning.get(i), id=req.id))
        return results

    def _question(self, req: G2URequest) -> str:
        return format_question(req.question, req.options)

    def _contents(self, req: G2URequest, thought: Thought | None, reasoning: str | None) -> list[ContentPart]:
        instruction = MCQ_INSTRUCTION if req.options else OPEN_INSTRUCTION
        question = f"{self._question(req)}\n{instruction}"
        if req.mode == "baseline":
            return [req.image, question]
        if req.mode == "textual_cot":
            return [req.image, f"{self._question(req)}\nReasoning: {reasoning}\n{instruction}"]
        assert thought is not None, f"mode {req.mode} needs a thought from imagine()"
        if req.mode == "replace":
            return [thought.image, question]
        parts: dict[str, ContentPart] = {"I": req.image, "q": question, "T": thought.image}
        if req.mode == "vae_concat":  # BAGEL ablation: the thought enters as VAE features
            parts["T"] = self.backend.vae_thought(thought.image)
        return [parts[k] for k in req.order]

    def _answer_grouped(self, contents: list[list[ContentPart]], params: list[AnswerParams]) -> list[str]:
        """One backend call per distinct AnswerParams (requests almost always share one)."""
        out: list[str | None] = [None] * len(contents)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault((p.max_new_tokens, p.temperature), []).append(i)
        for idx in groups.values():
            texts = self.backend.answer([contents[i] for i in idx], params[idx[0]])
            for i, text in zip(idx, texts):
                out[i] = text
        return out  # type: ignore[return-value]


def thought_image(result: G2UResult) -> Image.Image | None:
    return result.thought.image if result.thought else None
