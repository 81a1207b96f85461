"""Plain data passed between the G→U loop and the backends."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from PIL import Image

MODES = ("baseline", "g2u", "replace", "textual_cot")
"""Modes every backend supports; a backend may add its own (BAGEL: ``vae_concat``)."""
ALL_MODES = (*MODES, "vae_concat")
"""Every mode some backend knows; each backend accepts MODES plus its ``extra_modes``."""

FAMILIES = ("enhancement", "extension")

# One part of an answer prompt: an image or a piece of text, in the order the model reads them.
ContentPart = Image.Image | str


@dataclass
class EditParams:
    """Stage-I parameters. Defaults are the paper's: 30 steps, text CFG 4.0, image CFG 1.0.

    ``size`` is the explicit working size (width, height) of the edit; ``None`` means the input's
    aspect ratio at ``area`` pixels (``None`` area: the backend's default, ~512² for real checkpoints),
    rounded to the backend's size multiple. Never the pipeline's silent ~1024² resize.
    """

    steps: int = 30
    text_cfg: float = 4.0
    image_cfg: float = 1.0
    seed: int = 0
    size: tuple[int, int] | None = None
    area: int | None = None
    negative_prompt: str = " "
    think: bool = False
    """BAGEL only: decode a textual plan before generating the thought (ignored by other backends)."""

    def batch_key(self) -> tuple:
        """Items whose keys match can share one batched edit call (per-item seeds stay per item)."""
        return (self.steps, self.text_cfg, self.image_cfg, self.size, self.negative_prompt, self.think)


@dataclass
class AnswerParams:
    """Stage-II decoding parameters: greedy by default, so answers are reproducible."""

    max_new_tokens: int = 32
    temperature: float = 0.0


@dataclass
class EditRecord:
    """What stage I did for one request, as reported back to the user."""

    prompt: str
    prompt_name: str | None
    family: str | None
    writer: str
    steps: int
    text_cfg: float
    image_cfg: float
    seed: int
    size: tuple[int, int]
    writer_fallback: bool = False
    writer_fallback_reason: str | None = None
    think: bool = False
    plan: str | None = None
    """The textual plan decoded before generation (BAGEL ``think``)."""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["size"] = list(self.size)
        return out


@dataclass
class Thought:
    """Stage-I output for one request: the visual thought Î and how it was made."""

    image: Image.Image
    edit: EditRecord
    fidelity: dict[str, float] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
