"""What a request costs stage II before any work: its prompt in tokens, and batches whose padding cannot
multiply that cost.

Stage II pads every prompt of a batched call to the longest one, and attention memory grows with the
square of that length: a 12k-token request took 0.6 GB alone and 6.2 GB batched with a short one, a
120k-token one got the worker OOM-killed. So each request's prompt is counted from its text (the answer
model's own tokenizer) and its images (the stage-II sizing the backend will apply, in the processor's
patch tokens), refused past the model's positions or the server's ``max_prompt_tokens``
(``g2u.budget``), and ``plan_groups`` splits a batch so that no group's padded size (requests × longest
prompt) exceeds ``max_batch_tokens``, nor its stage-I work one request's ``max_edit_work``, and requests
of very different stage-I work (``WORK_BAND``) run apart. Groups run cheapest first: a cheap batch-mate is
computed before a costly one starts, and its answer's bytes leave then (``g2u.serving.send_early``; TorchServe
completes the HTTP response with the batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from g2u.modes import MODES
from g2u.types import G2URequest

TURN_OVERHEAD = 16
"""Chat-template tokens per turn (role markers, vision markers), counted generously."""
PATCH_FACTOR = 28
"""Pixels per side of one image token where the processor does not say (Qwen2/2.5-VL: 14 × merge 2)."""
FALLBACK_IMAGE_TOKENS = 1280
"""Tokens per image for a processor without a known sizing rule (LLaVA-like: 576..2880)."""


@dataclass(frozen=True)
class PromptCost:
    """Stage-II prompt of one request: tokens of its longest prompt, and how many prompts it sends."""

    text: int
    images: int
    image_count: int
    passes: int
    """Answer prompts the request sends (candidates, the agreement or gate baseline, the reasoning pass)."""

    @property
    def tokens(self) -> int:
        return self.text + self.images

    @property
    def padded(self) -> int:
        """Tokens the request adds to a batched call (each pass is one padded row)."""
        return self.tokens * self.passes


def tokenizer_of(backend: Any) -> Any:
    """The answer model's tokenizer (None when the backend exposes none)."""
    for owner in (backend, getattr(backend, "pipe", None)):
        for name in ("processor", "tokenizer"):
            obj = getattr(owner, name, None) if owner is not None else None
            if obj is not None:
                return getattr(obj, "tokenizer", obj)
    return None


def max_positions(backend: Any) -> int | None:
    """The answer model's position limit (``max_position_embeddings``), where it has one."""
    model = getattr(backend, "answer_model", None)
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        value = getattr(cfg, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def count_text(backend: Any, text: str) -> int:
    tok = tokenizer_of(backend)
    if tok is None:  # byte-level tokenizers spend at most one token per byte; most text about 1 per 2-4
        return math.ceil(len(text.encode("utf-8")) / 2)
    return len(tok(text, add_special_tokens=False)["input_ids"])


def image_tokens(backend: Any, size: tuple[int, int], cap: int | None) -> int:
    """Tokens of one stage-II image of ``size`` under the backend's sizing (all of a request's images take
    the first one's size)."""
    sizing = backend.stage2_sizing(cap) if hasattr(backend, "stage2_sizing") else None
    if sizing is None:
        return FALLBACK_IMAGE_TOKENS
    w, h = sizing.plan(size).size
    factor = getattr(sizing.limits, "multiple", PATCH_FACTOR) or PATCH_FACTOR
    return max(1, (w // factor) * (h // factor))


def prompt_cost(backend: Any, req: G2URequest) -> PromptCost:
    """The stage-II prompt ``req`` will send, counted before any work (``g2u.answer_prompt`` lays it out)."""
    from g2u.answer_prompt import COT_INSTRUCTION, ORIGINAL_LABEL, THOUGHT_LABEL, format_question, layouts

    mode = MODES[req.mode]
    question = format_question(req.question, req.options)
    q_tokens = count_text(backend, question)
    images, turns, text = 1, 1, q_tokens + 24  # the image, the question, the answer instruction
    passes = 1
    if mode.needs_thought:
        if mode.parts is None and req.layout == "multiturn":  # user [I, q + suffix], assistant [Î], user [I, q]
            suffix = count_text(backend, layouts()["multiturn"]["enhance_first_suffix"])
            images, turns, text = 3, 3, 2 * q_tokens + suffix + 32
        else:
            images, text = 2, text + (count_text(backend, ORIGINAL_LABEL + THOUGHT_LABEL)
                                      if req.layout == "labelled" else 0)
        candidates = req.strategy.candidates if req.thought is None else 1
        passes = candidates + (1 if candidates > 1 and req.strategy.selection == "agreement" else 0)
    if "R" in (mode.parts or ()):
        # the reasoning pass, then the answer read with the reasoning (at most reasoning_tokens long)
        text = max(text, q_tokens + count_text(backend, COT_INSTRUCTION)) + req.reasoning_tokens
        passes += 1
    if req.strategy.gate == "confidence" and mode.needs_thought:
        passes += 1
    per_image = image_tokens(backend, req.image.size, req.answer.stage2_max_pixels)
    image_total = per_image * images
    if mode.needs_thought and req.answer.stage2_sizing != "shared":  # the thought is read at its own size
        size = req.thought.size if req.thought is not None else backend.plan_edit_size(
            req.image.size, size=req.edit.size, area=req.edit.area).size
        image_total += max(0, image_tokens(backend, size, req.answer.stage2_max_pixels) - per_image)
    return PromptCost(text=text + TURN_OVERHEAD * turns, images=image_total, image_count=images,
                      passes=passes)


WORK_BAND = 2.0
"""Items share a group only while the costliest one's stage-I work is at most this many times the
cheapest one's (items without stage I group apart): a cheap item never waits for a costly one."""


def plan_groups(costs: Sequence[tuple[int, int, int, float]], max_batch_tokens: int,
                max_edit_work: float) -> list[list[int]]:
    """Positions of a batch's valid items, grouped: ``costs`` holds (position, prompt tokens, prompt passes,
    stage-I work) per item. In each group, rows (passes) × the longest prompt stay within
    ``max_batch_tokens``, the summed stage-I work within ``max_edit_work`` (an item over either runs alone)
    and the works within ``WORK_BAND`` of each other. Groups come cheapest first; items keep their order
    inside a group."""
    def fits(group: list[tuple[int, int, int, float]], item: tuple[int, int, int, float]) -> bool:
        group = [*group, item]
        rows, longest = sum(c[2] for c in group), max(c[1] for c in group)
        work, cheapest = sum(c[3] for c in group), min(c[3] for c in group)
        same_band = item[3] == cheapest or (cheapest > 0 and item[3] <= WORK_BAND * cheapest)
        return rows * longest <= max_batch_tokens and (work <= max_edit_work or work == 0) and same_band

    groups: list[list[tuple[int, int, int, float]]] = []
    for item in sorted(costs, key=lambda c: (c[3], c[1] * c[2], c[0])):  # first fit, cheapest first
        target = next((g for g in groups if fits(g, item)), None)
        if target is None:
            groups.append([item])
        else:
            target.append(item)
    return [sorted(c[0] for c in group) for group in groups]


__all__ = ["PromptCost", "count_text", "image_tokens", "max_positions", "plan_groups", "prompt_cost",
           "tokenizer_of"]
