"""The ``bagel`` backend: BAGEL-7B-MoT does both G→U stages with one set of weights.

Stage I (edit) follows BAGEL's image editing: context ``[image as VAE latents + ViT features, prompt]``
prefilled once into a KV cache; the text-free (``[image]``) and image-free (``[prompt]``) CFG contexts
forked from it only when their scale is > 1; then the flow-matching sampler, all CFG branches of all
requests of a group in one forward per step. With ``think`` a textual plan is decoded first (BAGEL's
planning system prompt) and appended to the conditional context.

Stage II (answer) uses BAGEL's chat layout: each image and each text part becomes its own segment in
order (a ``multiturn`` turn marker as a segment of its role name), and the answer is decoded from
``<|im_start|>`` until ``<|im_end|>``, greedy by default.
``think_answer`` is BAGEL's own textual reasoning: its understanding think system prompt first, one
decode that writes ``<think> … </think>`` and then the answer, read after the reasoning.

Sizes (``g2u.sizing``), as BAGEL's inferencer: the working size is its image transform
(``ImageTransform(1024, 512, 16)``) of the input, and the ViT of the edit context reads that same resized
image; stage II reads every image at its own understanding size (the same transform, then the ViT's
``ImageTransform(980, 224, 14)``; ``stage2_sizing: shared``: all at the original's), capped by
``stage2_max_pixels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from g2u import progress
from g2u.backends.bagel.cache import KVCache
from g2u.backends.bagel.config import check_layout
from g2u.backends.bagel.layout import bagel_rule, fit_size, patchify, unpatchify
from g2u.backends.bagel.loading import load_model, load_tokenizer, load_vae
from g2u.backends.bagel.model import BagelModel, LatentSegment, Segment, TextSegment, VitSegment
from g2u.backends.bagel.params import (
    GEN_THINK_SYSTEM_PROMPT,
    VLM_THINK_SYSTEM_PROMPT,
    BagelOptions,
    VaeImage,
    bagel_options,
    sampler_settings,
)
from g2u.backends.bagel.sampler import RENORM_TYPES, SamplerSettings, denoise
from g2u.backends.bagel.vae import decode_latents, encode_latents
from g2u.backends.bagel.vision import VIT_MAX_PIXELS, VIT_MAX_SIDE, VIT_MIN_SIDE, to_unit_tensor
from g2u.backends.base import BackendBase, BackendInfo, read_demo_marker, with_stage2
from g2u.decoding import clean_answer_text
from g2u.devices import dtype_name, resolve_device, resolve_dtype
from g2u.errors import InputError
from g2u.modes import Mode
from g2u.sizing import (
    SizeLimits,
    Stage2Sizing,
    check_explicit,
    demo_scale,
    place,
    prepare_contents,
    stage2_cap,
)
from g2u.types import Answer, AnswerParams, ContentPart, EditOutput, EditParams, Turn

REAL_DEFAULT_EDIT_AREA = 1024 * 1024
VAE_MAX_SIDE = 1024
VAE_MIN_SIDE = 512
VAE_MAX_PIXELS = 14 * 14 * 9 * 1024
"""BAGEL's generation-side transform (``ImageTransform(1024, 512, 16)``): edits and VAE images in answers."""
THINK_END = "</think>"


