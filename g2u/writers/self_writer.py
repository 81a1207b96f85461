"""Self-prompting: the backend's own understanding pathway writes its edit prompt from the same exemplars
(as text). The paper finds it valid but poorly task-aligned: models can imagine but do not know what to
imagine. Same parsing, validation and leak guard as the OpenAI writer."""

from __future__ import annotations

import time
from collections.abc import Sequence

from PIL import Image

from g2u.prompts import PromptLibrary
from g2u.types import AnswerParams
from g2u.writers.base import (
    SYSTEM_PROMPT,
    MalformedOutput,
    WriterConfig,
    WrittenPrompt,
    exemplar_reply,
    fallback,
    guarded,
    load_exemplars,
    parse_reply,
)

MAX_NEW_TOKENS = 96


class SelfWriter:
    name = "self"

    def __init__(self, backend, library: PromptLibrary, config: WriterConfig | None = None):
        self.backend = backend
        self.library = library
        self.exemplars = load_exemplars((config or WriterConfig.from_env()).exemplars)
        shots = "\n\n".join(f"Image: {ex.description}\nQuestion: {ex.question}\nReply: {exemplar_reply(ex)}"
                            for ex in self.exemplars.exemplars)
        self.instruction = f"{SYSTEM_PROMPT}\n\nExamples:\n\n{shots}\n\nNow for the attached image.\n"

    def write(self, image: Image.Image, question: str, options: Sequence[str] | None = None,
              family: str | None = None, answer: str | None = None) -> WrittenPrompt:
        start = time.monotonic()
        text = f"{self.instruction}Question: {question}\nReply:"
        try:
            [reply] = self.backend.answer([[image, text]], AnswerParams(max_new_tokens=MAX_NEW_TOKENS))
            prompt, written_family = parse_reply(reply, family)
        except MalformedOutput as exc:
            return fallback(self.library, self.name, family, f"malformed output: {exc}", start)
        return guarded(self.library, self.name, prompt, written_family, options, answer, start, family)
