"""What every writer shares: its settings, the exemplars, the reply parser and the leak guard.

A writer turns (image, question) into one edit prompt + its family. Whatever goes wrong — no key, a
timeout, a refused connection, a 5xx, a 429 past the budget, malformed output, a prompt that leaks the
answer — ends in the library prompt of the family, with the reason recorded: a prediction never fails
because its writer did.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from g2u.prompts import MAX_PROMPT_CHARS, EditPrompt, PromptLibrary, find_leak
from g2u.types import FAMILIES

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

SYSTEM_PROMPT = (
    "You decide what a visual 'thought' should show before a model answers a question about an image. "
    "Write ONE instruction for an image-editing model that makes the image easier to reason about for this "
    "question: either an enhancement (deblur, denoise, relight, raise contrast, zoom on a detail) or an "
    "extension (outpaint, another viewpoint, remove occluders, continue a pattern or sequence). The "
    "instruction must never state, hint at or name the answer or any answer option. Reply with a JSON object "
    '{"prompt": "<the edit instruction>", "family": "enhancement" | "extension"} and nothing else.'
)


class MalformedOutput(ValueError):
    """The writer's reply is not one valid edit prompt."""


@dataclass(frozen=True)
class WriterConfig:
    """Settings of the writers; ``from_env`` reads the standard OpenAI variables and G2U_WRITER_*."""

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key: str | None = None
    timeout_s: float = 10.0
    """Per HTTP attempt."""
    max_retries: int = 2
    budget_s: float = 20.0
    """The most one ``write`` may take, retries and Retry-After waits included."""
    exemplars: str | None = None
    """Path of an exemplar file (default: g2u/data/writer_exemplars.yaml)."""
    cache_size: int = 1024
    max_image_side: int = 512
    """The picture is sent at most this large (the writer needs the gist, not the pixels)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WriterConfig:
        env = dict(os.environ if env is None else env)

        def number(name: str, default: float, kind=float, low: float = 0.0) -> float:
            raw = env.get(name)
            if raw in (None, ""):
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None
            if not value >= low or value != value or value == float("inf"):
                raise ValueError(f"{name} must be a finite number >= {low}, got {raw!r}")
            return value

        return cls(model=env.get("G2U_WRITER_MODEL") or cls.model,
                   base_url=env.get("OPENAI_BASE_URL") or None,
                   api_key=env.get("OPENAI_API_KEY") or None,
                   timeout_s=number("G2U_WRITER_TIMEOUT_S", cls.timeout_s, low=0.01),
                   max_retries=int(number("G2U_WRITER_RETRIES", cls.max_retries, int)),
                   budget_s=number("G2U_WRITER_BUDGET_S", cls.budget_s, low=0.01),
                   exemplars=env.get("G2U_WRITER_EXEMPLARS") or None,
                   cache_size=int(number("G2U_WRITER_CACHE_SIZE", cls.cache_size, int)))


@dataclass(frozen=True)
class Exemplar:
    description: str
    question: str
    prompt: str
    family: str
    image: Path | None = None


@dataclass(frozen=True)
class ExemplarSet:
    exemplars: tuple[Exemplar, ...]
    digest: str
    """Hash of the file: a new exemplar set never reads the cache of another."""


@lru_cache(maxsize=8)
def load_exemplars(path: str | None = None) -> ExemplarSet:
    if path is None:
        text, source, folder = (resources.files("g2u.data").joinpath("writer_exemplars.yaml").read_text(),
                                "g2u/data/writer_exemplars.yaml", None)
    else:
        text, source, folder = Path(path).read_text(), str(path), Path(path).parent
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("exemplars"), list) or not data["exemplars"]:
        raise ValueError(f"exemplar file {source}: needs a non-empty 'exemplars' list")
    out = []
    for i, entry in enumerate(data["exemplars"]):
        where = f"exemplar file {source}, entry {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a mapping")
        for key in ("description", "question", "prompt", "family"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ValueError(f"{where}: field {key!r} must be a non-empty string")
        if entry["family"] not in FAMILIES:
            raise ValueError(f"{where}: family {entry['family']!r} is not one of {FAMILIES}")
        image = None
        if entry.get("image"):
            image = (folder or Path(".")) / entry["image"]
            if not image.is_file():
                raise ValueError(f"{where}: image {str(image)!r} does not exist")
        out.append(Exemplar(entry["description"].strip(), entry["question"].strip(), entry["prompt"].strip(),
                            entry["family"], image))
    return ExemplarSet(tuple(out), hashlib.sha256(text.encode()).hexdigest()[:16])


def exemplar_reply(ex: Exemplar) -> str:
    return json.dumps({"prompt": ex.prompt, "family": ex.family})


def parse_reply(text: str | None, requested_family: str | None) -> tuple[str, str]:
    """(prompt, family) from a writer's reply: a JSON object, possibly inside other text. Raises
    MalformedOutput with the reason."""
    if not text or not text.strip():
        raise MalformedOutput("empty reply")
    match = re.search(r"\{.*?\}", text, re.DOTALL)
    if not match:
        raise MalformedOutput("no JSON object in the reply")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise MalformedOutput(f"invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise MalformedOutput("the JSON is not an object")
    prompt, family = data.get("prompt"), data.get("family") or requested_family
    if not isinstance(prompt, str) or len(prompt.strip()) < 3:
        raise MalformedOutput("'prompt' must be a non-empty string")
    if len(prompt) > MAX_PROMPT_CHARS or _CONTROL.search(prompt):
        raise MalformedOutput(f"'prompt' must be at most {MAX_PROMPT_CHARS} printable characters")
    if family not in FAMILIES:
        raise MalformedOutput(f"'family' must be one of {', '.join(FAMILIES)}, got {family!r}")
    return prompt.strip(), family


@dataclass
class WrittenPrompt:
    """What a writer produced: the prompt used, who wrote it, and why the library stood in if it did."""

    prompt: EditPrompt
    writer: str
    fallback: bool
    fallback_reason: str | None
    latency_ms: float


def fallback(library: PromptLibrary, writer: str, family: str | None, reason: str, start: float) -> WrittenPrompt:
    """The library prompt of ``family`` (the enhancement default when none), with the reason."""
    prompt = library.resolve(None, None, family if family in FAMILIES else None)
    return WrittenPrompt(prompt, writer, True, reason, (time.monotonic() - start) * 1000)


def guarded(library: PromptLibrary, writer: str, text: str, family: str, options, answer, start: float,
            requested_family: str | None) -> WrittenPrompt:
    """The written prompt, or the library's when it leaks the options, the answer or answer-like phrasing."""
    leak = find_leak(text, options, answer)
    if leak:
        return fallback(library, writer, family or requested_family, f"leak: {leak}", start)
    return WrittenPrompt(EditPrompt(None, family, text), writer, False, None, (time.monotonic() - start) * 1000)
