"""The ``qwen_image_edit`` backend: one Qwen-Image-Edit checkpoint does both G→U stages.

Stage I edits with the diffusers pipeline (``QwenImageEditG2UPipeline``: explicit working size, per-item
seeds, batched true CFG). Stage II answers with the pipeline's own ``text_encoder`` — a full
``Qwen2_5_VLForConditionalGeneration`` with its LM head — and the pipeline's processor, so the
understanding and generation pathways share one set of weights in memory, as in the paper's setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from g2u.backends.base import BackendBase, BackendInfo, read_demo_marker
from g2u.backends.qwen_edit_pipeline import QwenImageEditG2UPipeline
from g2u.backends.qwen_vl import QwenVLImageProcessor, generate_answers
from g2u.devices import dtype_name, resolve_device, resolve_dtype
from g2u.errors import CheckpointError, InputError
from g2u.types import AnswerParams, ContentPart, EditParams

REAL_DEFAULT_EDIT_AREA = 512 * 512
MIN_STEPS = 2


def _stock_processor_available() -> bool:
    """transformers builds ``Qwen2VLProcessor`` with a video processor, which needs torchvision."""
    from transformers.utils import is_torchvision_available

    return is_torchvision_available()


class QwenImageEditBackend(BackendBase):
    """Qwen-Image-Edit for stage I and its own Qwen2.5-VL text encoder for stage II."""

    def __init__(self, pipe: QwenImageEditG2UPipeline, info: BackendInfo, default_edit_area: int):
        self.pipe = pipe
        self.info = info
        self.default_edit_area = default_edit_area
        self.size_multiple = pipe.vae_scale_factor * 2
        self.pipe.set_progress_bar_config(disable=True)

    @property
    def answer_model(self) -> Any:
        """The understanding model: the very object the pipeline encodes prompts with."""
        return self.pipe.text_encoder

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        demo: bool | None = None,
        default_edit_area: int | None = None,
    ) -> QwenImageEditBackend:
        """Load a Qwen-Image-Edit checkpoint (local folder in the hub layout, or a hub id).

        ``demo`` and ``default_edit_area`` default to the folder's demo marker (``g2u_demo.json``); a
        real checkpoint has none, so ``demo=False`` and a 512² working area.
        """
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        marker = read_demo_marker(path_or_id) if Path(path_or_id).is_dir() else None
        if demo is None:
            demo = bool(marker and marker.get("demo"))
        if default_edit_area is None:
            default_edit_area = (
                int(marker["default_edit_area"]) if demo and marker else REAL_DEFAULT_EDIT_AREA
            )

        components: dict[str, Any] = {}
        if not _stock_processor_available():
            components["processor"] = QwenVLImageProcessor.from_pretrained(path_or_id, subfolder="processor")
        try:
            pipe = QwenImageEditG2UPipeline.from_pretrained(str(path_or_id), dtype=torch_dtype, **components)
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot load a Qwen-Image-Edit pipeline from {path_or_id!r}: {exc}"
            ) from exc
        pipe.to(dev)
        info = BackendInfo(
            backend="qwen_image_edit",
            checkpoint=str(path_or_id),
            demo=bool(demo),
            device=str(dev),
            dtype=dtype_name(torch_dtype),
        )
        return cls(pipe, info, default_edit_area)

    def validate_edit(self, params: EditParams) -> None:
        """Per-request check run before batching (the pipeline's ``check``), so one bad item never
        fails a batched stage-I call."""
        self._check_params(params, 0)

    def _check_params(self, params: EditParams, index: int) -> tuple[int, int]:
        if params.image_cfg != 1.0:
            raise InputError(
                "image_cfg",
                f"Qwen-Image-Edit has no image-CFG branch; only 1.0 (branch not computed) is supported, "
                f"got {params.image_cfg}",
            )
        if params.size is None:
            raise InputError("edit_size", f"item {index}: the working size must be resolved before edit()")
        width, height = params.size
        if width <= 0 or height <= 0 or width % self.size_multiple or height % self.size_multiple:
            raise InputError(
                "edit_size", f"item {index}: {width}x{height} is not a multiple of {self.size_multiple}"
            )
        if params.steps < MIN_STEPS:  # one step: the scheduler's terminal shift divides 0 by 0 (NaN latents)
            raise InputError("steps", f"Qwen-Image-Edit's flow-matching schedule needs >= {MIN_STEPS} steps, "
                                      f"got {params.steps}")
        return width, height

    def edit_group(self, images: list[Image.Image], prompts: list[str], params: list[EditParams]) -> list[Image.Image]:
        """One batched pipeline call (batched true CFG) over items sharing size, steps and CFG."""
        first = params[0]
        width, height = self._check_params(first, 0)
        result = self.pipe(
            image=images,
            prompt=prompts,
            width=width,
            height=height,
            negative_prompt=first.negative_prompt,
            true_cfg_scale=first.text_cfg,
            num_inference_steps=first.steps,
            generator=self.generators(params),
        ).images
        return [img.convert("RGB") for img in result]

    def answer(self, contents: Sequence[Sequence[ContentPart]], params: AnswerParams) -> list[str]:
        """Stage II with the pipeline's own text encoder and processor (no second copy of the weights)."""
        return generate_answers(self.pipe.text_encoder, self.pipe.processor, contents, params)
