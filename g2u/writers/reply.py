"""The writer's contract in one place: what it is asked (system prompt, the request's text) and the only
reply accepted ({"prompt", "family"}). Both writers share it, so their outputs are validated alike."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from g2u.prompts import MAX_PROMPT_CHARS
from g2u.types import FAMILIES

SYSTEM_PROMPT = (
    "You decide what a visual 'thought' should show before a model answers a question about an image. "
    "Write ONE instruction for an image-editing model that makes the image easier to reason about for the "
    "question. Choose its family: 'enhancement' (deblur, denoise, relight or fix the exposure, raise the "
    "contrast, zoom on a detail) or 'extension' (outpaint beyond the border, change the viewpoint, rotate, "
    "remove an occluder, continue a pattern or sequence, show the next step). The instruction must never "
    "state, hint at or name the answer. Reply with a JSON object "
    '{"prompt": "<the edit instruction>", "family": "enhancement" or "extension"} and nothing else.'
)

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A bare instruction line (the self writer's model may skip the JSON): plain English words and punctuation.
_PLAIN_LINE = re.compile(r"[A-Za-z][A-Za-z0-9 ,.;:'\"()/%-]*")
_LABEL = re.compile(r"^(reply|prompt|instruction|edit)\s*:\s*", re.IGNORECASE)


class MalformedOutput(ValueError):
    """The writer's reply is not one valid edit prompt; the message says why."""


def request_text(question: str, options: Sequence[str] | None = None, family: str | None = None) -> str:
    """The request as the writer reads it (after the image)."""
    lines = [f"Question: {question}"]
    if options:
        lines.append("Options: " + "  ".join(f"{_LETTERS[i]}. {o}" for i, o in enumerate(options)))
    if family:
        lines.append(f"Family: {family} (required)")
    return "\n".join(lines)


def exemplar_reply(prompt: str, family: str) -> str:
    return json.dumps({"prompt": prompt, "family": family})


def parse_reply(text: str | None, family: str | None = None, plain_ok: bool = False) -> tuple[str, str]:
    """(prompt, family) from a reply: the first JSON object in it, or with ``plain_ok`` a bare instruction
    line (given the requested family, else enhancement). ``family`` is the requested family: a reply of
    another family is rejected. Raises MalformedOutput."""
    if not text or not text.strip():
        raise MalformedOutput("empty reply")
    data = first_json_object(text)
    if data is None:
        line = plain_instruction(text) if plain_ok else None
        if line is None:
            raise MalformedOutput(f"no JSON object in the reply ({_preview(text)})")
        data = {"prompt": line, "family": family or FAMILIES[0]}
    prompt, written = data.get("prompt"), data.get("family") or family
    if not isinstance(prompt, str) or len(prompt.strip()) < 3:
        raise MalformedOutput("'prompt' must be a non-empty string")
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_CHARS or _CONTROL.search(prompt):
        raise MalformedOutput(f"'prompt' must be at most {MAX_PROMPT_CHARS} printable characters")
    if written not in FAMILIES:
        raise MalformedOutput(f"'family' must be one of {', '.join(FAMILIES)}, got {written!r}")
    if family is not None and written != family:
        raise MalformedOutput(f"'family' is {written!r} but {family!r} was requested")
    return prompt, written


def first_json_object(text: str, max_tries: int = 50) -> dict | None:
    """The first {...} in ``text`` that parses as a JSON object (braces inside strings are fine)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(max_tries):
        if start < 0:
            return None
        try:
            value, _end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def plain_instruction(text: str) -> str | None:
    """The first line when it reads as a plain instruction (>= 3 words of ASCII text, no markup): random or
    broken model output almost never does."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip().strip('"').strip()
    if _PLAIN_LINE.fullmatch(line) and len(line.split()) >= 3 and len(line) <= MAX_PROMPT_CHARS:
        return line
    return None


def _preview(text: str, n: int = 60) -> str:
    short = text.strip()
    return repr(short[:n] + ("…" if len(short) > n else ""))
