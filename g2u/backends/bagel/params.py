"""BAGEL-specific request types: extra edit options and the VAE-image content marker.

``BagelEditParams`` is an ``EditParams`` (the pipeline passes it through ``dataclasses.replace``
unchanged); the backend reads every extra field with a default, so a plain ``EditParams`` — or one
that grows a ``think`` field — works as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from g2u.backends.bagel.sampler import SamplerSettings
from g2u.types import EditParams

GEN_THINK_SYSTEM_PROMPT = (
    "You should first think about the planning process in the mind and then generate the image. \n"
    "The planning process is enclosed within <think> </think> tags, i.e. <think> planning process here "
    "</think> image here"
)
"""BAGEL's system prompt for generating with a textual plan first (its ``think`` mode)."""

VLM_THINK_SYSTEM_PROMPT = (
    "You should first think about the reasoning process in the mind and then provide the user with the "
    "answer. \nThe reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning "
    "process here </think> answer here"
)
"""BAGEL's system prompt for understanding with a textual reasoning first (inferencer ``think`` +
``understanding_output``)."""

DEFAULT_TIMESTEP_SHIFT = 3.0
DEFAULT_CFG_INTERVAL = (0.0, 1.0)
DEFAULT_RENORM_TYPE = "text_channel"
DEFAULT_RENORM_MIN = 0.0
DEFAULT_MAX_THINK_TOKENS = 1000
"""BAGEL's editing recipe (its inference notebook), used where a request does not say otherwise."""


@dataclass
class BagelEditParams(EditParams):
    """``EditParams`` plus BAGEL's sampler knobs and ``think`` (decode a plan before generating)."""

    think: bool = False
    max_think_tokens: int = DEFAULT_MAX_THINK_TOKENS
    timestep_shift: float = DEFAULT_TIMESTEP_SHIFT
    cfg_interval: tuple[float, float] = DEFAULT_CFG_INTERVAL
    cfg_renorm_type: str = DEFAULT_RENORM_TYPE
    cfg_renorm_min: float = DEFAULT_RENORM_MIN

    def batch_key(self) -> tuple:
        return (*super().batch_key(), *bagel_options(self))


def bagel_options(params: EditParams) -> tuple:
    """(think, max_think_tokens, shift, interval, renorm type, renorm min) of any EditParams."""
    return (
        bool(getattr(params, "think", False)),
        int(getattr(params, "max_think_tokens", DEFAULT_MAX_THINK_TOKENS)),
        float(getattr(params, "timestep_shift", DEFAULT_TIMESTEP_SHIFT)),
        tuple(getattr(params, "cfg_interval", DEFAULT_CFG_INTERVAL)),
        str(getattr(params, "cfg_renorm_type", DEFAULT_RENORM_TYPE)),
        float(getattr(params, "cfg_renorm_min", DEFAULT_RENORM_MIN)),
    )


def sampler_settings(params: EditParams) -> SamplerSettings:
    _, _, shift, interval, renorm_type, renorm_min = bagel_options(params)
    return SamplerSettings(steps=params.steps, text_cfg=params.text_cfg, image_cfg=params.image_cfg,
                           timestep_shift=shift, cfg_interval=(float(interval[0]), float(interval[1])),
                           cfg_renorm_type=renorm_type, cfg_renorm_min=renorm_min)


@dataclass(frozen=True)
class VaeImage:
    """An answer-prompt image that enters BAGEL's context as VAE latents (generation expert) instead of
    ViT features: the paper's ``vae_concat`` ablation puts the thought in this way."""

    image: Image.Image