class BagelBackend(BackendBase):
    """BAGEL-MoT for both stages. Answer parts may also be ``VaeImage`` (the ``vae_concat`` mode)."""

    options_model = BagelOptions
    no_offload = ("the bagel backend runs its MoT layers outside their forward() (KV-cache prefill and sampling), "
                  "so offload hooks would never fire; use quantize (nf4 or int8 fit a 24 GB card)")

    def __init__(self, model: BagelModel, vae, tokenizer, info: BackendInfo, default_edit_area: int, *,
                 demo_scale_area: int | None = None, stage2_max_pixels: int | None = None):
        self.model = model
        self.vae = vae
        self.tokenizer = tokenizer
        self.info = info
        self.default_edit_area = default_edit_area
        self.size_multiple = model.dims.size_multiple
        scale = demo_scale(demo_scale_area) if demo_scale_area else 1.0
        self.size_limits = SizeLimits(multiple=self.size_multiple, max_side=model.dims.max_edit_side)
        """Stage-I limits: the checkpoint's latent grid (real: 64 tokens × 16 px = 1024 a side)."""
        # a demo checkpoint runs the same transform with its sides scaled to its tiny grid (64/32 for 64²)
        max_side, min_side = int(VAE_MAX_SIDE * scale), int(VAE_MIN_SIDE * scale)
        name = f"bagel:ImageTransform({max_side},{min_side},{self.size_multiple})" + (" (demo)" if scale != 1 else "")
        self.default_size_rule = (name, bagel_rule(max_side, min_side, self.size_multiple,
                                                   int(VAE_MAX_PIXELS * scale * scale)))
        self.stage2_max_pixels = stage2_max_pixels
        """Cap on each stage-II image (``None``: the ViT transform's own 14·14·9·1024)."""
        # one MoT model for both stages (no offload hooks: its KV cache spans every layer); the VAE moves with it
        self.register("model", model, quantize=True)
        self.register("vae", vae)

    def stage2_sizing(self, cap: int | None = None) -> Stage2Sizing:
        """The understanding size of an image (the inferencer's generation-side resize, then the ViT
        transform): each image's own, as the inferencer reads every image (``stage2_sizing: shared``: all
        at the request's first image's)."""
        patch = self.model.vit_model.patch_size
        max_side = min(VIT_MAX_SIDE, self.model.dims.vit_max_per_side * patch)
        cap = cap or self.stage2_max_pixels
        cap = min(VIT_MAX_PIXELS, cap) if cap else VIT_MAX_PIXELS
        edit_rule = self.default_size_rule[1]

        def rule(width: int, height: int) -> tuple[int, int]:
            w, h = edit_rule(width, height)
            return fit_size(max(1, round(w)), max(1, round(h)), max_side, min(VIT_MIN_SIDE, max_side), patch, cap)

        # pre: the inferencer's vae_transform resize, before the ViT's
        return Stage2Sizing(f"bagel:vit ImageTransform(980,224,14) of {self.default_size_rule[0]}", rule,
                            SizeLimits(multiple=patch, max_side=max_side, max_pixels=cap), pre=self.plan_edit_size)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, demo: bool | None = None,
                        default_edit_area: int | None = None, stage2_max_pixels: int | None = None) -> BagelBackend:
        """Load a local folder in the released layout (``ema.safetensors``, ``ae.safetensors``,
        ``llm_config.json``, ``vit_config.json``, tokenizer files). ``demo``/``default_edit_area`` default
        to the folder's demo marker; a real checkpoint has none (``demo=False``, BAGEL's own transform)."""
        folder = Path(path)
        check_layout(folder)
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        marker = read_demo_marker(folder)
        if demo is None:
            demo = bool(marker and marker.get("demo"))
        if default_edit_area is None:
            default_edit_area = int(marker["default_edit_area"]) if demo and marker else REAL_DEFAULT_EDIT_AREA
        tokenizer, special = load_tokenizer(folder)
        model = load_model(folder, special, dev, torch_dtype)
        vae = load_vae(folder, dev, torch_dtype)
        info = BackendInfo(backend="bagel", checkpoint=str(path), demo=bool(demo), device=str(dev),
                           dtype=dtype_name(torch_dtype))
        return cls(model, vae, tokenizer, info, default_edit_area, demo_scale_area=default_edit_area if demo else None,
                   stage2_max_pixels=stage2_max_pixels)

    # ------------------------------------------------------------------ text
    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode_text(self, ids: Sequence[int]) -> str:
        return clean_answer_text(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    # ------------------------------------------------------------------ stage I
    def validate_edit(self, params: EditParams) -> None:
        """Reject what BAGEL cannot honour, per request, before any batched call."""
        if params.size is None:
            raise InputError("edit_size", "the working size must be resolved before edit()")
        check_explicit(tuple(params.size), self.size_limits)
        if params.steps < 2:
            raise InputError("steps", f"BAGEL's sampler needs >= 2 timesteps (steps − 1 model evaluations), "
                                      f"got {params.steps}")
        if params.negative_prompt.strip():
            raise InputError("negative_prompt", "BAGEL's text CFG drops the prompt; a negative prompt is not supported")
        think, max_think, _, interval, renorm_type, renorm_min = bagel_options(params)
        if renorm_type not in RENORM_TYPES:
            raise InputError("cfg_renorm_type", f"must be one of {', '.join(RENORM_TYPES)}, got {renorm_type!r}")
        if len(interval) != 2 or not 0.0 <= interval[0] <= interval[1] <= 1.0:
            raise InputError("cfg_interval", f"must be (low, high) with 0 <= low <= high <= 1, got {interval}")
        if not 0.0 <= renorm_min <= 1.0:
            raise InputError("cfg_renorm_min", f"must be in [0, 1], got {renorm_min}")
        if think and max_think < 1:
            raise InputError("max_think_tokens", f"must be >= 1, got {max_think}")

    @torch.inference_mode()
    def edit_group(self, images: list[Image.Image], prompts: list[str], params: list[EditParams]) -> list[EditOutput]:
        """One batch of items sharing size and sampler settings; each keeps its own seed (posterior sample
        and initial noise), so its thought does not depend on its batch-mates."""
        think, max_think = bagel_options(params[0])[:2]
        result, plans = self._edit_group(images, prompts, [p.seed for p in params], params[0].size,
                                         sampler_settings(params[0]), max_think if think else 0)
        return [EditOutput(img, plan) for img, plan in zip(result, plans)]

    def _edit_group(self, images: list[Image.Image], prompts: list[str], seeds: list[int], size: tuple[int, int],
                    settings: SamplerSettings, think_tokens: int) -> tuple[list[Image.Image], list[str | None]]:
        model = self.model
        width, height = size
        patch = model.dims.latent_patch
        grid = (height // self.size_multiple, width // self.size_multiple)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        # As the inferencer: the input resized once to the working size (padded where a limit forces it);
        # the VAE and the ViT of the edit context both read that image.
        images = [place(img.size, size, self.size_multiple).apply(img) for img in images]
        pixels = torch.stack([to_unit_tensor(img, size) for img in images]).to(model.device)
        latents = encode_latents(self.vae, pixels, generators).float().cpu()
        context = [patchify(z, patch) for z in latents]
        noise = torch.stack([torch.randn(c.shape, generator=g) for c, g in zip(context, generators)])

        cache, plans = self.edit_contexts(images, prompts, context, grid, settings, think_tokens)
        clean = denoise(model, cache, noise, grid, settings).cpu()
        z = torch.stack([unpatchify(x, *grid, patch) for x in clean])
        decoded = decode_latents(self.vae, z.to(model.device)).float().cpu()
        return [_to_image(x) for x in decoded], plans

    def edit_contexts(self, images: list[Image.Image], prompts: list[str], latents: list[torch.Tensor],
                      grid: tuple[int, int], settings: SamplerSettings,
                      think_tokens: int = 0) -> tuple[KVCache, list[str | None]]:
        """The prefilled KV cache of a group: conditional rows, then the text-free and image-free CFG
        rows when their branch is needed. Each context is computed once; CFG contexts fork from it."""
        model = self.model
        rows = len(images)
        has_text, has_img = settings.branches
        prompt_ids = [self.encode_text(p) for p in prompts]
        cond = model.new_cache(rows)
        if think_tokens:
            model.extend(cond, [[TextSegment(self.encode_text(GEN_THINK_SYSTEM_PROMPT))]] * rows)
        image_free = cond.clone() if has_img else None
        model.extend(cond, [[LatentSegment(lat, grid), VitSegment(img)] for lat, img in zip(latents, images)])
        text_free = cond.clone() if has_text else None
        model.extend(cond, [[TextSegment(ids)] for ids in prompt_ids])
        if image_free is not None:
            model.extend(image_free, [[TextSegment(ids)] for ids in prompt_ids])
        plans: list[str | None] = [None] * rows
        if think_tokens:
            # The inferencer's budget: ``max_think_token_n`` = N counts its start token, so N − 1 plan tokens.
            plan_ids = model.decode(cond.clone(), think_tokens - 1)
            # Kept verbatim (special tokens, whitespace) as the reference re-reads its plan.
            plans = [self.tokenizer.decode(ids, skip_special_tokens=False) for ids in plan_ids]
            model.extend(cond, [[TextSegment(self.encode_text(plan))] for plan in plans])
        parts = [c for c in (cond, text_free, image_free) if c is not None]
        return (KVCache.cat(parts) if len(parts) > 1 else cond), plans

    # ------------------------------------------------------------------ stage II
    @torch.inference_mode()
    def answer(self, contents: Sequence[Sequence[ContentPart | VaeImage]], params: AnswerParams) -> list[Answer]:
        """Stage II: one answer per request from its interleaved parts, all requests in one batch."""
        if not contents:
            return []
        contents, sizing = prepare_contents(contents, self.stage2_sizing(stage2_cap(params)), params)
        cache = self.answer_context(contents)
        probs: list[list[float]] | None = [] if params.return_scores else None
        stream = progress.token_stream(lambda x: self.tokenizer.decode(x, skip_special_tokens=True),
                                       [self.model.special.eos])
        if stream is not None:  # a streamed request listens: tokens it read, then each one chosen
            stream.prompt(cache.valid.sum(1).tolist())
        ids = self.model.decode(cache, params.max_new_tokens, params.temperature, token_probs=probs, stream=stream)
        if stream is not None:
            stream.end()
        texts = [self.decode_text(x) for x in ids]
        if probs is None:
            return with_stage2([Answer(t) for t in texts], sizing)
        return with_stage2([Answer(t, sum(p) / len(p) if p else 0.0, p[0] if p else 0.0)
                            for t, p in zip(texts, probs)], sizing)

    def thought_part(self, image: Image.Image, mode: Mode) -> Image.Image | VaeImage:
        """A thought enters the answer prompt as ViT features (``g2u``), or as VAE latents through the
        generation expert (``vae_concat``: ``answer`` lays a ``VaeImage`` out as latents)."""
        return VaeImage(image) if mode.thought_as == "vae" else super().thought_part(image, mode)

    @torch.inference_mode()
    def think_answer(self, contents: Sequence[Sequence[ContentPart]], params: AnswerParams,
                     max_think_tokens: int) -> list[tuple[str, Answer]]:
        """Textual CoT the way BAGEL does it (inferencer ``think=True, understanding_output=True``): its
        understanding think system prompt, then the request's parts, then one decode of at most
        ``max_think_tokens − 1`` tokens (``max_think_tokens`` is the request's ``reasoning_tokens``; the
        inferencer's ``max_think_token_n`` budget counts its start token) that writes
        ``<think> reasoning </think> answer``. Returns (reasoning, answer) per request. Where the budget
        ends before ``</think>`` closes (or nothing follows it), the answer is decoded in a second pass
        from the parts plus the reasoning, with ``params.max_new_tokens``."""
        if max_think_tokens < 1:
            raise InputError("max_think_tokens", f"must be >= 1, got {max_think_tokens}")
        if not contents:
            return []
        contents, sizing = prepare_contents(contents, self.stage2_sizing(stage2_cap(params)), params)
        system = [TextSegment(self.encode_text(VLM_THINK_SYSTEM_PROMPT))]
        rows = [system + [self._segment(part) for part in parts] for parts in contents]
        cache = self.model.new_cache(len(rows))
        self.model.extend(cache, rows)
        # As the inferencer's ``max_think_token_n``: the budget counts the start token (N − 1 new tokens).
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True)
                 for ids in self.model.decode(cache, max_think_tokens - 1, params.temperature)]
        out: list[tuple[str, Answer] | None] = [None] * len(texts)
        retry = []
        for i, text in enumerate(texts):
            reasoning, closed, answer = text.partition(THINK_END)
            reasoning = reasoning.replace("<think>", "").strip()
            if closed and answer.strip():
                out[i] = (reasoning, Answer(answer.strip(), stage2=sizing[i]))
            else:
                retry.append(i)
        if retry:
            follow = [[*contents[i], f"Reasoning: {out_reasoning(texts[i])}"] for i in retry]
            for i, answer in zip(retry, self.answer(follow, params)):
                out[i] = (out_reasoning(texts[i]), replace(answer, stage2=sizing[i]))
        return out  # type: ignore[return-value]

    def answer_context(self, contents: Sequence[Sequence[ContentPart | VaeImage]]) -> KVCache:
        """The prefilled cache of answer prompts (one row per request)."""
        rows = [[self._segment(part) for part in parts] for parts in contents]
        cache = self.model.new_cache(len(rows))
        self.model.extend(cache, rows)
        return cache

    def _segment(self, part: ContentPart | VaeImage) -> Segment:
        """One part as a segment. BAGEL's layout has no roles (each part is its own ``<|im_start|> …
        <|im_end|>`` segment), so a turn marker (the ``multiturn`` layout) is kept as a segment of its role
        name, ``<|im_start|>assistant<|im_end|>``: the turns stay visible, in ChatML's role words."""
        if isinstance(part, Turn):
            return TextSegment(self.encode_text(part.role))
        if isinstance(part, str):
            return TextSegment(self.encode_text(part))
        if isinstance(part, VaeImage):
            return self._vae_segment(part.image)
        if isinstance(part, Image.Image):
            return VitSegment(part)
        raise InputError("contents", f"parts must be images, VaeImage or text, got {type(part).__name__}")

    def _vae_segment(self, image: Image.Image) -> LatentSegment:
        """An image as clean VAE latents (posterior mean: answers stay deterministic)."""
        m, limit = self.size_multiple, self.model.dims.max_edit_side
        size = fit_size(*image.size, min(VAE_MAX_SIDE, limit), min(VAE_MIN_SIDE, limit), m)
        pixels = to_unit_tensor(image, size)[None].to(self.model.device)
        z = encode_latents(self.vae, pixels, None).float().cpu()[0]
        return LatentSegment(patchify(z, self.model.dims.latent_patch), (size[1] // m, size[0] // m))


def out_reasoning(text: str) -> str:
    """The reasoning part of a think decode (without the tags)."""
    return text.partition(THINK_END)[0].replace("<think>", "").strip()


def _to_image(x: torch.Tensor) -> Image.Image:
    """``[3, H, W]`` in [-1, 1] → RGB, truncated to uint8 as the inferencer's ``decode_image`` does
    (``(x·0.5 + 0.5).clamp(0, 1)·255`` then ``.to(torch.uint8)``; no rounding)."""
    arr = ((x * 0.5 + 0.5).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")
