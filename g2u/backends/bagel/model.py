"""The BAGEL model: its modules under the released names, and the three things the backend asks of it.

* ``extend``   — append interleaved segments (text, ViT image, VAE image) to each row's KV cache;
* ``velocity`` — one flow-matching evaluation of the generation query against cached contexts;
* ``decode``   — greedy (or sampled) text continuation of each row.

A sequence is laid out as BAGEL does: a text segment is ``<|im_start|> … <|im_end|>`` at consecutive
rotary positions with causal attention; an image is ``<|vision_start|> tokens <|vision_end|>``, all at a
single rotary position, attending to itself fully. ViT and text tokens take the understanding expert,
VAE latent tokens the generation expert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import nn
from transformers import Qwen2Config, SiglipVisionConfig

from g2u.backends.bagel.cache import KVCache
from g2u.backends.bagel.config import BagelDims
from g2u.backends.bagel.embeddings import PositionEmbedding, TimestepEmbedder
from g2u.backends.bagel.layout import fit_size, grid_position_ids, patchify
from g2u.backends.bagel.llm import MoTCausalLM, Route, block_causal_mask
from g2u.backends.bagel.vision import (
    VIT_MAX_PIXELS,
    VIT_MAX_SIDE,
    VIT_MIN_SIDE,
    MLPConnector,
    VitContainer,
    to_unit_tensor,
)
from g2u.deadline import check_deadline
from g2u.progress import TokenStream


@dataclass(frozen=True)
class SpecialTokens:
    bos: int
    eos: int
    start_of_image: int
    end_of_image: int


@dataclass
class TextSegment:
    """Token ids without the ``<|im_start|>``/``<|im_end|>`` wrapper (added when laid out)."""

    ids: list[int]


@dataclass
class VitSegment:
    """An image read by the understanding encoder."""

    image: Image.Image


@dataclass
class LatentSegment:
    """An image as VAE latent patches ``[rows·cols, p·p·C]`` at flow time ``t`` (0: clean)."""

    latents: torch.Tensor
    grid: tuple[int, int]
    t: float = 0.0


Segment = TextSegment | VitSegment | LatentSegment


@dataclass
class _Row:
    embeds: list[torch.Tensor] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    gen: list[bool] = field(default_factory=list)
    block: list[int] = field(default_factory=list)
    full: list[bool] = field(default_factory=list)


class BagelModel(nn.Module):
    """BAGEL-MoT: MoT language model, SigLIP + connector, latent heads. ``state_dict`` names are the
    released ``ema.safetensors`` names."""

    def __init__(self, llm: Qwen2Config, vit: SiglipVisionConfig, dims: BagelDims, special: SpecialTokens):
        super().__init__()
        self.dims = dims
        self.special = special
        self.language_model = MoTCausalLM(llm)
        self.vit_model = VitContainer(vit)
        self.connector = MLPConnector(vit.hidden_size, dims.hidden)
        self.vit_pos_embed = PositionEmbedding(dims.vit_max_per_side, dims.hidden)
        self.latent_pos_embed = PositionEmbedding(dims.max_latent_per_side, dims.hidden)
        self.time_embedder = TimestepEmbedder(dims.hidden, dims.timestep_features)
        patch_values = dims.latent_patch**2 * dims.latent_channels
        self.vae2llm = nn.Linear(patch_values, dims.hidden)
        self.llm2vae = nn.Linear(dims.hidden, patch_values)

    @property
    def device(self) -> torch.device:
        return self.vae2llm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae2llm.weight.dtype

    def new_cache(self, rows: int) -> KVCache:
        return self.language_model.new_cache(rows, self.device, self.dtype)

    # ------------------------------------------------------------------ embeddings
    def embed_ids(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return self.language_model.model.embed_tokens(ids)

    def vit_size(self, image: Image.Image) -> tuple[int, int]:
        """(width, height) the understanding encoder reads ``image`` at (BAGEL's 980/224/14 rule, capped
        by the position grid of the checkpoint)."""
        patch = self.vit_model.patch_size
        max_side = min(VIT_MAX_SIDE, self.dims.vit_max_per_side * patch)
        return fit_size(*image.size, max_side, min(VIT_MIN_SIDE, max_side), patch, VIT_MAX_PIXELS)

    def embed_vit_images(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """ViT → connector → + position table, one ``[tokens, hidden]`` per image (same sizes batched)."""
        patch = self.vit_model.patch_size
        out: list[torch.Tensor | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(self.vit_size(img), []).append(i)
        for (w, h), idx in by_size.items():
            patches = torch.stack([patchify(to_unit_tensor(images[i], (w, h)), patch) for i in idx])
            pos = grid_position_ids(h // patch, w // patch, self.dims.vit_max_per_side).to(self.device)
            feats = self.vit_model.encode(patches.to(self.device, self.dtype), pos)
            feats = self.connector(feats) + self.vit_pos_embed(pos).to(self.dtype)
            for k, i in enumerate(idx):
                out[i] = feats[k]
        return out  # type: ignore[return-value]

    def embed_latents(self, latents: torch.Tensor, grid: tuple[int, int], t: torch.Tensor) -> torch.Tensor:
        """Latent patches ``[..., n, p·p·C]`` at times ``t`` (one per leading row) → hidden inputs."""
        pos = grid_position_ids(*grid, self.dims.max_latent_per_side).to(self.device)
        time = self.time_embedder(t.reshape(-1).to(self.device))
        x = self.vae2llm(latents.to(self.device, self.dtype))
        return x + time.reshape(*x.shape[:-2], 1, -1).to(x.dtype) + self.latent_pos_embed(pos).to(x.dtype)

    # ------------------------------------------------------------------ context
    def extend(self, cache: KVCache, rows: Sequence[Sequence[Segment]]) -> torch.Tensor:
        """Append each row's segments to its cache (one batched forward); returns the hidden states
        ``[rows, L, hidden]`` of the new tokens (right-padded). A row with no segments is left as is."""
        if len(rows) != cache.rows:
            raise ValueError(f"{len(rows)} rows of segments for a cache of {cache.rows} rows")
        vit_images = [s.image for segs in rows for s in segs if isinstance(s, VitSegment)]
        vit_feats = iter(self.embed_vit_images(vit_images)) if vit_images else iter(())
        marks = self.embed_ids([self.special.start_of_image, self.special.end_of_image])
        text_ends = self.embed_ids([self.special.bos, self.special.eos])
        laid: list[_Row] = []
        next_pos = cache.next_pos.tolist()
        for r, segs in enumerate(rows):
            row, pos, block = _Row(), next_pos[r], 0
            for seg in segs:
                block += 1
                if isinstance(seg, TextSegment):
                    tokens = torch.cat([text_ends[:1], self.embed_ids(seg.ids), text_ends[1:]])
                    n = tokens.shape[0]
                    row.embeds.append(tokens)
                    row.positions += list(range(pos, pos + n))
                    row.gen += [False] * n
                    row.full += [False] * n
                    row.block += [block] * n
                    pos += n
                    continue
                if isinstance(seg, VitSegment):
                    body, gen = next(vit_feats), False
                else:
                    t = torch.tensor([seg.t], dtype=torch.float32)
                    body, gen = self.embed_latents(seg.latents, seg.grid, t), True
                n = body.shape[0] + 2
                row.embeds.append(torch.cat([marks[:1], body.to(marks.dtype), marks[1:]]))
                row.positions += [pos] * n
                row.gen += [False] + [gen] * (n - 2) + [False]
                row.full += [True] * n
                row.block += [block] * n
                pos += 1
            next_pos[r] = pos
            laid.append(row)
        hidden = self._forward_rows(cache, laid)
        cache.next_pos = torch.tensor(next_pos, dtype=torch.long, device=cache.next_pos.device)
        return hidden

    def _forward_rows(self, cache: KVCache, laid: list[_Row]) -> torch.Tensor:
        length = max(len(r.positions) for r in laid)
        hidden_size = self.dims.hidden
        embeds = torch.zeros(len(laid), length, hidden_size, device=self.device, dtype=self.dtype)
        positions = torch.zeros(len(laid), length, dtype=torch.long)
        gen = torch.zeros(len(laid), length, dtype=torch.bool)
        block = -1 - torch.arange(length).repeat(len(laid), 1)  # padding: a block of its own, causal
        full = torch.zeros(len(laid), length, dtype=torch.bool)
        valid = torch.zeros(len(laid), length, dtype=torch.bool)
        for r, row in enumerate(laid):
            n = len(row.positions)
            if n == 0:
                continue
            embeds[r, :n] = torch.cat(row.embeds)
            positions[r, :n] = torch.tensor(row.positions)
            gen[r, :n] = torch.tensor(row.gen)
            block[r, :n] = torch.tensor(row.block)
            full[r, :n] = torch.tensor(row.full)
            valid[r, :n] = True
        dev = self.device
        intra = block_causal_mask(block.to(dev), full.to(dev))
        return self.language_model(embeds, positions.to(dev), cache, intra, valid.to(dev),
                                   Route.from_mask(gen.to(dev)), commit=True)

    # ------------------------------------------------------------------ generation
    def velocity(self, cache: KVCache, x_t: torch.Tensor, t: float, grid: tuple[int, int],
                 route: Route | None = None) -> torch.Tensor:
        """Predicted velocity (noise − data) ``[rows, n, p·p·C]`` for latents ``x_t`` at time ``t``.

        Row ``r`` of ``x_t`` is evaluated against row ``r`` of ``cache``; the query
        ``<|vision_start|> x_t <|vision_end|>`` sits at each row's next rotary position and is not
        committed, so the same prefilled context serves every step."""
        rows, n, _ = x_t.shape
        marks = self.embed_ids([self.special.start_of_image, self.special.end_of_image])
        body = self.embed_latents(x_t, grid, torch.full((rows,), t, dtype=torch.float32))
        query = torch.cat([marks[:1].expand(rows, 1, -1), body.to(marks.dtype), marks[1:].expand(rows, 1, -1)], 1)
        positions = cache.next_pos[:, None].expand(rows, n + 2)
        if route is None:
            route = latent_query_route(rows, n, self.device)
        intra = torch.ones(rows, n + 2, n + 2, dtype=torch.bool, device=self.device)
        valid = torch.ones(rows, n + 2, dtype=torch.bool, device=self.device)
        hidden = self.language_model(query, positions, cache, intra, valid, route, commit=False)
        return self.llm2vae(hidden[:, 1:-1]).float()

    def next_token_logits(self, cache: KVCache, tokens: torch.Tensor) -> torch.Tensor:
        """Commit one token per row at its next position; logits ``[rows, vocab]`` for the following."""
        rows = tokens.shape[0]
        embeds = self.language_model.model.embed_tokens(tokens.to(self.device))[:, None]
        ones = torch.ones(rows, 1, 1, dtype=torch.bool, device=self.device)
        hidden = self.language_model(embeds, cache.next_pos[:, None], cache, ones, ones[:, 0], None, commit=True)
        cache.next_pos = cache.next_pos + 1
        return self.language_model.lm_head(hidden[:, -1]).float()

    def decode(self, cache: KVCache, max_new_tokens: int, temperature: float = 0.0,
               generator: torch.Generator | None = None, token_probs: list[list[float]] | None = None,
               stream: TokenStream | None = None) -> list[list[int]]:
        """Continue every row from ``<|im_start|>`` until ``<|im_end|>`` or ``max_new_tokens``; greedy when
        ``temperature`` is 0. Returns the new token ids of each row (without the end token). With
        ``token_probs`` (an empty list) given, it is filled with each row's chosen-token probabilities.
        ``stream``: a ``g2u.progress.TokenStream`` handed each step's tokens (None: nobody listens)."""
        rows = cache.rows
        cache.reserve(max_new_tokens + 1)
        tokens = torch.full((rows,), self.special.bos, dtype=torch.long, device=self.device)
        out: list[list[int]] = [[] for _ in range(rows)]
        if token_probs is not None:
            token_probs.extend([] for _ in range(rows))
        done = [False] * rows
        for _ in range(max_new_tokens):
            logits = self.next_token_logits(cache, tokens)
            probs = torch.softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
            if temperature > 0:
                tokens = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(self.device)
            else:
                tokens = logits.argmax(dim=-1)
            chosen = probs.gather(1, tokens[:, None])[:, 0].tolist() if token_probs is not None else None
            picked = tokens.tolist()
            if stream is not None:
                stream.put(picked)
            for r, tok in enumerate(picked):
                if done[r]:
                    continue
                if tok == self.special.eos:
                    done[r] = True
                else:
                    out[r].append(tok)
                    if chosen is not None:
                        token_probs[r].append(chosen[r])
            if all(done):
                break
            check_deadline("decoding")
        return out


def latent_query_route(rows: int, n: int, device: torch.device) -> Route:
    """Routing of ``rows`` generation queries: markers → understanding expert, latents → generation."""
    gen = torch.zeros(rows, n + 2, dtype=torch.bool, device=device)
    gen[:, 1:-1] = True
    return Route.from_mask(gen)  # type: ignore[return-value]
