"""The last word on every written prompt: a prompt that leaks the answer, or a writer that failed, is
replaced by the library prompt of the family, with the reason recorded. A prediction never fails, and a
visual thought never tells the answer, because of a writer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from g2u.prompts import EditPrompt, PromptLibrary, find_leak
from g2u.types import FAMILIES


@dataclass
class WrittenPrompt:
    """What a writer produced: the prompt to use, who wrote it, and why the library stood in if it did."""

    prompt: EditPrompt
    writer: str
    fallback: bool
    fallback_reason: str | None


def fallback(library: PromptLibrary, writer: str, family: str | None, reason: str) -> WrittenPrompt:
    """The library prompt of ``family`` (the library's default family when it is None or unknown)."""
    prompt = library.resolve(None, None, family if family in FAMILIES else None)
    return WrittenPrompt(prompt, writer, True, reason)


def guarded(library: PromptLibrary, writer: str, text: str, family: str, options: Sequence[str] | None,
            answer: str | None) -> WrittenPrompt:
    """The written prompt, or the library's when it names an option or the answer, or uses answer-like
    phrasing ("the answer is", "option B")."""
    leak = find_leak(text, options, answer)
    if leak:
        return fallback(library, writer, family, f"leak: {leak}")
    return WrittenPrompt(EditPrompt(None, family, text), writer, False, None)
