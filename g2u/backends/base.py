"""The backend protocol: one batched call per G→U stage, nothing else.

A backend owns its models and knows how to (I) edit images under prompts and (II) answer from
interleaved image/text content. All G→U logic (modes, prompt choice, ordering, fidelity) lives in
``g2u.pipeline``, so a new model family only has to implement these two calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image

from g2u.types import AnswerParams, ContentPart, EditParams


@dataclass(frozen=True)
class BackendInfo:
    """Identity reported in every result (``model`` field)."""

    backend: str
    checkpoint: str
    demo: bool
    device: str
    dtype: str


@runtime_checkable
class Backend(Protocol):
    info: BackendInfo
    size_multiple: int
    """Edit sizes are rounded to this (VAE stride × latent patch size)."""
    default_edit_area: int
    """Pixel area of the automatic working size (512² for real checkpoints, small for demo ones)."""
    extra_modes: tuple[str, ...]

    def edit(
        self, images: Sequence[Image.Image], prompts: Sequence[str], params: Sequence[EditParams]
    ) -> list[Image.Image]:
        """Stage I: edit each image under its prompt; returns one RGB image per input, at the
        working size ``params[i].size`` (already resolved by the caller, never ``None``)."""
        ...

    def validate_edit(self, params: EditParams) -> None:
        """Raise InputError for edit parameters this backend cannot honour (``params.size`` resolved).
        Called per request before any batched call."""
        ...

    def answer(self, contents: Sequence[Sequence[ContentPart]], params: AnswerParams) -> list[str]:
        """Stage II: one text per request, each from its interleaved images and text parts."""
        ...
