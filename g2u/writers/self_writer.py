"""Self-prompting: the backend's own understanding pathway writes its edit prompt, from the same exemplars
given as text. The paper finds it valid but poorly task-aligned (models can imagine but do not know what
to imagine); it is here to measure that. Same contract, validation and leak guard as the OpenAI writer."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from g2u.prompts import PromptLibrary
from g2u.schema import answer_params
from g2u.writers.config import WriterConfig
from g2u.writers.exemplars import ExemplarSet, load_exemplars
from g2u.writers.guard import WrittenPrompt, fallback, guarded
from g2u.writers.reply import SYSTEM_PROMPT, MalformedOutput, exemplar_reply, parse_reply, request_text

MAX_NEW_TOKENS = 96


def fewshot_text(exemplars: ExemplarSet) -> str:
    """The instruction and the K exemplars as one text (the backend reads one interleaved prompt)."""
    shots = "\n\n".join(f"Image: {ex.description}\n{request_text(ex.question)}\n"
                        f"Reply: {exemplar_reply(ex.prompt, ex.family)}" for ex in exemplars.exemplars)
    return f"{SYSTEM_PROMPT}\n\nExamples:\n\n{shots}\n\nNow the attached image.\n"


class SelfWriter:
    """``write`` asks ``backend.answer`` for the prompt; a reply that is not one valid instruction (random
    demo weights always give one) or a backend error ends in the library prompt, with the reason."""

    name = "self"

    def __init__(self, backend, library: PromptLibrary, config: WriterConfig | None = None):
        self.backend = backend
        self.library = library
        exemplars_path = config.exemplars if config is not None else WriterConfig.from_env().exemplars
        self.instruction = fewshot_text(load_exemplars(exemplars_path))

    def write(self, image: Image.Image, question: str, options: Sequence[str] | None = None,
              family: str | None = None, answer: str | None = None) -> WrittenPrompt:
        text = f"{self.instruction}Image: (attached)\n{request_text(question, None, family)}\nReply:"
        try:
            [out] = self.backend.answer([[image, text]], answer_params(max_new_tokens=MAX_NEW_TOKENS))
            reply = out.text
        except Exception as exc:  # the writer must not fail the prediction; stage II will surface a real fault
            return fallback(self.library, self.name, family, f"backend error: {type(exc).__name__}: {exc}",
                            options, answer)
        try:
            prompt, written_family = parse_reply(reply, family, plain_ok=True)
        except MalformedOutput as exc:
            return fallback(self.library, self.name, family, f"malformed output: {exc}", options, answer)
        return guarded(self.library, self.name, prompt, written_family, options, answer)
