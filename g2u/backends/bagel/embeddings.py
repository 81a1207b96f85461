"""BAGEL's small embedding modules, under their released names.

``latent_pos_embed`` / ``vit_pos_embed`` are fixed 2-D sine-cosine tables indexed by grid position ids;
``time_embedder`` turns the flow time t ∈ [0, 1] into a hidden-size vector (DiT-style).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine table ``[grid², dim]`` (first half: column, second half: row), the values
    BAGEL's position tables hold; the demo builder writes it."""

    def one_axis(pos: torch.Tensor, d: int) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
        out = pos.to(torch.float64)[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    rows = torch.arange(grid).repeat_interleave(grid)
    cols = torch.arange(grid).repeat(grid)
    return torch.cat([one_axis(cols, dim // 2), one_axis(rows, dim // 2)], dim=1).float()


class PositionEmbedding(nn.Module):
    """A ``[max_per_side², hidden]`` table looked up by flattened grid ids."""

    def __init__(self, max_per_side: int, hidden: int):
        super().__init__()
        self.max_per_side = max_per_side
        self.pos_embed = nn.Parameter(sincos_2d(max_per_side, hidden), requires_grad=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.pos_embed[position_ids]


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t (cos half, then sin half) through a two-layer SiLU MLP."""

    def __init__(self, hidden: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))
