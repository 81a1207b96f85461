"""BAGEL-specific request fields (``BagelOptions``: declared here, merged into the request schema)
and the VAE-image content marker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from g2u.types import EditParams

if TYPE_CHECKING:
    from g2u.backends.bagel.sampler import SamplerSettings

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


class BagelOptions(BaseModel):
    """BAGEL's own request fields (REST, CLI, evaluation): its sampler knobs and textual planning.
    Unset fields take BAGEL's editing recipe (its inference notebook)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    think: bool = Field(False, description="decode a textual plan before generating the thought")
    max_think_tokens: int = Field(DEFAULT_MAX_THINK_TOKENS, ge=1, le=4096,
                                  description="token budget of the `think` plan, as BAGEL's `max_think_token_n` "
                                              "(it counts the start token: N gives at most N − 1 plan tokens)")
    timestep_shift: float = Field(DEFAULT_TIMESTEP_SHIFT, gt=0.0, le=20.0,
                                  description="flow-matching timestep shift of the sampler")
    cfg_interval: tuple[float, float] = Field(DEFAULT_CFG_INTERVAL,
                                              description="timestep interval 'low,high' in [0, 1] where CFG applies")
    cfg_renorm_type: Literal["global", "channel", "text_channel"] = Field(
        DEFAULT_RENORM_TYPE, description="CFG renormalisation: global, channel or text_channel")
    cfg_renorm_min: float = Field(DEFAULT_RENORM_MIN, ge=0.0, le=1.0, description="lower bound of the CFG renorm")

    @field_validator("cfg_interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        if isinstance(value, str):  # forms and the CLI send "0.4,1.0"
            value = [v for v in value.replace(" ", ",").split(",") if v]
        return value

    @field_validator("cfg_interval")
    @classmethod
    def _interval_order(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError(f"must be 'low,high' with 0 <= low <= high <= 1, got {value}")
        return value


def bagel_options(params: EditParams) -> tuple:
    """(think, max_think_tokens, shift, interval, renorm type, renorm min) of any EditParams: the
    request's ``options`` over BAGEL's defaults."""
    opts = BagelOptions.model_construct(**params.options)
    return (bool(opts.think), int(opts.max_think_tokens), float(opts.timestep_shift),
            tuple(opts.cfg_interval), str(opts.cfg_renorm_type), float(opts.cfg_renorm_min))


def sampler_settings(params: EditParams) -> SamplerSettings:
    from g2u.backends.bagel.sampler import SamplerSettings  # here: the schema imports this module, and the
    # sampler pulls in the model (transformers' Qwen2): ~6 s on every `g2u` start

    _, _, shift, interval, renorm_type, renorm_min = bagel_options(params)
    return SamplerSettings(steps=params.steps, text_cfg=params.text_cfg, image_cfg=params.image_cfg,
                           timestep_shift=shift, cfg_interval=(float(interval[0]), float(interval[1])),
                           cfg_renorm_type=renorm_type, cfg_renorm_min=renorm_min)


@dataclass(frozen=True)
class VaeImage:
    """An answer-prompt image that enters BAGEL's context as VAE latents (generation expert) instead of
    ViT features: the paper's ``vae_concat`` ablation puts the thought in this way."""

    image: Image.Image
