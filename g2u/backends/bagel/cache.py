"""KV cache for a batch of BAGEL contexts of different lengths.

Rows are right-padded to one shared length; ``valid`` marks the real positions, so rows with different
histories (the conditional context, the text-free and the image-free CFG contexts, several requests)
sit in one tensor and share every batched forward. Rotary positions are explicit per token, so padding
never shifts a row's positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    keys: list[torch.Tensor]
    """Per layer ``[rows, kv_heads, capacity, head_dim]``."""
    values: list[torch.Tensor]
    valid: torch.Tensor
    """``[rows, capacity]`` bool: which cached positions hold a real token."""
    length: int
    """Positions in use (the same for every row; shorter rows are padded)."""
    next_pos: torch.Tensor
    """``[rows]`` long: the rotary position of each row's next token."""

    @classmethod
    def empty(cls, num_layers: int, rows: int, kv_heads: int, head_dim: int, *, device: torch.device,
              dtype: torch.dtype, capacity: int = 0) -> KVCache:
        shape = (rows, kv_heads, capacity, head_dim)
        return cls(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)],
            valid=torch.zeros(rows, capacity, dtype=torch.bool, device=device),
            length=0,
            next_pos=torch.zeros(rows, dtype=torch.long, device=device),
        )

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def reserve(self, extra: int) -> None:
        """Grow the buffers so ``extra`` more positions fit (decoding reserves its budget once)."""
        need = self.length + extra
        if need <= self.capacity:
            return
        grow = need - self.capacity
        self.keys = [_pad_dim(k, 2, grow) for k in self.keys]
        self.values = [_pad_dim(v, 2, grow) for v in self.values]
        self.valid = _pad_dim(self.valid, 1, grow)

    def clone(self) -> KVCache:
        """An independent copy (a CFG context forks from the conditional one at this point)."""
        n = self.length
        return KVCache(
            keys=[k[:, :, :n].clone() for k in self.keys],
            values=[v[:, :, :n].clone() for v in self.values],
            valid=self.valid[:, :n].clone(),
            length=n,
            next_pos=self.next_pos.clone(),
        )

    def view_rows(self, start: int, stop: int) -> KVCache:
        """Rows ``start:stop`` sharing storage (a CFG branch, or the conditional rows alone outside the
        CFG interval). Reserve before taking views: growing a view reallocates only the view."""
        return KVCache(
            keys=[k[start:stop] for k in self.keys],
            values=[v[start:stop] for v in self.values],
            valid=self.valid[start:stop],
            length=self.length,
            next_pos=self.next_pos[start:stop],
        )

    @staticmethod
    def cat(caches: Sequence[KVCache]) -> KVCache:
        """Stack the rows of several caches, padding each to the longest."""
        n = max(c.length for c in caches)

        def fit(t: torch.Tensor, dim: int, length: int) -> torch.Tensor:
            t = t.narrow(dim, 0, length)
            return _pad_dim(t, dim, n - length)

        layers = range(len(caches[0].keys))
        return KVCache(
            keys=[torch.cat([fit(c.keys[i], 2, c.length) for c in caches]) for i in layers],
            values=[torch.cat([fit(c.values[i], 2, c.length) for c in caches]) for i in layers],
            valid=torch.cat([fit(c.valid, 1, c.length) for c in caches]),
            length=n,
            next_pos=torch.cat([c.next_pos for c in caches]),
        )


def _pad_dim(t: torch.Tensor, dim: int, extra: int) -> torch.Tensor:
    if extra <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_zeros(shape)], dim=dim)
