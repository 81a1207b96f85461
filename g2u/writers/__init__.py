"""Who decides what to imagine, besides the prompt library: edit-prompt writers.

- ``openai``: a few-shot writer behind any OpenAI-compatible endpoint (the paper's GPT-4o-mini writer).
- ``self``: the backend's own understanding pathway writes the prompt (the paper's self-prompt).

Both share one reply contract and one leak guard, and fall back to the library prompt of the family,
with the reason recorded, on any failure.
"""

from __future__ import annotations

from g2u.prompts import PromptLibrary
from g2u.writers.config import WriterConfig
from g2u.writers.exemplars import load_exemplars
from g2u.writers.guard import WrittenPrompt
from g2u.writers.openai_writer import OpenAIWriter
from g2u.writers.self_writer import SelfWriter

WRITER_NAMES = ("openai", "self")

__all__ = ["WRITER_NAMES", "OpenAIWriter", "SelfWriter", "WriterConfig", "WrittenPrompt", "load_exemplars",
           "make_writer"]


def make_writer(name: str, backend, library: PromptLibrary,
                config: WriterConfig | None = None) -> OpenAIWriter | SelfWriter:
    """The writer called ``name``; ``config`` defaults to ``WriterConfig.from_env()`` (which raises
    ValueError naming a badly set variable)."""
    if name == "openai":
        return OpenAIWriter(library, config)
    if name == "self":
        return SelfWriter(backend, library, config)
    raise ValueError(f"unknown writer {name!r}; choose one of {', '.join(WRITER_NAMES)} "
                     "(the library needs no writer)")
