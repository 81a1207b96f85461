"""The ``decoupled`` backend: any diffusers image-editing pipeline (stage I) + any transformers
image-text-to-text model (stage II), two separate sets of weights.

Supported editors (dispatch on the loaded pipeline class, which decides how the G→U parameters map):

* ``StableDiffusionInstructPix2PixPipeline``: text_cfg → ``guidance_scale``, image_cfg →
  ``image_guidance_scale``; the working size is the size of the input image (the pipeline has no
  height/width arguments), so the input is resized to exactly ``params.size`` first.
* ``FluxKontextPipeline``: text_cfg → the distilled ``guidance_scale`` (a conditioning input of the
  transformer, one pass per step), image_cfg must be 1.0, true CFG off; height/width/max_area are passed
  and Kontext's auto-resize to its preferred resolutions is disabled, so the working size is honoured.

Answerers: anything ``AutoModelForImageTextToText`` loads (Qwen2.5-VL, LLaVA, ...), with the stock
``AutoProcessor``; for Qwen2-VL/Qwen2.5-VL the image-only processor is used when the stock one cannot be
built (its video processor needs torchvision).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from g2u import progress
from g2u.backends.base import BackendBase, BackendInfo, read_demo_marker, with_stage2
from g2u.devices import dtype_name, resolve_device, resolve_dtype
from g2u.errors import CheckpointError, G2UError, InputError, ModelError
from g2u.sizing import (
    SizeLimits,
    area_target,
    demo_scale,
    place,
    prepare_contents,
    stage2_cap,
)
from g2u.types import Answer, AnswerParams, ContentPart, EditParams

BACKEND_FILE = "g2u_backend.json"
REAL_DEFAULT_EDIT_AREA = 512 * 512
MAX_EDIT_SIDE = 2048
_QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")

__all__ = ["BACKEND_FILE", "DecoupledBackend", "load_decoupled_dir"]


# --------------------------------------------------------------------------- editor adapters
class _EditorAdapter:
    """How one diffusers pipeline family reads the G→U edit parameters."""

    name = "editor"

    def __init__(self, pipe: Any):
        self.pipe = pipe

    @property
    def size_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor)

    def check(self, params: EditParams) -> None:
        """Reject what this pipeline cannot do; raises InputError naming the request field."""
        if params.size is None:
            raise InputError("edit_size", "the working size must be resolved before the edit")
        w, h = params.size
        m = self.size_multiple
        if not (isinstance(w, int) and isinstance(h, int)) or w < m or h < m or w % m or h % m:
            raise InputError("edit_size", f"each side must be a positive multiple of {m} for {self.name}, "
                                          f"got {w}x{h}")
        if not isinstance(params.steps, int) or params.steps < 1:
            raise InputError("steps", f"must be an integer >= 1, got {params.steps!r}")
        for field in ("text_cfg", "image_cfg"):
            if not math.isfinite(getattr(params, field)):
                raise InputError(field, "must be a finite number")

    def call_kwargs(self, params: EditParams, batch: int) -> dict[str, Any]:
        raise NotImplementedError


class _InstructPix2PixAdapter(_EditorAdapter):
    """InstructPix2Pix: text CFG and image CFG over three UNet branches (text+image, image, none).

    diffusers computes ``uncond + text_cfg·(text − image) + image_cfg·(image − uncond)``. At image_cfg 1.0
    this is ``image + text_cfg·(text − image)``: plain text CFG against the image-conditioned branch, the
    paper's "no image CFG" — but diffusers still runs all three branches (the unconditional one cancels
    out algebraically; it is computed and thrown away, 1.5× the UNet work of a 2-branch CFG). Guidance is
    only applied when text_cfg > 1 and image_cfg ≥ 1; otherwise diffusers silently drops *both* scales,
    so such combinations are rejected rather than ignored.
    """

    name = "InstructPix2Pix"

    def check(self, params: EditParams) -> None:
        super().check(params)
        if params.text_cfg < 1.0:
            raise InputError("text_cfg", f"must be >= 1.0 for {self.name} (diffusers applies no guidance "
                                         f"below 1), got {params.text_cfg}")
        if params.image_cfg < 1.0:
            raise InputError("image_cfg", f"must be >= 1.0 for {self.name} (below 1 diffusers turns all "
                                          f"guidance off), got {params.image_cfg}")
        if params.text_cfg == 1.0 and params.image_cfg != 1.0:
            raise InputError("image_cfg", f"{self.name} applies image CFG only together with text CFG: "
                                          "use text_cfg > 1 or image_cfg = 1")

    def call_kwargs(self, params: EditParams, batch: int) -> dict[str, Any]:
        return {
            "num_inference_steps": params.steps,
            "guidance_scale": params.text_cfg,
            "image_guidance_scale": params.image_cfg,
            "negative_prompt": [params.negative_prompt] * batch,
        }


class _FluxKontextAdapter(_EditorAdapter):
    """FLUX.1-Kontext: guidance-distilled, so text CFG is the ``guidance_scale`` embedding (one
    transformer pass per step); it has no image-CFG branch, so only image_cfg = 1.0 is possible. True
    CFG (a second, negative-prompt pass) stays off, which also means ``negative_prompt`` is unused."""

    name = "FluxKontext"

    @property
    def size_multiple(self) -> int:
        return int(self.pipe.vae_scale_factor) * 2  # VAE stride × the 2×2 latent packing

    def check(self, params: EditParams) -> None:
        super().check(params)
        if params.image_cfg != 1.0:
            raise InputError("image_cfg", f"{self.name} has no image-CFG branch: only 1.0 is possible, "
                                          f"got {params.image_cfg}")
        if params.text_cfg < 0.0:
            raise InputError("text_cfg", f"must be >= 0 for {self.name}, got {params.text_cfg}")

    def call_kwargs(self, params: EditParams, batch: int) -> dict[str, Any]:
        w, h = params.size  # type: ignore[misc]
        kwargs: dict[str, Any] = {
            "num_inference_steps": params.steps,
            "guidance_scale": params.text_cfg,
            "true_cfg_scale": 1.0,
            "height": h,
            "width": w,
            # Kontext rescales (height, width) to max_area keeping the ratio: the exact area keeps the size.
            "max_area": w * h,
        }
        if "_auto_resize" in inspect.signature(self.pipe.__call__).parameters:
            kwargs["_auto_resize"] = False  # else the input snaps to Kontext's preferred ~1024² sizes
        return kwargs


def _editor_adapter(pipe: Any) -> _EditorAdapter:
    from diffusers import FluxKontextPipeline, StableDiffusionInstructPix2PixPipeline

    if isinstance(pipe, StableDiffusionInstructPix2PixPipeline):
        return _InstructPix2PixAdapter(pipe)
    if isinstance(pipe, FluxKontextPipeline):
        return _FluxKontextAdapter(pipe)
    raise CheckpointError(f"editor pipeline {type(pipe).__name__} is not supported by the decoupled backend; "
                          "supported: StableDiffusionInstructPix2PixPipeline, FluxKontextPipeline")


# --------------------------------------------------------------------------- loading helpers
def _local_or_hub(ref: str) -> str:
    """A local folder as an absolute path; anything else is passed on as a hub id (may fail offline)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.is_absolute() or ref.startswith((".", "~")) or ref.count("/") != 1:
        raise CheckpointError(f"{ref!r} is neither a local folder nor a hub id (owner/name)")
    return ref


