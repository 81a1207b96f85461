"""The one table of G→U modes: what each needs and in which order its answer prompt is laid out.

Every caller asks this table (the pipeline, the evaluation runner, the ablation grid, the schema's
help text) instead of listing mode names of its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    name: str
    needs_thought: bool
    """Stage I runs (a visual thought Î is made) for this mode."""
    parts: tuple[str, ...] | None
    """Answer-prompt parts in order: ``I`` image, ``q`` question, ``T`` thought, ``R`` written reasoning.
    ``None``: the request's ``order`` field decides (the g2u concatenation)."""
    thought_as: str = "image"
    """How the thought enters stage II: ``image`` (the understanding pathway's own image input) or
    ``vae`` (the generation pathway's VAE latents; BAGEL's ablation)."""
    backends: tuple[str, ...] | None = None
    """Backends that offer the mode (``None``: all)."""
    help: str = ""


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("baseline", False, ("I", "q"), help="answer from the original image only (stage I never runs)"),
    Mode("g2u", True, None, help="the paper's G→U: answer from [I, q, Î] (order set by `order`)"),
    Mode("replace", True, ("T", "q"), help="answer from the thought Î alone"),
    Mode("textual_cot", False, ("I", "q", "R"),
         help="ablation: write a textual reasoning first, then answer; no image is generated"),
    Mode("vae_concat", True, None, thought_as="vae", backends=("bagel",),
         help="BAGEL ablation: the thought enters as VAE latents instead of ViT features"),
)}
DEFAULT_MODE = "g2u"
DEFAULT_EVAL_MODES = ("baseline", DEFAULT_MODE)
"""What an evaluation compares when not told otherwise: the plain baseline and the default G→U mode."""


def modes_for(backend: str | None) -> tuple[str, ...]:
    """Mode names a backend offers (every mode when ``backend`` is None: validation before a load)."""
    return tuple(m.name for m in MODES.values() if backend is None or m.backends is None or backend in m.backends)


def needs_thought(mode: str) -> bool:
    return MODES[mode].needs_thought
