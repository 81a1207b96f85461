"""Qwen-Image-Edit at an explicit working size, batched, with one-forward true CFG.

The stock ``QwenImageEditPipeline.__call__`` (diffusers 0.42.1) always resizes the input to
``calculate_dimensions(1024 * 1024, ratio)`` whatever ``height``/``width`` are passed, conditions on that
~1024² image, and runs the conditional and unconditional CFG branches as two transformer passes. For G→U
the thought must be made at the working size the caller chose (it is compared pixel for pixel with the
input and costs ~3× less at 512²), every item needs its own seed, and one batch-2B pass is cheaper than
two batch-B passes. Everything else (prompt encoding, latent preparation, scheduler, decoding) is the
parent's code.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import QwenImageEditPipeline
from diffusers.models.attention_dispatch import _AttentionBackendRegistry
from diffusers.pipelines.qwenimage.pipeline_output import QwenImagePipelineOutput
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_shift, retrieve_timesteps
from PIL import Image

from g2u import progress
from g2u.deadline import check_deadline
from g2u.errors import ModelError

# Attention backends that honour a key-padding mask exactly (padded text positions get zero weight);
# with any other backend, cond and uncond are only batched when no padding is needed.
_MASKED_ATTENTION_BACKENDS = frozenset({"native", "_native_math", "_native_efficient"})


def _pad_text(
    embeds: torch.Tensor, mask: torch.Tensor | None, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad prompt embeddings to ``length`` tokens and return them with an explicit 0/1 mask."""
    batch, seq_len, dim = embeds.shape
    if mask is None:
        mask = torch.ones(batch, seq_len, dtype=torch.long, device=embeds.device)
    if seq_len < length:
        embeds = torch.cat([embeds, embeds.new_zeros(batch, length - seq_len, dim)], dim=1)
        mask = torch.cat([mask, mask.new_zeros(batch, length - seq_len)], dim=1)
    return embeds, mask


