"""Who decides what to imagine: edit-prompt writers beside the prompt library.

- ``openai``: a few-shot writer behind any OpenAI-compatible endpoint (the paper's GPT-4o-mini writer).
- ``self``: the backend's own understanding pathway writes the prompt (the paper's self-prompt).

Both are leak-guarded and fall back to the library prompt of the family on any failure.
"""

from __future__ import annotations

from g2u.prompts import PromptLibrary
from g2u.writers.base import WriterConfig, WrittenPrompt, load_exemplars
from g2u.writers.openai_writer import OpenAIWriter
from g2u.writers.self_writer import SelfWriter

__all__ = ["OpenAIWriter", "SelfWriter", "WriterConfig", "WrittenPrompt", "load_exemplars", "make_writer"]


def make_writer(name: str, backend, library: PromptLibrary, config: WriterConfig | None = None):
    if name == "openai":
        return OpenAIWriter(library, config)
    if name == "self":
        return SelfWriter(backend, library, config)
    raise ValueError(f"unknown writer {name!r}; choose openai or self (the library needs no writer)")
