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
    """Stage-I parameters. No defaults here: the schema (``g2u.schema``) owns them (the paper's 30 steps,
    text CFG 4.0, image CFG 1.0); ``g2u.schema.edit_params`` builds one with them.

    ``size`` is the explicit working size (width, height); ``None`` until the plan resolves it from the
    input's aspect ratio and the backend's working area. Never the pipeline's silent resize.
    ``options`` holds the backend's own knobs (BAGEL: ``think``, ``cfg_interval``...) as the request
    set them; a backend reads each with its own default.
    """

    steps: int
    text_cfg: float
    image_cfg: float
    seed: int
    size: tuple[int, int] | None
    area: int | None
    """Working area in pixels when ``size`` is not given (None: the backend's own size rule)."""
    negative_prompt: str
    options: dict[str, Any]

    def batch_key(self) -> tuple:
        """Items whose keys match can share one batched edit call (per-item seeds stay per item)."""
        opts = tuple(sorted((k, _frozen(v)) for k, v in self.options.items()))
        return (self.steps, self.text_cfg, self.image_cfg, self.size, self.negative_prompt, opts)


@dataclass
class AnswerParams:
    """Stage-II decoding parameters (defaults: the schema's; ``g2u.schema.answer_params``)."""

    max_new_tokens: int
    temperature: float
    stage2_max_pixels: int | None
    """Cap on each stage-II image (None: the backend's, by default its processor's own ``max_pixels``)."""
    stage2_sizing: str
    """``per_image``: each stage-II image sized from its own size (the references); ``shared``: all at the
    first image's (``g2u.sizing.STAGE2_SIZINGS``)."""
    return_scores: bool
    """Ask the backend for token probabilities (``Answer.prob``): the confidence gate and the
    ``confidence``/``agreement`` selections read them."""

    def group_key(self) -> tuple:
        """Answers whose keys match can share one batched ``answer`` call."""
        return (self.max_new_tokens, self.temperature, self.return_scores, self.stage2_max_pixels,
                self.stage2_sizing)


@dataclass
class Answer:
    """One stage-II answer, and what stage II read to make it.

    ``prob``: the mean probability of the generated tokens (end token excluded; 0 for an empty answer);
    ``first_prob``: the probability of the first token (for a letter/yes-no answer, the decision itself);
    both ``None`` unless ``AnswerParams.return_scores``. ``stage2``: how the backend sized the request's
    images (``g2u.sizing``; None without images or a sizing policy)."""

    text: str
    prob: float | None = None
    first_prob: float | None = None
    stage2: dict[str, Any] | None = None


@dataclass
class G2URequest:
    """One validated request (built by ``g2u.schema.parse_request``; never by hand in serving code)."""

    image: Image.Image
    question: str
    options: list[str] | None
    prompt_text: str | None
    """The question as an evaluation protocol builds it (``g2u.eval.protocols``); the answer prompt uses it as is."""
    mode: str
    prompt: str | None
    prompt_name: str | None
    family: str | None
    writer: str
    edit: EditParams
    answer: AnswerParams
    order: tuple[str, ...]
    layout: str
    """Stage-II layout of a thought mode: ``paper``, ``labelled`` or ``multiturn`` (``g2u.answer_prompt``)."""
    replace_min_psnr: float | None
    """``replace`` only: answer from Î only when PSNR(Î, I) exceeds this (dB), else from I (``g2u.replace_gate``)."""
    reasoning_tokens: int
    """Token budget of the ``textual_cot`` reasoning."""
    return_thought: bool
    timeout_s: float | None
    """Seconds the request may take (``g2u.batch`` caps it by the server's deadline)."""
    id: str | None
    strategy: Strategy
    """Beyond the paper: candidates, selection, gate."""
    thought: Image.Image | None
    """A thought brought by the caller: stage I is skipped and this image is used instead."""
    gold_answer: str | None = None
    """Known answer (evaluation only, set by the caller after parsing): the leak guard also rejects edit
    prompts containing it."""


@dataclass
class Strategy:
    """Options beyond the paper's loop (the schema's defaults reproduce the paper: one thought, no gate)."""

    candidates: int
    candidate_prompts: list[str] | None
    selection: str
    gate: str
    gate_threshold: float


@dataclass
class EditOutput:
    """What a backend's ``edit`` returns for one item: the thought and, where the backend planned in
    text first (BAGEL ``think``), that plan."""

    image: Image.Image
    plan: str | None = None
    cached: bool = False
    """Served by the thought cache (``g2u.thought_cache.CachedEditor``): stage I did not run for it."""
    cache_ms: float | None = None
    """The cache lookup's time (hits only)."""


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
    measures: dict[str, float] = field(default_factory=dict)
    """SSIM/PSNR of Î against I (``g2u.measures``): how much the pixels changed, not fidelity."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    gate: Any = None
    """The confidence gate's decision that let this thought be made (``g2u.gate.GateDecision``): it travels
    with the thought, so a caller that runs stage II apart (evaluation, the handler) still reports it."""
    candidates: list[Thought] | None = None
    """All candidate thoughts of a ``candidates > 1`` request (this one is the first until stage II selects)."""
