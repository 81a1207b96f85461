"""BAGEL's flow-matching sampler: shifted time grid, Euler steps, text/image CFG with interval and renorm.

Time runs from 1 (noise) to 0 (data); the model predicts v = noise − data, so each step is
``x ← x − v·Δt``. ``steps`` is BAGEL's ``num_timesteps``: a grid of that many points, hence
``steps − 1`` model evaluations, as in the reference sampler.

CFG rows live in one KV cache laid out ``[conditional × R, text-free × R, image-free × R]`` (only the
branches whose scale is > 1), so inside the CFG interval one batched forward evaluates every branch and
outside it the conditional rows are a prefix view of the same cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from g2u.backends.bagel.cache import KVCache
from g2u.backends.bagel.model import BagelModel, latent_query_route
from g2u.deadline import check_deadline
from g2u.errors import ModelError

RENORM_TYPES = ("global", "channel", "text_channel")


@dataclass(frozen=True)
class SamplerSettings:
    """One group's sampler settings (every request of a batched edit shares them). No defaults here: the
    request schema's (steps, CFG) and BAGEL's options' (``params.BagelOptions``) are the only ones;
    ``params.sampler_settings`` builds one from an ``EditParams``."""

    steps: int
    text_cfg: float
    image_cfg: float
    timestep_shift: float
    cfg_interval: tuple[float, float]
    cfg_renorm_type: str
    cfg_renorm_min: float

    def schedule(self) -> tuple[list[float], list[float]]:
        """The evaluation times and their step sizes: ``steps`` shifted points in [1, 0]."""
        grid = torch.linspace(1, 0, self.steps, dtype=torch.float64)
        s = self.timestep_shift
        grid = s * grid / (1 + (s - 1) * grid)
        return grid[:-1].tolist(), (grid[:-1] - grid[1:]).tolist()

    def guided(self, t: float) -> bool:
        low, high = self.cfg_interval
        return low < t <= high

    @property
    def branches(self) -> tuple[bool, bool]:
        """(text-free branch needed, image-free branch needed): scale > 1 and the interval is hit."""
        hit = any(self.guided(t) for t in self.schedule()[0])
        return hit and self.text_cfg > 1.0, hit and self.image_cfg > 1.0


def combine(v: torch.Tensor, v_text: torch.Tensor | None, v_img: torch.Tensor | None, settings: SamplerSettings,
            ) -> torch.Tensor:
    """BAGEL's guidance of ``[R, n, C]`` velocities; a ``None`` branch is not applied.

    Renorm rescales the guided velocity to at most the conditional one's norm (never below
    ``cfg_renorm_min`` of it): over each request's whole latent (``global``), per token (``channel``), or
    per token on the text guidance only (``text_channel``). With text CFG off and image CFG on, the
    image guidance is applied alone (the reference skips guidance entirely in that case)."""
    if v_text is None and v_img is None:
        return v
    kind, low = settings.cfg_renorm_type, settings.cfg_renorm_min

    def ratio(ref: torch.Tensor, new: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        ref_n = torch.linalg.vector_norm(ref, dim=dims, keepdim=True)
        new_n = torch.linalg.vector_norm(new, dim=dims, keepdim=True)
        return (ref_n / (new_n + 1e-8)).clamp(min=low, max=1.0)

    if kind == "text_channel":
        out = v
        if v_text is not None:
            out = v_text + settings.text_cfg * (v - v_text)
            out = out * ratio(v, out, (-1,))
        if v_img is not None:
            out = v_img + settings.image_cfg * (out - v_img)
        return out
    out = v if v_text is None else v_text + settings.text_cfg * (v - v_text)
    if v_img is not None:
        out = v_img + settings.image_cfg * (out - v_img)
    dims = (1, 2) if kind == "global" else (-1,)
    return out * ratio(v, out, dims)


def denoise(model: BagelModel, cache: KVCache, noise: torch.Tensor, grid: tuple[int, int],
            settings: SamplerSettings, batch_cfg: bool = True) -> torch.Tensor:
    """Integrate ``noise`` ``[R, n, C]`` to clean latents against the prefilled ``cache``.

    ``batch_cfg=False`` evaluates each branch in its own forward (same numbers, used to check the
    batched path)."""
    rows = noise.shape[0]
    has_text, has_img = settings.branches
    branches = 1 + has_text + has_img
    if cache.rows != rows * branches:
        raise ValueError(f"cache has {cache.rows} rows; {rows} requests × {branches} branches expected")
    n = noise.shape[1]
    cache.reserve(n + 2)  # the scratch slots of the query, before any view shares the buffers
    routes = {k: latent_query_route(rows * k, n, model.device) for k in {1, branches}}
    x = noise.to(model.device, torch.float32)
    times, deltas = settings.schedule()
    for t, dt in zip(times, deltas):
        active = branches if settings.guided(t) else 1
        if batch_cfg or active == 1:
            view = cache if active == branches else cache.view_rows(0, rows * active)
            v_all = model.velocity(view, x.repeat(active, 1, 1), t, grid, routes[active])
        else:
            v_all = torch.cat([model.velocity(cache.view_rows(b * rows, (b + 1) * rows), x, t, grid, routes[1])
                               for b in range(active)])
        parts = list(v_all.split(rows))
        v = parts.pop(0)
        v_text = parts.pop(0) if active > 1 and has_text else None
        v_img = parts.pop(0) if active > 1 and has_img else None
        x = x - combine(v, v_text, v_img, settings) * dt
        check_deadline("denoising")
    if not torch.isfinite(x).all():
        raise ModelError(f"stage I produced non-finite latents ({settings.steps} steps)")
    return x
