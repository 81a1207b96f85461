"""BAGEL's language model: Qwen2 layers with a mixture-of-transformers (MoT) generation expert.

Every layer holds two experts with the same shapes: the understanding expert (Qwen2's own parameters,
used by text and ViT tokens) and the generation expert (``*_moe_gen``, used by VAE latent tokens). Both
share one attention over the whole sequence. Parameter names follow the released ``ema.safetensors``
(``language_model.model.layers.N.self_attn.q_proj_moe_gen.weight`` …). Built from transformers' Qwen2
blocks (MLP, RMSNorm, rotary embedding); attention goes through ``scaled_dot_product_attention``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2MLP,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
)

from g2u.backends.bagel.cache import KVCache


@dataclass(frozen=True)
class Route:
    """Which tokens (flat indices over rows × tokens) go through which expert.

    Computed once per sequence layout, so the per-layer routing is index_select/index_copy with no
    host synchronisation."""

    und: torch.Tensor
    gen: torch.Tensor

    @classmethod
    def from_mask(cls, gen_mask: torch.Tensor) -> Route | None:
        """``None`` when no token is a latent: the whole batch takes the understanding expert."""
        flat = gen_mask.reshape(-1)
        if not bool(flat.any()):
            return None
        return cls(und=(~flat).nonzero().squeeze(1), gen=flat.nonzero().squeeze(1))


def routed(x: torch.Tensor, route: Route | None, und: Callable[[torch.Tensor], torch.Tensor],
           gen: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``und`` to understanding tokens and ``gen`` to latent tokens of a flat ``[tokens, ...]``."""
    if route is None:
        return und(x)
    y_und = und(x.index_select(0, route.und))
    y_gen = gen(x.index_select(0, route.gen))
    out = y_und.new_empty((x.shape[0], *y_und.shape[1:]))
    out.index_copy_(0, route.und, y_und)
    out.index_copy_(0, route.gen, y_gen.to(y_und.dtype))
    return out


def block_causal_mask(block: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """``[rows, L, L]`` bool: causal, plus full attention inside a block whose tokens are ``full``.

    Text is causal; an image (its markers and all its tokens) attends to itself fully, as BAGEL
    prefills images with non-causal attention."""
    length = block.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=block.device).tril()
    same = block[:, :, None] == block[:, None, :]
    return causal[None] | (same & full[:, :, None])


