"""Plain data passed between the schema, the G→U loop and the backends."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

FAMILIES = ("enhancement", "extension")

@dataclass(frozen=True)
class Turn:
    """An answer-prompt part that starts a new chat turn (``role`` "user" or "assistant"): the
    ``multiturn`` layout puts the thought in an assistant turn. Backends without roles ignore it."""

    role: str


# One part of an answer prompt: an image, a piece of text or a turn marker, in the order the model reads them.
ContentPart = Image.Image | str | Turn


def _frozen(value: Any) -> Any:
    """A hashable copy of an option value (lists become tuples) for batch keys."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass
class EditParams:
    """Stage-I parameters. Defaults are the paper's: 30 steps, text CFG 4.0, image CFG 1.0.

    ``size`` is the explicit working size (width, height); ``None`` until the pipeline resolves it
    from the input's aspect ratio and the backend's working area. Never the pipeline's silent resize.
    ``options`` holds the backend's own knobs (BAGEL: ``think``, ``cfg_interval``...) as the request
    set them; a backend reads each with its own default.
    """

    steps: int = 30
    text_cfg: float = 4.0
    image_cfg: float = 1.0
    seed: int = 0
    size: tuple[int, int] | None = None
    area: int | None = None
    """Working area in pixels when ``size`` is not given (None: the backend's own size rule)."""
    negative_prompt: str = " "
    options: dict[str, Any] = field(default_factory=dict)

    def batch_key(self) -> tuple:
        """Items whose keys match can share one batched edit call (per-item seeds stay per item)."""
        opts = tuple(sorted((k, _frozen(v)) for k, v in self.options.items()))
        return (self.steps, self.text_cfg, self.image_cfg, self.size, self.negative_prompt, opts)


@dataclass
class AnswerParams:
    """Stage-II decoding parameters: greedy by default, so answers are reproducible."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    stage2_max_pixels: int | None = None
    """Cap on each stage-II image (None: the backend's, by default its processor's own ``max_pixels``)."""
    stage2_sizing: str = "per_image"
    """``per_image``: each stage-II image sized from its own size (the references); ``shared``: all at the
    first image's (``g2u.sizing.STAGE2_SIZINGS``)."""
    return_scores: bool = False
    """Ask the backend for ``Answer`` objects (text + token probabilities) instead of plain texts: the
    confidence gate and the ``confidence``/``agreement`` selections read them."""


@dataclass
class Answer:
    """A stage-II answer with how sure the model was of it (``AnswerParams.return_scores``).

    ``prob``: the mean probability of the generated tokens (end token excluded; 0 for an empty answer);
    ``first_prob``: the probability of the first token (for a letter/yes-no answer, the decision itself)."""

    text: str
    prob: float
    first_prob: float


@dataclass
class G2URequest:
    """One validated request (built by ``g2u.schema.parse_request``; never by hand in serving code)."""

    image: Image.Image
    question: str
    options: list[str] | None = None
    mode: str = "g2u"
    prompt: str | None = None
    prompt_name: str | None = None
    family: str | None = None
    writer: str = "library"
    edit: EditParams = field(default_factory=EditParams)
    answer: AnswerParams = field(default_factory=AnswerParams)
    order: tuple[str, ...] = ("I", "q", "T")
    layout: str = "paper"
    """Stage-II layout of a thought mode: ``paper``, ``labelled`` or ``multiturn`` (``g2u.pipeline``)."""
    replace_min_psnr: float | None = None
    """``replace`` only: answer from Î only when PSNR(Î, I) exceeds this (dB), else from I (``g2u.replace_gate``)."""
    reasoning_tokens: int = 512
    """Token budget of the ``textual_cot`` reasoning."""
    return_thought: bool = False
    timeout_s: float | None = None
    """Seconds the request may take (``g2u.batch`` caps it by the server's deadline)."""
    id: str | None = None
    gold_answer: str | None = None
    """Known answer (evaluation only): the leak guard also rejects edit prompts containing it."""
    strategy: Strategy = field(default_factory=lambda: Strategy())
    """Beyond the paper: candidates, selection, gate (defaults: the paper's single-thought loop)."""
    thought: Image.Image | None = None
    """A thought brought by the caller: stage I is skipped and this image is used instead."""
    gated: Any = None
    """Set by ``G2UPipeline.imagine`` when the confidence gate ran (a ``g2u.gate.GateDecision``)."""


@dataclass
class Strategy:
    """Options beyond the paper's loop; every default reproduces the paper (one thought, no gate)."""

    candidates: int = 1
    candidate_prompts: list[str] | None = None
    selection: str = "confidence"
    gate: str = "none"
    gate_threshold: float = 0.9

    @property
    def default(self) -> bool:
        return self.candidates == 1 and not self.candidate_prompts and self.gate == "none"


@dataclass
class EditOutput:
    """What a backend's ``edit`` returns for one item: the thought and, where the backend planned in
    text first (BAGEL ``think``), that plan."""

    image: Image.Image
    plan: str | None = None


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
    options: dict[str, Any] = field(default_factory=dict)
    """Backend options the request set (BAGEL's think, cfg_interval...)."""
    sizing: dict[str, Any] | None = None
    """How the working size was reached: ``{"rule", "input", "size", "resize", "pad"}`` (``g2u.sizing``)."""
    plan: str | None = None
    """The textual plan decoded before generation (BAGEL ``think``)."""
    cached: bool = False
    """Served from the persistent thought cache (``g2u.thought_cache``): stage I did not run."""
    provided: bool = False
    """The caller brought this thought (``thought`` field / dataset column): stage I did not run."""

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
    gate: Any = None
    """The confidence gate's decision that let this thought be made (``g2u.gate.GateDecision``): it travels
    with the thought, so a caller that runs stage II apart (evaluation, the handler) still reports it."""
    candidates: list[Thought] | None = None
    """All candidate thoughts of a ``candidates > 1`` request (this one is the first until stage II selects)."""