def _load_processor(answerer: str, model_type: str) -> Any:
    """The stock processor; for Qwen-VL the image-only one when the stock one cannot be built."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(answerer)
        stock_error: Exception | None = None
    except Exception as exc:  # noqa: BLE001 - any failure to build the stock processor means: fall back
        processor, stock_error = None, exc
    if processor is not None and hasattr(processor, "image_processor"):
        return processor
    if model_type in _QWEN_VL_TYPES:
        from g2u.backends.qwen_vl import QwenVLImageProcessor

        return QwenVLImageProcessor.from_pretrained(answerer)
    reason = f": {stock_error}" if stock_error else " (no image processor found)"
    raise CheckpointError(f"cannot build a processor for answerer {answerer!r}{reason}")


def _find_demo_marker(*refs: str) -> dict | None:
    """A demo marker next to the editor/answerer folders or in their common parent."""
    dirs = [Path(r) for r in refs if Path(r).is_dir()]
    candidates = list(dirs)
    parents = {d.parent for d in dirs}
    if len(dirs) == len(refs) and len(parents) == 1:
        candidates.append(parents.pop())
    for folder in candidates:
        marker = read_demo_marker(folder)
        if marker is not None:
            return marker
    return None


# --------------------------------------------------------------------------- the backend
class DecoupledBackend(BackendBase):
    """Stage I on a diffusers edit pipeline, stage II on a separate image-text-to-text model."""

    def __init__(self, editor: Any, answer_model: Any, processor: Any, info: BackendInfo,
                 default_edit_area: int = REAL_DEFAULT_EDIT_AREA):
        self.editor = editor
        self.answer_model = answer_model
        self.processor = processor
        self.info = info
        self.default_edit_area = int(default_edit_area)
        self._adapter = _editor_adapter(editor)
        self.size_multiple = self._adapter.size_multiple
        demo = info.demo
        scale = demo_scale(self.default_edit_area, 512) if demo else 1.0
        self.size_limits = SizeLimits(multiple=self.size_multiple,
                                      max_side=max(self.size_multiple, int(MAX_EDIT_SIDE * scale)))
        """Any diffusers editor: no rule of its own here, the input's aspect at ``default_edit_area``."""
        area = self.default_edit_area
        self.default_size_rule = (f"area:{area}", lambda w, h: area_target((w, h), area))
        self.stage2_max_pixels: int | None = None
        """Cap on each stage-II image for Qwen-VL answerers (``None``: the processor's ``max_pixels``)."""
        denoiser = getattr(editor, "transformer", None) or getattr(editor, "unet", None)  # a diffusers pipeline's
        self.register("editor", editor, offload="pipeline")
        if denoiser is not None:
            self.register("denoiser", denoiser, quantize=True, move=False, role="denoiser")
        self.register("answer_model", answer_model, quantize=True, offload="module", role="answer_model")

    @classmethod
    def from_pretrained(cls, editor: str, answerer: str, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, demo: bool | None = None,
                        default_edit_area: int | None = None,
                        checkpoint_label: str | None = None) -> DecoupledBackend:
        """Load both halves from local folders (real layouts) or hub ids.

        ``demo``/``default_edit_area`` default to a demo marker found beside the folders (demo
        checkpoints), else to a real checkpoint with a 512² working area.
        """
        from diffusers import DiffusionPipeline
        from transformers import AutoConfig, AutoModelForImageTextToText

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        editor_ref, answerer_ref = _local_or_hub(str(editor)), _local_or_hub(str(answerer))
        try:
            pipe = DiffusionPipeline.from_pretrained(editor_ref, dtype=dt)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load editor pipeline {editor_ref!r}: {exc}") from exc
        _editor_adapter(pipe)  # unsupported pipeline → CheckpointError before loading the answerer
        pipe.to(dev)
        pipe.set_progress_bar_config(disable=True)
        try:
            model_type = AutoConfig.from_pretrained(answerer_ref).model_type
            model = AutoModelForImageTextToText.from_pretrained(answerer_ref, dtype=dt)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load answerer {answerer_ref!r}: {exc}") from exc
        model.to(dev).eval()
        processor = _load_processor(answerer_ref, model_type)

        marker = _find_demo_marker(editor_ref, answerer_ref)
        if demo is None:
            demo = bool(marker and marker.get("demo"))
        if default_edit_area is None:
            default_edit_area = (marker or {}).get("default_edit_area") or REAL_DEFAULT_EDIT_AREA
        info = BackendInfo(backend="decoupled", checkpoint=checkpoint_label or f"{editor}+{answerer}",
                           demo=bool(demo), device=str(dev), dtype=dtype_name(dt))
        return cls(pipe, model, processor, info, default_edit_area=default_edit_area)

    # ------------------------------------------------------------------ stage I
    def validate_edit(self, params: EditParams) -> None:
        """Per-item check (raises InputError naming the field), for callers that validate before batching."""
        self._adapter.check(params)

    def edit_group(self, images: list[Image.Image], prompts: list[str], params: list[EditParams]) -> list[Image.Image]:
        """Edit each image at exactly ``params[0].size`` in one pipeline call; per-item CPU generators
        (noise independent of batch-mates and device)."""
        first = params[0]
        size = first.size
        assert size is not None  # checked by validate_edit
        # resized (padded where a limit forced it) to the working size, as plan_edit_size reported
        batch = [place(img.size, size, self.size_multiple).apply(img) for img in images]
        kwargs = self._adapter.call_kwargs(first, len(images))
        on_step = progress.diffusers_callback(first.steps)  # streamed requests see each step (g2u.progress)
        if on_step is not None:
            kwargs["callback_on_step_end"] = on_step
        try:
            result = self.editor(prompt=prompts, image=batch, generator=self.generators(params),
                                 output_type="pil", **kwargs)
        except G2UError:
            raise
        except Exception as exc:
            raise ModelError(f"{self._adapter.name} edit failed: {exc}") from exc
        out = []
        for img in result.images:
            img = img.convert("RGB")
            if img.size != size:
                raise ModelError(f"{self._adapter.name} returned {img.size}, expected {size}")
            out.append(img)
        return out

    # ------------------------------------------------------------------ stage II
    def stage2_sizing(self, cap: int | None = None):
        """Qwen-VL answerers: every image of a request at one capped size (None for others, e.g. LLaVA,
        whose processor resizes every image to its fixed input size already)."""
        from g2u.backends.qwen_vl import qwen_vl_stage2_for

        return qwen_vl_stage2_for(self.processor, cap or self.stage2_max_pixels)

    def answer(self, contents: Sequence[Sequence[ContentPart]], params: AnswerParams) -> list[Answer]:
        """One batched chat-template generation over all requests (see ``qwen_vl.generate_answers``)."""
        from g2u.backends.qwen_vl import generate_answers

        contents, sizing = prepare_contents(contents, self.stage2_sizing(stage2_cap(params)), params)
        return with_stage2(generate_answers(self.answer_model, self.processor, contents, params), sizing)


