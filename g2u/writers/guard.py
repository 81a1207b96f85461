"""The last word on every written prompt: a prompt that leaks the answer, or a writer that failed, is
replaced by the library prompt of the family, with the reason recorded. The stand-in is checked too (as a
library prompt: answer-like phrasing only, since fixed text cannot know the question); should it fail,
the first library prompt that passes stands in. A prediction never fails, and a visual thought never
tells the answer, because of a writer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from g2u.prompts import EditPrompt, PromptLibrary, find_leak, prompt_leak
from g2u.types import FAMILIES


@dataclass
class WrittenPrompt:
    """What a writer produced: the prompt to use, who wrote it, and why the library stood in if it did."""

    prompt: EditPrompt
    writer: str
    fallback: bool
    fallback_reason: str | None


def fallback(library: PromptLibrary, writer: str, family: str | None, reason: str,
             options: Sequence[str] | None = None, answer: str | None = None) -> WrittenPrompt:
    """The library prompt of ``family`` (the library's default family when it is None or unknown),
    re-checked; a default that fails gives way to the first library prompt that passes."""
    prompt = library.resolve(None, None, family if family in FAMILIES else None)
    leak = prompt_leak(prompt, options, answer)
    if leak:
        clean = [p for p in library.prompts.values() if prompt_leak(p, options, answer) is None]
        if not clean:
            raise ValueError(f"prompt library: no prompt passes the leak guard ({prompt.name!r} {leak})")
        reason = f"{reason}; library default {prompt.name!r} {leak}, used {clean[0].name!r}"
        prompt = clean[0]
    return WrittenPrompt(prompt, writer, True, reason)


def guarded(library: PromptLibrary, writer: str, text: str, family: str, options: Sequence[str] | None,
            answer: str | None) -> WrittenPrompt:
    """The written prompt, or the library's when it names an option or the answer, or uses answer-like
    phrasing ("the answer is", "option B")."""
    leak = find_leak(text, options, answer)
    if leak:
        return fallback(library, writer, family, f"leak: {leak}", options, answer)
    return WrittenPrompt(EditPrompt(None, family, text), writer, False, None)
