"""The ``qwen_image_edit`` backend: one Qwen-Image-Edit checkpoint does both G→U stages.

Stage I edits with the diffusers pipeline (``QwenImageEditG2UPipeline``: explicit working size, per-item
seeds, batched true CFG; or, for the Qwen-Image-Edit-Plus releases 2509/2511, the stock
``QwenImageEditPlusPipeline`` one item at a time, as it only takes batch 1). Stage II answers with the
pipeline's own ``text_encoder`` — a full ``Qwen2_5_VLForConditionalGeneration`` with its LM head, checked
to be in the checkpoint — and the pipeline's processor, so the understanding and generation pathways
share one set of weights in memory, as in the paper's setting.

Sizes (``g2u.sizing``): the default working size is the stock rule, ``calculate_dimensions(1024², aspect)``
(demo checkpoints: their marker's area); stage II brings I and Î each to the Qwen2.5-VL ``smart_resize``
size of its own, as stock Qwen2.5-VL processing does (``stage2_sizing: shared``: both at the original's),
capped by ``stage2_max_pixels`` (default: the processor's ``max_pixels``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import PIL_INTERPOLATION
from PIL import Image

from g2u import progress
from g2u.backends.base import BackendBase, BackendInfo, read_demo_marker, with_stage2
from g2u.backends.qwen_edit_pipeline import EditState, QwenImageEditG2UPipeline, SteppedEdits
from g2u.backends.qwen_vl import (
    QWEN2_5_VL_CHAT_TEMPLATE,
    QwenVLImageProcessor,
    generate_answers,
    qwen_vl_stage2_for,
)
from g2u.devices import dtype_name, resolve_device, resolve_dtype
from g2u.errors import CheckpointError, InputError
from g2u.sizing import (
    SizeLimits,
    check_explicit,
    demo_scale,
    place,
    prepare_contents,
    scaled_rule,
    stage2_cap,
)
from g2u.types import Answer, AnswerParams, ContentPart, EditOutput, EditParams

STOCK_EDIT_AREA = 1024 * 1024
"""The stock pipelines' working area: ``calculate_dimensions(1024 * 1024, width / height)``."""
REAL_DEFAULT_EDIT_AREA = STOCK_EDIT_AREA
MIN_STEPS = 2
MAX_EDIT_SIDE = 2048
"""Largest working side accepted (memory: a 2048² edit already needs ~4× the stock 1024² one)."""
PLUS_PIPELINE = "QwenImageEditPlusPipeline"


def _stock_processor_available() -> bool:
    """transformers builds ``Qwen2VLProcessor`` with a video processor, which needs torchvision."""
    from transformers.utils import is_torchvision_available

    return is_torchvision_available()


def _pipeline_class_name(path_or_id: str) -> str | None:
    index = Path(path_or_id) / "model_index.json"
    if not index.is_file():
        return None
    import json

    return json.loads(index.read_text()).get("_class_name")