class QwenImageEditG2UPipeline(QwenImageEditPipeline):
    """``QwenImageEditPipeline`` with an explicit working size, per-item generators and batched true CFG.

    Loads from the same checkpoint layout as the parent (``from_pretrained`` is inherited).
    """

    def _attention_takes_mask(self) -> bool:
        """Whether the transformer's attention backend applies ``encoder_hidden_states_mask`` exactly."""
        backend = None
        for processor in self.transformer.attn_processors.values():
            backend = getattr(processor, "_attention_backend", None)
            break
        if backend is None:
            backend, _ = _AttentionBackendRegistry.get_active_backend()
        return str(getattr(backend, "value", backend)) in _MASKED_ATTENTION_BACKENDS

    @torch.no_grad()
    def __call__(
        self,
        image: Sequence[Image.Image],
        prompt: Sequence[str],
        *,
        width: int,
        height: int,
        true_cfg_scale: float,
        num_inference_steps: int,
        negative_prompt: str | Sequence[str] = " ",
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        batch_cfg: bool | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> QwenImagePipelineOutput | tuple:
        """Edit ``image[i]`` under ``prompt[i]`` at exactly ``width`` × ``height``.

        Args:
            image: one input image per prompt; each is resized to ``(width, height)`` (aspect not kept:
                the caller chose the working size) and both the VAE and the text encoder see that image.
            prompt: one edit instruction per image.
            width, height: working size in pixels, multiples of ``vae_scale_factor * 2``; the output has
                this size too. Never rounded or replaced silently.
            negative_prompt: the unconditional prompt of true CFG (stock default ``" "``), one or per item.
            true_cfg_scale: text CFG scale; ``<= 1`` skips the unconditional branch entirely (no default
                here: the request schema's is the one, ``g2u.schema``).
            num_inference_steps: denoising steps (likewise the schema's).
            generator: one generator per item (so an item's noise does not depend on its batch-mates) or
                a single one for the whole batch.
            batch_cfg: run cond and uncond in one transformer forward of batch 2B. ``None``: whenever the
                attention backend applies the padding mask exactly, or no padding is needed.
        """
        # 1. Check inputs
        images = list(image)
        prompts = list(prompt)
        batch_size = len(prompts)
        if batch_size == 0 or len(images) != batch_size:
            raise ValueError(f"need one image per prompt, got {len(images)} images and {batch_size} prompts")
        multiple_of = self.vae_scale_factor * 2
        if width % multiple_of or height % multiple_of or width <= 0 or height <= 0:
            raise ValueError(
                f"width and height must be positive multiples of {multiple_of}, got {width}x{height}"
            )
        negative_prompts = (
            [negative_prompt] * batch_size if isinstance(negative_prompt, str) else list(negative_prompt)
        )
        if len(negative_prompts) != batch_size:
            raise ValueError(f"got {len(negative_prompts)} negative prompts for {batch_size} prompts")
        if isinstance(generator, Sequence) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for {batch_size} prompts")
        if self.transformer.config.guidance_embeds:
            raise ValueError("guidance-distilled transformers are not supported by this pipeline")
        do_true_cfg = true_cfg_scale > 1
        self._guidance_scale = None
        self._attention_kwargs = {}
        self._current_timestep = None
        self._interrupt = False
        device = self._execution_device

        # 2. Preprocess the images at the working size (the stock call would resize them to ~1024²)
        prompt_images = [self.image_processor.resize(img.convert("RGB"), height, width) for img in images]
        image_tensor = self.image_processor.preprocess(prompt_images, height, width).unsqueeze(2)

        # 3. Encode the prompts with the images (Qwen2.5-VL sees instruction + image), and the negatives
        prompt_embeds, prompt_embeds_mask = self.encode_prompt(
            prompt=prompts, image=prompt_images, device=device
        )
        if do_true_cfg:
            negative_embeds, negative_embeds_mask = self.encode_prompt(
                prompt=negative_prompts, image=prompt_images, device=device
            )
            text_len = max(prompt_embeds.shape[1], negative_embeds.shape[1])
            needs_padding = (
                prompt_embeds.shape[1] != negative_embeds.shape[1]
                or prompt_embeds_mask is not None
                or negative_embeds_mask is not None
            )
            if batch_cfg is None:
                batch_cfg = not needs_padding or self._attention_takes_mask()
            if batch_cfg:
                cond, cond_mask = _pad_text(prompt_embeds, prompt_embeds_mask, text_len)
                uncond, uncond_mask = _pad_text(negative_embeds, negative_embeds_mask, text_len)
                cfg_embeds = torch.cat([cond, uncond], dim=0)
                cfg_mask = torch.cat([cond_mask, uncond_mask], dim=0)
                cfg_mask = None if bool(cfg_mask.all()) else cfg_mask

        # 4. Prepare latents: per-item noise from per-item generators, and the packed image latents
        num_channels_latents = self.transformer.config.in_channels // 4
        latents, image_latents = self.prepare_latents(
            image_tensor,
            batch_size,
            num_channels_latents,
            height,
            width,
            prompt_embeds.dtype,
            device,
            list(generator) if isinstance(generator, Sequence) else generator,
        )
        latent_hw = (1, height // self.vae_scale_factor // 2, width // self.vae_scale_factor // 2)
        img_shapes = [[latent_hw, latent_hw]] * batch_size

        # 5. Prepare timesteps (same dynamic shift as the stock pipeline, from the noise sequence length)
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        mu = calculate_shift(
            latents.shape[1],
            self.scheduler.config.get("base_image_seq_len", 256),
            self.scheduler.config.get("max_image_seq_len", 4096),
            self.scheduler.config.get("base_shift", 0.5),
            self.scheduler.config.get("max_shift", 1.15),
        )
        timesteps, num_inference_steps = retrieve_timesteps(
            self.scheduler, num_inference_steps, device, sigmas=sigmas, mu=mu
        )
        self._num_timesteps = len(timesteps)

        # 6. Denoising loop
        self.scheduler.set_begin_index(0)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for k, t in enumerate(timesteps, 1):
                self._current_timestep = t
                latent_model_input = torch.cat([latents, image_latents], dim=1)
                timestep = t.expand(latents.shape[0]).to(latents.dtype) / 1000

                if do_true_cfg and batch_cfg:
                    # 6a. cond and uncond in one forward of batch 2B
                    with self.transformer.cache_context("cond_uncond"):
                        both = self.transformer(
                            hidden_states=torch.cat([latent_model_input, latent_model_input], dim=0),
                            timestep=torch.cat([timestep, timestep], dim=0),
                            encoder_hidden_states=cfg_embeds,
                            encoder_hidden_states_mask=cfg_mask,
                            img_shapes=img_shapes * 2,
                            attention_kwargs=self._attention_kwargs,
                            return_dict=False,
                        )[0]
                    noise_pred, neg_noise_pred = both[:, : latents.size(1)].chunk(2, dim=0)
                else:
                    # 6b. cond (and, without batching, uncond) as separate forwards, as the stock pipeline
                    with self.transformer.cache_context("cond"):
                        noise_pred = self.transformer(
                            hidden_states=latent_model_input,
                            timestep=timestep,
                            encoder_hidden_states=prompt_embeds,
                            encoder_hidden_states_mask=prompt_embeds_mask,
                            img_shapes=img_shapes,
                            attention_kwargs=self._attention_kwargs,
                            return_dict=False,
                        )[0][:, : latents.size(1)]
                    if do_true_cfg:
                        with self.transformer.cache_context("uncond"):
                            neg_noise_pred = self.transformer(
                                hidden_states=latent_model_input,
                                timestep=timestep,
                                encoder_hidden_states=negative_embeds,
                                encoder_hidden_states_mask=negative_embeds_mask,
                                img_shapes=img_shapes,
                                attention_kwargs=self._attention_kwargs,
                                return_dict=False,
                            )[0][:, : latents.size(1)]

                if do_true_cfg:
                    # 6c. true CFG with the stock norm rescale (keeps the cond prediction's norm)
                    comb_pred = neg_noise_pred + true_cfg_scale * (noise_pred - neg_noise_pred)
                    cond_norm = torch.norm(noise_pred, dim=-1, keepdim=True)
                    noise_norm = torch.norm(comb_pred, dim=-1, keepdim=True)
                    noise_pred = comb_pred * (cond_norm / noise_norm)

                # 6d. x_t -> x_t-1
                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
                progress_bar.update()
                check_deadline("denoising")
                progress.step(k, len(timesteps))

        if not torch.isfinite(latents).all():  # never an all-black thought answered as if it were one
            raise ModelError(f"stage I produced non-finite latents ({num_inference_steps} steps)")

        # 7. Decode at the working size
        self._current_timestep = None
        if output_type == "latent":
            result = latents
        else:
            latents = self._unpack_latents(latents, height, width, self.vae_scale_factor).to(self.vae.dtype)
            z_dim = self.vae.config.z_dim
            latents_mean = torch.tensor(self.vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(latents)
            latents_std = torch.tensor(self.vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(latents)
            latents = latents * latents_std + latents_mean
            decoded = self.vae.decode(latents, return_dict=False)[0][:, :, 0]
            result = self.image_processor.postprocess(decoded, output_type=output_type)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (result,)
        return QwenImagePipelineOutput(images=result)


# ---------------------------------------------------------------------------------------------- stepping
@dataclass
class EditState:
    """One item's denoising between steps (``g2u.scheduler`` packs several into one transformer forward).

    Everything that decides the item's thought is its own: its prompt embeddings (encoded alone, so batch
    padding never touches them), its noise (its own generator), its scheduler copy and timesteps, its CFG
    scale. Only the transformer forward is shared, row-independent up to the attention's key padding."""

    latents: torch.Tensor
    """``[1, seq, C]`` packed noisy latents."""
    image_latents: torch.Tensor
    """``[1, seq, C]`` packed latents of the input at the working size."""
    embeds: list[torch.Tensor]
    """``[1, L, D]`` text embeddings per CFG row: the prompt's, then (true CFG) the negative prompt's."""
    scheduler: Any
    timesteps: torch.Tensor
    cfg: float
    width: int
    height: int
    index: int = 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.timesteps)

    @property
    def rows(self) -> int:
        """Transformer rows one step of this item takes (2 with true CFG)."""
        return len(self.embeds)

    @property
    def steps_left(self) -> int:
        return len(self.timesteps) - self.index


def _stack_text(embeds: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-pad ``[1, L_i, D]`` embeddings to one ``[R, L, D]`` batch with a 0/1 mask (None: no padding),
    exactly as the one-item call pads its cond and uncond rows."""
    length = max(e.shape[1] for e in embeds)
    padded = [_pad_text(e, None, length) for e in embeds]
    mask = torch.cat([m for _, m in padded])
    return torch.cat([e for e, _ in padded]), None if bool(mask.all()) else mask


@contextlib.contextmanager
def _per_item_vectors(transformer: torch.nn.Module, chunks: Sequence[int]):
    """Inside the block, a Linear fed one vector per row (the timestep embedding, every block's
    modulation) computes each item's rows as their own matmul, as the item's call alone does. A GEMM
    with 1, 2-3 or >= 4 rows rounds differently on CPU (measured: up to 6e-7 apart), and these vectors
    scale every token, so without this a thought would depend on how many rows shared its step. Token
    matmuls (rows × tokens) are unaffected and stay batched; the vectors are tiny, recomputing them is free."""
    if len(chunks) < 2:
        yield
        return
    total = sum(chunks)

    def hook(module, args, out):
        x = args[0]
        if x.dim() != 2 or x.shape[0] != total:
            return None
        return torch.cat([torch.nn.functional.linear(part, module.weight, module.bias) for part in x.split(chunks)])

    handles = [m.register_forward_hook(hook, prepend=True) for m in transformer.modules()
               if type(m) is torch.nn.Linear]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class SteppedEdits:
    """The per-step interface of ``QwenImageEditG2UPipeline``: ``begin`` (encode, noise, timesteps) →
    ``step`` (one transformer forward for every row of the given states) → ``finish`` (decode). The same
    computation as ``__call__`` for one item; items at different steps share a forward because the
    transformer takes a timestep per row."""

    def __init__(self, pipe: QwenImageEditG2UPipeline, exact: bool = True):
        self.pipe = pipe
        self.exact = exact
        """Items share a forward only with items whose text pads to the same length as alone: each thought
        is bit-identical to its own call's on CPU (one forward per distinct prompt length in a step).
        False: one forward per step, shorter prompts padded further (the attention then sums over more,
        masked, keys: measured 1e-6 on the latents, at most 1/255 on the thought's pixels)."""

    @torch.no_grad()
    def begin(self, image: Image.Image, prompt: str, *, width: int, height: int, true_cfg_scale: float,
              num_inference_steps: int, negative_prompt: str, generator: torch.Generator) -> EditState:
        pipe = self.pipe
        multiple_of = pipe.vae_scale_factor * 2
        if width % multiple_of or height % multiple_of or width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive multiples of {multiple_of}, got {width}x{height}")
        device = pipe._execution_device
        prompt_image = pipe.image_processor.resize(image.convert("RGB"), height, width)
        image_tensor = pipe.image_processor.preprocess([prompt_image], height, width).unsqueeze(2)
        cond, cond_mask = pipe.encode_prompt(prompt=[prompt], image=[prompt_image], device=device)
        embeds = [cond if cond_mask is None else cond[:, : int(cond_mask.sum())]]
        if true_cfg_scale > 1:
            neg, neg_mask = pipe.encode_prompt(prompt=[negative_prompt], image=[prompt_image], device=device)
            embeds.append(neg if neg_mask is None else neg[:, : int(neg_mask.sum())])
        latents, image_latents = pipe.prepare_latents(image_tensor, 1, pipe.transformer.config.in_channels // 4,
                                                      height, width, cond.dtype, device, [generator])
        scheduler = copy.deepcopy(pipe.scheduler)
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        mu = calculate_shift(
            latents.shape[1],
            scheduler.config.get("base_image_seq_len", 256),
            scheduler.config.get("max_image_seq_len", 4096),
            scheduler.config.get("base_shift", 0.5),
            scheduler.config.get("max_shift", 1.15),
        )
        timesteps, _ = retrieve_timesteps(scheduler, num_inference_steps, device, sigmas=sigmas, mu=mu)
        scheduler.set_begin_index(0)
        return EditState(latents, image_latents, embeds, scheduler, timesteps, true_cfg_scale, width, height)

    @torch.no_grad()
    def step(self, states: Sequence[EditState]) -> None:
        """Advance every state one step. All must share the working size; their rows are packed into one
        forward per text length (``exact``; without a mask-honouring attention, per row length), else one."""
        if not states:
            return
        if len({(s.width, s.height) for s in states}) > 1:
            raise ValueError("states of different working sizes cannot share a step")
        rows = [(s, r) for s in states for r in range(s.rows)]
        if not self.pipe._attention_takes_mask():  # rows of one text length per forward: no padding at all
            length = {(id(s), r): s.embeds[r].shape[1] for s, r in rows}
        elif self.exact:  # each item padded only as far as alone (its longest CFG row)
            length = {(id(s), r): max(e.shape[1] for e in s.embeds) for s, r in rows}
        else:
            length = {(id(s), r): 0 for s, r in rows}
        by_len: dict[int, list] = {}
        for s, r in rows:
            by_len.setdefault(length[(id(s), r)], []).append((s, r))
        parts = list(by_len.values())
        preds: dict[tuple[int, int], torch.Tensor] = {}
        for part in parts:
            for (s, r), pred in zip(part, self._forward(part)):
                preds[(id(s), r)] = pred
        stepped = []  # every state's next latents first: a failure leaves all states as they were
        for s in states:
            t = s.timesteps[s.index]
            noise_pred = preds[(id(s), 0)]
            if s.rows > 1:  # true CFG with the stock norm rescale, as __call__
                neg = preds[(id(s), 1)]
                comb = neg + s.cfg * (noise_pred - neg)
                cond_norm = torch.norm(noise_pred, dim=-1, keepdim=True)
                noise_pred = comb * (cond_norm / torch.norm(comb, dim=-1, keepdim=True))
            scheduler = copy.copy(s.scheduler)  # its step index advances on the copy, kept only on success
            latents = scheduler.step(noise_pred, t, s.latents, return_dict=False)[0]
            if s.index + 1 == len(s.timesteps) and not torch.isfinite(latents).all():
                raise ModelError(f"stage I produced non-finite latents ({len(s.timesteps)} steps)")
            stepped.append((scheduler, latents))
        for s, (scheduler, latents) in zip(states, stepped):
            s.scheduler, s.latents = scheduler, latents
            s.index += 1

    def _forward(self, rows: Sequence[tuple[EditState, int]]) -> list[torch.Tensor]:
        pipe = self.pipe
        first = rows[0][0]
        embeds, mask = _stack_text([s.embeds[r] for s, r in rows])
        hidden = torch.cat([torch.cat([s.latents, s.image_latents], dim=1) for s, _ in rows])
        timestep = torch.cat([s.timesteps[s.index].expand(1).to(s.latents.dtype) / 1000 for s, _ in rows])
        latent_hw = (1, first.height // pipe.vae_scale_factor // 2, first.width // pipe.vae_scale_factor // 2)
        chunks = [sum(1 for _ in group) for _, group in itertools.groupby(rows, key=lambda row: id(row[0]))]
        with pipe.transformer.cache_context("cond_uncond"), _per_item_vectors(pipe.transformer, chunks):
            out = pipe.transformer(hidden_states=hidden, timestep=timestep, encoder_hidden_states=embeds,
                                   encoder_hidden_states_mask=mask, img_shapes=[[latent_hw, latent_hw]] * len(rows),
                                   attention_kwargs={}, return_dict=False)[0]
        seq = first.latents.shape[1]
        return [out[i: i + 1, :seq] for i in range(len(rows))]

    @torch.no_grad()
    def finish(self, state: EditState) -> Image.Image:
        """Decode a finished state at its working size (one item: the same numbers as alone)."""
        pipe = self.pipe
        latents = pipe._unpack_latents(state.latents, state.height, state.width, pipe.vae_scale_factor)
        latents = latents.to(pipe.vae.dtype)
        z_dim = pipe.vae.config.z_dim
        mean = torch.tensor(pipe.vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(latents)
        std = torch.tensor(pipe.vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(latents)
        decoded = pipe.vae.decode(latents * std + mean, return_dict=False)[0][:, :, 0]
        return pipe.image_processor.postprocess(decoded, output_type="pil")[0]
