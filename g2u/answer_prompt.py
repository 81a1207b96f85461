"""The stage-II prompt: how the question, the original image I, the thought Î and a written reasoning are
laid out for the answer model, per mode (``g2u.modes``) and per ``layout``.

    paper      [I, q, Î] in the request's ``order`` (the paper writes [I, q, Î]; ``lmms_eval``: [I, Î, q])
    labelled   "The original image:" I, "An edited view ...:" Î, then question and instruction
    multiturn  user [I, q + " Please enhance the image first …"], assistant [Î], user [I, q]: the authors'
               concat variant for their Ming model, its strings verbatim (``g2u/data/answer_layouts.yaml``)

``replace`` with ``replace_min_psnr`` is the authors' variant: Î only when PSNR(Î, I) exceeds the threshold,
else I (``g2u.replace_gate``). ``answer_prompt_record`` says which order and which image a result used.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from g2u.modes import MODES
from g2u.replace_gate import replace_record, replace_source
from g2u.types import G2URequest, Thought, Turn

MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."
COT_INSTRUCTION = "Think step by step about the image and write your reasoning. Do not give the final answer yet."
ORIGINAL_LABEL = "The original image:"
THOUGHT_LABEL = "An edited view of the image, made to help answer the question:"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@lru_cache(maxsize=1)
def layouts() -> dict[str, Any]:
    """``g2u/data/answer_layouts.yaml``: the multiturn strings and the named orders."""
    return yaml.safe_load(resources.files("g2u.data").joinpath("answer_layouts.yaml").read_text())


def named_orders() -> dict[str, tuple[str, ...]]:
    return {name: tuple(order) for name, order in layouts()["orders"].items()}


def format_question(question: str, options: Sequence[str] | None) -> str:
    """The question as the answer model reads it (VLMEvalKit/lmms-eval MCQ style)."""
    if not options:
        return question
    return "\n".join([question, *(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options))])


def instruction(req: G2URequest) -> str:
    return MCQ_INSTRUCTION if req.options else OPEN_INSTRUCTION


def question_and_tail(req: G2URequest) -> tuple[str, str]:
    """The question text and the instruction that ends the prompt's last text part. A protocol's
    ``prompt_text`` is the whole question text, its instruction included: nothing is added to it."""
    if req.prompt_text is not None:
        return req.prompt_text, ""
    return format_question(req.question, req.options), instruction(req)


def _joined(text: str, tail: str) -> str:
    return f"{text}\n{tail}" if tail else text


def cot_prompt(req: G2URequest, final: bool = False) -> str:
    """The text of a reasoning pass: write the reasoning only, or (``final``: a backend that reasons and
    answers in one decode, BAGEL's think prompt) the question with its answer instruction."""
    question, tail = question_and_tail(req)
    return _joined(question, tail) if final else f"{question}\n{COT_INSTRUCTION}"


def answer_contents(req: G2URequest, thought: Thought | None, reasoning: str | None, backend: Any) -> list[Any]:
    """The answer prompt's parts. Modes with fixed parts (and the ``paper`` layout, in ``order``) lay them
    out in turn: consecutive text parts are joined, and the answer instruction ends the last text part.
    The thought enters as the backend makes it (``thought_part``: an image, or BAGEL's VAE latents)."""
    mode = MODES[req.mode]
    question, tail = question_and_tail(req)
    thought_part = backend.thought_part(thought.image, mode) if thought is not None else None
    if mode.parts is None and req.layout == "labelled":
        return [ORIGINAL_LABEL, req.image, THOUGHT_LABEL, thought_part, _joined(question, tail)]
    if mode.parts is None and req.layout == "multiturn":
        suffix = layouts()["multiturn"]["enhance_first_suffix"]
        return [Turn("user"), req.image, _joined(question, tail) + suffix, Turn("assistant"), thought_part,
                Turn("user"), req.image, _joined(question, tail)]
    texts = {"q": question, "R": f"Reasoning: {reasoning}"}
    images = {"I": req.image, "T": thought_part}
    if req.mode == "replace" and replace_source(_psnr(thought), req.replace_min_psnr) == "original":
        images["T"] = req.image  # the authors' variant: Î too far from I, answer from I
    order = mode.parts or req.order
    last_text = max(i for i, k in enumerate(order) if k in texts)
    parts: list[Any] = []
    for i, key in enumerate(order):
        if key in texts:
            text = _joined(texts[key], tail) if i == last_text else texts[key]
            if parts and isinstance(parts[-1], str):
                parts[-1] = f"{parts[-1]}\n{text}"
            else:
                parts.append(text)
        else:
            parts.append(images[key])
    return parts


def _psnr(thought: Thought | None) -> float | None:
    """PSNR(Î, I) of a thought, from its edit measures (``g2u.measures``)."""
    value = (thought.measures or {}).get("psnr") if thought is not None else None
    return float(value) if value is not None else None


def answer_prompt_record(req: G2URequest, thought: Thought | None) -> dict[str, Any] | None:
    """What the result reports about its answer prompt: the g2u order (and its name, where it has one) and,
    for ``replace`` with a threshold, which image was read. ``None`` when there is nothing to say."""
    out: dict[str, Any] = {}
    mode = MODES[req.mode]
    if mode.parts is None and req.layout == "paper":
        order = tuple(req.order)
        out["order"] = ",".join(order)
        out["order_name"] = next((n for n, o in named_orders().items() if o == order), None)
    if mode.parts is None and req.layout == "multiturn":
        out["layout_source"] = layouts()["multiturn"]["source"]
    if req.mode == "replace":
        record = replace_record(_psnr(thought), req.replace_min_psnr)
        if record is not None:
            out["replace"] = record
    return out or None
