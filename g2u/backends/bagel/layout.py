"""Image geometry shared by BAGEL's two image paths: sizes, patch grids and their position ids."""

from __future__ import annotations

from collections.abc import Callable

import torch


def fit_size(width: int, height: int, max_side: int, min_side: int, stride: int,
             max_pixels: int | None = None) -> tuple[int, int]:
    """BAGEL's resize rule: long side ≤ ``max_side``, short side ≥ ``min_side`` (unless that breaks
    the long-side cap), pixels ≤ ``max_pixels``, both sides multiples of ``stride``."""

    def apply(w: float, h: float, scale: float) -> tuple[int, int]:
        return (max(stride, int(round(round(w * scale) / stride) * stride)),
                max(stride, int(round(round(h * scale) / stride) * stride)))

    scale = min(max_side / max(width, height), 1.0)
    scale = max(scale, min_side / min(width, height))
    w, h = apply(width, height, scale)
    if max_pixels is not None and w * h > max_pixels:
        w, h = apply(w, h, max_pixels / (w * h))
    if max(w, h) > max_side:
        w, h = apply(w, h, max_side / max(w, h))
    return w, h


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``[C, H, W]`` → ``[(H/p)·(W/p), p·p·C]``, patches row-major, each flattened as (row, col, channel)."""
    c, h, w = x.shape
    x = x.reshape(c, h // patch, patch, w // patch, patch)
    return x.permute(1, 3, 2, 4, 0).reshape((h // patch) * (w // patch), patch * patch * c)


def grid_position_ids(rows: int, cols: int, max_per_side: int) -> torch.Tensor:
    """Flattened ids of a ``rows × cols`` patch grid placed on a ``max_per_side`` grid (extrapolation)."""
    r = torch.arange(rows)[:, None]
    c = torch.arange(cols)[None, :]
    return (r * max_per_side + c).flatten()


def unpatchify(tokens: torch.Tensor, rows: int, cols: int, patch: int) -> torch.Tensor:
    """Inverse of ``patchify``: ``[rows·cols, p·p·C]`` → ``[C, rows·p, cols·p]``."""
    c = tokens.shape[-1] // (patch * patch)
    x = tokens.reshape(rows, cols, patch, patch, c)
    return x.permute(4, 0, 2, 1, 3).reshape(c, rows * patch, cols * patch)


def bagel_rule(max_side: int = 1024, min_side: int = 512, stride: int = 16,
               max_pixels: int = 14 * 14 * 9 * 1024) -> Callable[[int, int], tuple[int, int]]:
    """BAGEL's inferencer transform ``ImageTransform(max_side, min_side, stride)``."""
    def rule(width: int, height: int) -> tuple[int, int]:
        return fit_size(width, height, max_side, min_side, stride, max_pixels)

    return rule