def load_decoupled_dir(folder: str | Path, device: str | torch.device | None = None,
                       dtype: str | torch.dtype | None = None) -> DecoupledBackend:
    """Load a folder holding ``g2u_backend.json`` = {"backend": "decoupled", "editor": ..., "answerer": ...}.

    Relative editor/answerer paths are resolved against the folder; absolute paths and hub ids are
    allowed. A demo marker in the folder sets ``demo`` and the default working area.
    """
    folder = Path(folder)
    spec_path = folder / BACKEND_FILE
    if not spec_path.is_file():
        raise CheckpointError(f"{folder} has no {BACKEND_FILE}")
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{spec_path} is not valid JSON: {exc}") from exc
    if spec.get("backend") != "decoupled":
        raise CheckpointError(f"{spec_path} names backend {spec.get('backend')!r}, not 'decoupled'")
    refs = {}
    for key in ("editor", "answerer"):
        ref = spec.get(key)
        if not isinstance(ref, str) or not ref:
            raise CheckpointError(f"{spec_path} must name the {key} (a folder or a hub id)")
        local = Path(ref).expanduser()
        if not local.is_absolute() and (folder / local).is_dir():
            local = folder / local
        refs[key] = str(local.resolve()) if local.is_dir() else ref
    marker = read_demo_marker(folder)
    return DecoupledBackend.from_pretrained(
        refs["editor"], refs["answerer"], device=device, dtype=dtype,
        demo=bool(marker and marker.get("demo")),
        default_edit_area=(marker or {}).get("default_edit_area") or REAL_DEFAULT_EDIT_AREA,
        checkpoint_label=str(folder),
    )