def load_text_encoder(path_or_id: str, dtype: torch.dtype) -> Any:
    """The pipeline's ``text_encoder`` with every weight from the checkpoint, the LM head included.

    diffusers would load it too, but a checkpoint without ``lm_head.weight`` (some exports keep only what
    the image pipeline needs) would then get a randomly initialised head and answer garbage silently.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    try:
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(path_or_id), subfolder="text_encoder", dtype=dtype, output_loading_info=True
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the text encoder of {path_or_id!r}: {exc}") from exc
    missing = [k for k in info.get("missing_keys", ()) if "lm_head" in k]
    if missing and not getattr(model.config, "tie_word_embeddings", False):
        raise CheckpointError(
            f"{path_or_id}/text_encoder has no LM head ({', '.join(sorted(missing))} missing): it can encode "
            "prompts for editing but cannot answer; use a checkpoint whose text_encoder keeps lm_head.weight"
        )
    return model.eval()


def ensure_chat_template(processor: Any) -> bool:
    """Give a processor without a chat template the model's stock one (Qwen2.5-VL's); True if it had to."""
    if getattr(processor, "chat_template", None):
        return False
    tokenizer_template = getattr(getattr(processor, "tokenizer", None), "chat_template", None)
    processor.chat_template = tokenizer_template or QWEN2_5_VL_CHAT_TEMPLATE
    return True


class QwenImageEditBackend(BackendBase):
    """Qwen-Image-Edit (or -Plus) for stage I and its own Qwen2.5-VL text encoder for stage II."""

    def __init__(self, pipe: Any, info: BackendInfo, default_edit_area: int, *, demo_scale_area: int | None = None,
                 stage2_max_pixels: int | None = None):
        self.pipe = pipe
        self.info = info
        self.default_edit_area = default_edit_area
        self.size_multiple = pipe.vae_scale_factor * 2
        self.plus = isinstance(pipe, _plus_class())
        scale = demo_scale(demo_scale_area) if demo_scale_area else 1.0
        self.size_limits = SizeLimits(multiple=self.size_multiple,
                                      max_side=max(self.size_multiple, int(MAX_EDIT_SIDE * scale)))
        name = "qwen_image_edit:calculate_dimensions(1024*1024)" + (f" scaled {scale:g} (demo)" if scale != 1 else "")
        self.default_size_rule = (name, scaled_rule(qwen_image_edit_rule(STOCK_EDIT_AREA), scale))
        """The stock rule (real checkpoints at 1024²; a demo at its marker's area)."""
        self.stage2_max_pixels = stage2_max_pixels
        """Cap on each stage-II image (``None``: the processor's own ``max_pixels``)."""
        self.pipe.set_progress_bar_config(disable=True)
        # the pipeline moves and offloads as one; its transformer and text encoder are quantized in place
        self.register("pipe", pipe, offload="pipeline")
        self.register("transformer", pipe.transformer, quantize=True, move=False, role="denoiser")
        self.register("text_encoder", pipe.text_encoder, quantize=True, move=False, role="answer_model")

    def stage2_sizing(self, cap: int | None = None):
        """Stage-II sizing under ``cap`` (a request's), else ``stage2_max_pixels``, else the processor's."""
        return qwen_vl_stage2_for(self.pipe.processor, cap or self.stage2_max_pixels)

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
        stage2_max_pixels: int | None = None,
    ) -> QwenImageEditBackend:
        """Load a Qwen-Image-Edit checkpoint (local folder in the hub layout, or a hub id).

        ``demo`` and ``default_edit_area`` default to the folder's demo marker (``g2u_demo.json``); a
        real checkpoint has none, so ``demo=False`` and the stock ~1024² rule. The Plus layout
        (model_index.json naming ``QwenImageEditPlusPipeline``) loads as the Plus variant.
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

        components: dict[str, Any] = {"text_encoder": load_text_encoder(path_or_id, torch_dtype)}
        if not _stock_processor_available():
            components["processor"] = QwenVLImageProcessor.from_pretrained(path_or_id, subfolder="processor")
        pipeline_cls = _plus_class() if _pipeline_class_name(path_or_id) == PLUS_PIPELINE else QwenImageEditG2UPipeline
        try:
            pipe = pipeline_cls.from_pretrained(str(path_or_id), dtype=torch_dtype, **components)
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot load a Qwen-Image-Edit pipeline from {path_or_id!r}: {exc}"
            ) from exc
        ensure_chat_template(pipe.processor)
        pipe.to(dev)
        info = BackendInfo(
            backend="qwen_image_edit",
            checkpoint=str(path_or_id),
            demo=bool(demo),
            device=str(dev),
            dtype=dtype_name(torch_dtype),
        )
        return cls(pipe, info, default_edit_area, demo_scale_area=default_edit_area if demo else None,
                   stage2_max_pixels=stage2_max_pixels)

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
        width, height = check_explicit(tuple(params.size), self.size_limits)
        if params.steps < MIN_STEPS:  # one step: the scheduler's terminal shift divides 0 by 0 (NaN latents)
            raise InputError("steps", f"Qwen-Image-Edit's flow-matching schedule needs >= {MIN_STEPS} steps, "
                                      f"got {params.steps}")
        return width, height

    def edit_group(self, images: list[Image.Image], prompts: list[str], params: list[EditParams]) -> list[Image.Image]:
        """One batched pipeline call (batched true CFG) over items sharing size, steps and CFG; each input
        placed at the working size first (resized, padded where a limit forced it: see plan_edit_size)."""
        first = params[0]
        width, height = self._check_params(first, 0)
        # Resized with the pipeline's own filter (its VaeImageProcessor's ``resample``, lanczos in stock
        # diffusers), so an input that needs no padding reaches the model exactly as the stock call's.
        resample = PIL_INTERPOLATION[self.pipe.image_processor.config.resample]
        prepared = [place(img.size, (width, height), self.size_multiple).apply(img, resample) for img in images]
        if self.plus:  # the stock Plus pipeline takes one item at a time
            out = []
            for k, (img, prompt, p) in enumerate(zip(prepared, prompts, params)):
                with progress.subset([k]):  # each item's own steps (g2u.progress)
                    out.append(self._edit_plus(img, prompt, p, (width, height)))
            return out
        result = self.pipe(
            image=prepared,
            prompt=prompts,
            width=width,
            height=height,
            negative_prompt=first.negative_prompt,
            true_cfg_scale=first.text_cfg,
            num_inference_steps=first.steps,
            generator=self.generators(params),
        ).images
        return [img.convert("RGB") for img in result]

    def _edit_plus(self, image: Image.Image, prompt: str, params: EditParams, size: tuple[int, int]) -> Image.Image:
        """One item through the stock Plus pipeline (batch 1 only), output at the working size; the
        pipeline conditions on the image at its own sizes (384² for the VL encoder, 1024² for the VAE)."""
        width, height = size
        on_step = progress.diffusers_callback(params.steps)  # streamed requests see each step (g2u.progress)
        result = self.pipe(
            image=[image], prompt=prompt, negative_prompt=params.negative_prompt, true_cfg_scale=params.text_cfg,
            width=width, height=height, num_inference_steps=params.steps,
            generator=torch.Generator(device="cpu").manual_seed(params.seed),
            **({"callback_on_step_end": on_step} if on_step is not None else {}),
        ).images[0]
        return result.convert("RGB")

    def stepper(self, exact: bool = True) -> QwenEditStepper | None:
        """Step-wise stage I (``g2u.scheduler``), except for the Plus pipelines (stock, batch 1) and while
        a step cache (First-Block-Cache) is on: its reuse decision is per forward, not per item."""
        if self.plus or getattr(self.pipe.transformer, "is_cache_enabled", False):
            return None
        return QwenEditStepper(self, exact)

    def answer(self, contents: Sequence[Sequence[ContentPart]], params: AnswerParams) -> list[Answer]:
        """Stage II with the pipeline's own text encoder and processor (no second copy of the weights).
        Each request's images are first brought to their stage-II sizes (each answer's ``stage2`` says how)."""
        contents, sizing = prepare_contents(contents, self.stage2_sizing(stage2_cap(params)), params)
        return with_stage2(generate_answers(self.pipe.text_encoder, self.pipe.processor, contents, params), sizing)


class QwenEditStepper:
    """``EditStepper`` of the Qwen-Image-Edit backend: the input placed at its working size as
    ``edit_group`` places it, then ``SteppedEdits`` (the pipeline's own computation, one step at a time).
    States share a step when their working sizes match; CFG scales and step counts may differ."""

    def __init__(self, backend: QwenImageEditBackend, exact: bool = True):
        self.backend = backend
        self.steps = SteppedEdits(backend.pipe, exact)

    def key(self, params: EditParams) -> tuple:
        return ("qwen_image_edit", tuple(params.size))

    def begin(self, image: Image.Image, prompt: str, params: EditParams) -> EditState:
        backend = self.backend
        width, height = backend._check_params(params, 0)
        resample = PIL_INTERPOLATION[backend.pipe.image_processor.config.resample]
        placed = place(image.size, (width, height), backend.size_multiple).apply(image, resample)
        return self.steps.begin(placed, prompt, width=width, height=height, true_cfg_scale=params.text_cfg,
                                num_inference_steps=params.steps, negative_prompt=params.negative_prompt,
                                generator=backend.generators([params])[0])

    def step(self, states: Sequence[EditState]) -> None:
        self.steps.step(states)

    def rows(self, state: EditState) -> int:
        return state.rows

    def done(self, state: EditState) -> bool:
        return state.done

    def finish(self, state: EditState) -> EditOutput:
        return EditOutput(self.steps.finish(state).convert("RGB"))


def _plus_class() -> type:
    from diffusers import QwenImageEditPlusPipeline

    return QwenImageEditPlusPipeline


def qwen_image_edit_rule(area: int = 1024 * 1024) -> Callable[[int, int], tuple[int, int]]:
    """diffusers' own rule: ``calculate_dimensions(area, width / height)`` (sides multiples of 32)."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import calculate_dimensions

    def rule(width: int, height: int) -> tuple[int, int]:
        tw, th = calculate_dimensions(area, width / height)
        return max(tw, 1), max(th, 1)  # the stock rule rounds an extreme side to 0; clamp() lifts it

    return rule
