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
from g2u.budget import WorkBudget, check_budget
from g2u.errors import InputError
from g2u.fidelity import edit_magnitude
from g2u.modes import MODES
from g2u.prompts import PromptLibrary, default_library, prompt_leak
from g2u.types import AnswerParams, EditRecord, G2URequest, Thought, Turn

MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."
COT_INSTRUCTION = "Think step by step about the image and write your reasoning. Do not give the final answer yet."
ORIGINAL_LABEL = "The original image:"
THOUGHT_LABEL = "An edited view of the image, made to help answer the question:"
ENHANCE_FIRST = "Enhance the image first."
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
    layout: str | None = None
    """The stage-II layout a thought mode used (None: a mode without a thought)."""
    stage2: dict[str, Any] | None = None
    """How stage II sized the request's images (one size for I and Î; ``g2u.sizing``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result (the thought image itself is left to the caller: PNG file or base64)."""
        out: dict[str, Any] = {"answer": self.answer, "mode": self.mode}
        if self.id is not None:
            out["id"] = self.id
        out["edit"] = self.thought.edit.to_dict() if self.thought else None
        out["fidelity"] = self.thought.fidelity if self.thought else None
        if self.reasoning is not None:
            out["reasoning"] = self.reasoning
        out["layout"] = self.layout
        out["stage2"] = self.stage2
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
                 budget: WorkBudget | None = None):
        self.backend = backend
        self.budget = budget or WorkBudget.for_backend(backend.default_edit_area)
        """Per-request work budget (``g2u.budget``): requests over it are refused before any work."""
        self.library = library or default_library()
        self.writer_config = writer_config
        """``g2u.writers.WriterConfig`` for the openai/self writers (None: read from the environment)."""
        self._writers: dict[str, Any] = {}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | None = None, backend: str | None = None, **kwargs) -> G2UPipeline:
        """Load a checkpoint (folder or hub id); none at all: the embedded demo checkpoint of ``backend``."""
        library, writer_config = kwargs.pop("library", None), kwargs.pop("writer_config", None)
        budget = kwargs.pop("budget", None)
        if checkpoint is None and not (kwargs.get("editor") or kwargs.get("answerer")):
            from g2u.demo import ensure_demo_checkpoint

            checkpoint = str(ensure_demo_checkpoint(backend or "qwen_image_edit"))
        return cls(load_backend(checkpoint, backend, **kwargs), library=library, writer_config=writer_config,
                   budget=budget)

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
            check_budget(req, None, self.budget)
            return
        if req.writer == "library":
            self._library_prompt(req)
        size = self._plan(req).size
        self.backend.validate_edit(replace(req.edit, size=size))
        check_budget(req, size, self.budget)

    # ------------------------------------------------------------------ stage I
    def imagine(self, requests: Sequence[G2URequest]) -> list[Thought | None]:
        """Stage I for the requests whose mode needs a thought; ``None`` for the others."""
        for req in requests:
            self.check(req)
        todo = [i for i, r in enumerate(requests) if MODES[r.mode].needs_thought]
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
        outputs = self.backend.edit([requests[i].image for i in todo], [r.prompt for r in records], params)
        edit_ms = (time.perf_counter() - start) * 1000

        # 3. Edit magnitude of each Î against its I (SSIM/PSNR; the judged fidelity is the evaluation's).
        for k, i in enumerate(todo):
            records[k].plan = outputs[k].plan
            start = time.perf_counter()
            scores = edit_magnitude(requests[i].image, outputs[k].image)
            timings = {"write_prompt": write_ms[k], "edit": edit_ms, "fidelity": (time.perf_counter() - start) * 1000}
            thoughts[i] = Thought(image=outputs[k].image, edit=records[k], fidelity=scores, timings_ms=timings)
        return thoughts

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
        else:
            written = self._writer(req.writer).write(req.image, req.question, req.options, req.family,
                                                     answer=req.gold_answer)
            chosen, fallback, reason = written.prompt, written.fallback, written.fallback_reason
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
            if MODES[req.mode].needs_thought and thought is None:
                raise InputError("mode", f"{req.mode} needs a thought: run imagine() first")

        # 1. Modes that reason in text write their reasoning first (one batched pass). A backend with its
        #    own reasoning format (BAGEL's think prompt) reasons and answers in one go.
        reasoning: dict[int, str] = {}
        answered: dict[int, str] = {}
        cot = [i for i, r in enumerate(requests) if "R" in (MODES[r.mode].parts or ())]
        cot_ms = 0.0
        if cot:
            start = time.perf_counter()
            think_answer = getattr(self.backend, "think_answer", None)
            for i in cot:
                req = requests[i]
                if think_answer is not None:
                    [(reasoning[i], answered[i])] = think_answer(
                        [[req.image, f"{self._question(req)}\n{self._instruction(req)}"]], req.answer,
                        max_think_tokens=req.reasoning_tokens)
            todo = [i for i in cot if i not in answered]
            contents = [[requests[i].image, f"{self._question(requests[i])}\n{COT_INSTRUCTION}"] for i in todo]
            texts, _ = self._answer_grouped(contents, [replace(requests[i].answer, max_new_tokens=requests[i]
                                                               .reasoning_tokens) for i in todo])
            reasoning.update(zip(todo, texts))
            cot_ms = (time.perf_counter() - start) * 1000

        # 2. Each answer prompt in its mode's order: [I, q, Î], [Î, q], [I, q], [I, q, reasoning].
        rest = [i for i in range(len(requests)) if i not in answered]
        contents = [self._contents(requests[i], thoughts[i], reasoning.get(i)) for i in rest]

        # 3. Stage II, batched; the backend reports how it sized each request's images.
        start = time.perf_counter()
        texts, stage2 = self._answer_grouped(contents, [requests[i].answer for i in rest])
        answers = {**answered, **dict(zip(rest, texts))}
        stage2_of = dict(zip(rest, stage2))
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
                                     thought=thought, reasoning=reasoning.get(i), id=req.id,
                                     layout=req.layout if MODES[req.mode].needs_thought else None,
                                     stage2=stage2_of.get(i)))
        return results

    def _question(self, req: G2URequest) -> str:
        return format_question(req.question, req.options)

    @staticmethod
    def _instruction(req: G2URequest) -> str:
        return MCQ_INSTRUCTION if req.options else OPEN_INSTRUCTION

    def _contents(self, req: G2URequest, thought: Thought | None, reasoning: str | None) -> list[Any]:
        """The answer prompt. Modes with fixed parts (and the ``paper`` layout, in ``order``) lay them out
        in turn: consecutive text parts are joined, and the answer instruction ends the last text part.
        ``labelled`` introduces each image and puts the question last; ``multiturn`` is the authors'
        concat variant: user [I, q + enhance first], assistant [Î], user [I, q]."""
        mode = MODES[req.mode]
        instruction = self._instruction(req)
        question = self._question(req)
        thought_part = self.backend.thought_part(thought.image, mode) if thought is not None else None
        if mode.parts is None and req.layout == "labelled":
            return [ORIGINAL_LABEL, req.image, THOUGHT_LABEL, thought_part, f"{question}\n{instruction}"]
        if mode.parts is None and req.layout == "multiturn":
            return [req.image, f"{question}\n{ENHANCE_FIRST}", Turn("assistant"), thought_part, Turn("user"),
                    req.image, f"{question}\n{instruction}"]
        texts = {"q": question, "R": f"Reasoning: {reasoning}"}
        images = {"I": req.image, "T": thought_part}
        order = mode.parts or req.order
        last_text = max(i for i, k in enumerate(order) if k in texts)
        parts: list[Any] = []
        for i, key in enumerate(order):
            if key in texts:
                text = texts[key] + (f"\n{instruction}" if i == last_text else "")
                if parts and isinstance(parts[-1], str):
                    parts[-1] = f"{parts[-1]}\n{text}"
                else:
                    parts.append(text)
            else:
                parts.append(images[key])
        return parts

    def _answer_grouped(self, contents: list[list[Any]],
                        params: list[AnswerParams]) -> tuple[list[str], list[dict | None]]:
        """One backend call per distinct AnswerParams (requests almost always share one); returns the
        answers and, per request, how the backend sized its stage-II images."""
        out: list[str | None] = [None] * len(contents)
        sizing: list[dict | None] = [None] * len(contents)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault((p.max_new_tokens, p.temperature, p.stage2_max_pixels), []).append(i)
        for idx in groups.values():
            texts = self.backend.answer([contents[i] for i in idx], params[idx[0]])
            records = list(getattr(self.backend, "last_stage2", None) or [None] * len(idx))
            for k, (i, text) in enumerate(zip(idx, texts)):
                out[i] = text
                sizing[i] = records[k] if k < len(records) else None
        return out, sizing  # type: ignore[return-value]