class MoTAttention(nn.Module):
    """Shared attention with per-expert Q/K/V/O projections and Q/K RMS norms (``qk_norm``)."""

    def __init__(self, config: Qwen2Config):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = hidden // self.num_heads
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        eps = config.rms_norm_eps
        self.q_proj = nn.Linear(hidden, q_dim, bias=True)
        self.k_proj = nn.Linear(hidden, kv_dim, bias=True)
        self.v_proj = nn.Linear(hidden, kv_dim, bias=True)
        self.o_proj = nn.Linear(q_dim, hidden, bias=False)
        self.q_norm = Qwen2RMSNorm(self.head_dim, eps=eps)
        self.k_norm = Qwen2RMSNorm(self.head_dim, eps=eps)
        self.q_proj_moe_gen = nn.Linear(hidden, q_dim, bias=True)
        self.k_proj_moe_gen = nn.Linear(hidden, kv_dim, bias=True)
        self.v_proj_moe_gen = nn.Linear(hidden, kv_dim, bias=True)
        self.o_proj_moe_gen = nn.Linear(q_dim, hidden, bias=False)
        self.q_norm_moe_gen = Qwen2RMSNorm(self.head_dim, eps=eps)
        self.k_norm_moe_gen = Qwen2RMSNorm(self.head_dim, eps=eps)

    def _heads(self, proj: nn.Linear, norm: nn.Module, heads: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda t: norm(proj(t).view(-1, heads, self.head_dim))

    def forward(self, h: torch.Tensor, rows: int, cos: torch.Tensor, sin: torch.Tensor, k_buf: torch.Tensor,
                v_buf: torch.Tensor, start: int, mask: torch.Tensor | None, route: Route | None) -> torch.Tensor:
        length = h.shape[0] // rows
        q = routed(h, route, self._heads(self.q_proj, self.q_norm, self.num_heads),
                   self._heads(self.q_proj_moe_gen, self.q_norm_moe_gen, self.num_heads))
        k = routed(h, route, self._heads(self.k_proj, self.k_norm, self.num_kv_heads),
                   self._heads(self.k_proj_moe_gen, self.k_norm_moe_gen, self.num_kv_heads))
        v = routed(h, route, self.v_proj, self.v_proj_moe_gen)
        q = q.view(rows, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(rows, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(rows, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)

        end = start + length
        k_buf[:, :, start:end] = k
        v_buf[:, :, start:end] = v
        keys, values = k_buf[:, :, :end], v_buf[:, :, :end]
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:  # expanded rather than enable_gqa: the masked SDPA kernels on GPU need equal heads
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q.to(keys.dtype), keys, values, attn_mask=mask)
        out = out.transpose(1, 2).reshape(rows * length, self.num_heads * self.head_dim)
        return routed(out, route, self.o_proj, self.o_proj_moe_gen)


class MoTDecoderLayer(nn.Module):
    """One Qwen2 layer with both experts (``Qwen2MoTDecoderLayer`` in the released config)."""

    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.self_attn = MoTAttention(config)
        self.mlp = Qwen2MLP(config)
        self.mlp_moe_gen = Qwen2MLP(config)
        eps = config.rms_norm_eps
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=eps)
        self.input_layernorm_moe_gen = Qwen2RMSNorm(config.hidden_size, eps=eps)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=eps)
        self.post_attention_layernorm_moe_gen = Qwen2RMSNorm(config.hidden_size, eps=eps)

    def forward(self, x: torch.Tensor, rows: int, cos: torch.Tensor, sin: torch.Tensor, k_buf: torch.Tensor,
                v_buf: torch.Tensor, start: int, mask: torch.Tensor | None, route: Route | None) -> torch.Tensor:
        h = routed(x, route, self.input_layernorm, self.input_layernorm_moe_gen)
        x = x + self.self_attn(h, rows, cos, sin, k_buf, v_buf, start, mask, route)
        mlp_und = lambda t: self.mlp(self.post_attention_layernorm(t))  # noqa: E731
        mlp_gen = lambda t: self.mlp_moe_gen(self.post_attention_layernorm_moe_gen(t))  # noqa: E731
        return x + routed(x, route, mlp_und, mlp_gen)


class MoTModel(nn.Module):
    """``language_model.model``: embeddings, MoT layers, one final norm per expert."""

    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([MoTDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.norm_moe_gen = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config=config)


class MoTCausalLM(nn.Module):
    """``language_model``: the MoT model and its LM head (untied, as released)."""

    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.config = config
        self.model = MoTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    @property
    def head_dim(self) -> int:
        return self.config.hidden_size // self.config.num_attention_heads

    def new_cache(self, rows: int, device: torch.device, dtype: torch.dtype, capacity: int = 0) -> KVCache:
        return KVCache.empty(self.config.num_hidden_layers, rows, self.config.num_key_value_heads, self.head_dim,
                             device=device, dtype=dtype, capacity=capacity)

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache: KVCache, intra: torch.Tensor,
                query_valid: torch.Tensor, route: Route | None, commit: bool) -> torch.Tensor:
        """Run ``embeds`` ``[rows, L, D]`` after the cached context; returns final hidden states.

        ``intra`` ``[rows, L, L]`` is the attention pattern among the new tokens; every new token also
        sees every valid cached token. With ``commit`` the new keys/values become part of the cache
        (prefill, decoding); without it they are scratch (a denoising step: the context is reused)."""
        rows, length, _ = embeds.shape
        cache.reserve(length)
        start = cache.length
        past = cache.valid[:, None, :start].expand(rows, length, start)
        mask: torch.Tensor | None = torch.cat([past, intra], dim=2)[:, None]
        if bool(mask.all()):
            mask = None  # unmasked SDPA can use its fastest kernels
        cos, sin = self.model.rotary_emb(embeds, positions)
        x = embeds.reshape(rows * length, -1)
        for layer, k_buf, v_buf in zip(self.model.layers, cache.keys, cache.values):
            x = layer(x, rows, cos, sin, k_buf, v_buf, start, mask, route)
        x = routed(x, route, self.model.norm, self.model.norm_moe_gen)
        if commit:
            cache.valid[:, start:start + length] = query_valid
            cache.length = start + length
        return x.view(rows, length, -1)
