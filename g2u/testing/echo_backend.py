"""A tiny deterministic backend (the ``Backend`` protocol through ``BackendBase``) whose outputs are pure
functions of each item's own inputs, so a test can tell which input an answer came from.

The demo checkpoints' random weights often give batch-mates the same text: answers returned in reverse
order within a batch passed every suite. Here

- a thought is its image, tinted by a colour hashed from its prompt and seed (at the planned size);
- an answer is ``"<digest of its images>|<its question's first line>"``: each image's mean colour, in the
  order the prompt holds them, then the question as the answer prompt carries it.

``answer_for(image, question)`` is what a baseline answer must be; ``own_answer_problems`` checks a batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from PIL import Image, ImageStat

from g2u.backends.base import BackendBase, BackendInfo
from g2u.types import Answer, AnswerParams, EditOutput, EditParams


def colour_tag(image: Image.Image) -> str:
    """The image's mean colour as six hex digits."""
    r, g, b = (int(round(v)) for v in ImageStat.Stat(image.convert("RGB")).mean[:3])
    return f"{r:02x}{g:02x}{b:02x}"


def answer_for(images: Sequence[Image.Image], question: str) -> str:
    return "+".join(colour_tag(im) for im in images) + "|" + question.splitlines()[0]


class EchoBackend(BackendBase):
    """Deterministic stand-in for a unified model (CPU, no weights)."""

    size_multiple = 8
    default_edit_area = 32 * 32

    def __init__(self) -> None:
        self.info = BackendInfo(backend="echo", checkpoint="echo", demo=True, device="cpu", dtype="float32")
        self.calls: list[int] = []
        """Batch size of every ``answer`` call (a test can see that items really were batched)."""

    def validate_edit(self, params: EditParams) -> None:
        return None

    def edit_group(self, images: list[Image.Image], prompts: list[str], params: list[EditParams]) -> list[EditOutput]:
        out = []
        for img, prompt, p in zip(images, prompts, params):
            digest = hashlib.sha256(f"{prompt}|{p.seed}".encode()).digest()
            tint = Image.new("RGB", p.size or img.size, tuple(digest[:3]))
            out.append(EditOutput(Image.blend(img.convert("RGB").resize(tint.size), tint, 0.5)))
        return out

    def answer(self, contents: Sequence[Sequence[object]], params: AnswerParams) -> list:
        self.calls.append(len(contents))
        texts = []
        for parts in contents:
            images = [p for p in parts if isinstance(p, Image.Image)]
            question = next((p for p in parts if isinstance(p, str)), "")
            texts.append(answer_for(images, question))
        if params.return_scores:
            return [Answer(t, 0.5, 0.5) for t in texts]
        return [Answer(t) for t in texts]


def own_answer_problems(answers: Sequence[str], images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
    """What is wrong with a batch's answers: each must start with its own input image's colour and carry
    its own question (empty: every item got its own answer)."""
    problems = []
    for k, (ans, img, q) in enumerate(zip(answers, images, questions)):
        if not ans.startswith(colour_tag(img)) or not ans.split("|", 1)[-1].startswith(q.splitlines()[0]):
            problems.append(f"item {k}: {ans!r} is not the answer to ({colour_tag(img)}, {q!r})")
    return problems


__all__ = ["EchoBackend", "answer_for", "colour_tag", "own_answer_problems"]
