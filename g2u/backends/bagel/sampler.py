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

from g2u import progress
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
        """(text-free branch needed, image-free branch needed): scale > 1 and the interval is hit. As the
        reference, image guidance exists only on top of text guidance: with text CFG ≤ 1 no guidance is
        applied at all (its ``_forward_flow`` returns the conditional velocity), so no branch is run."""
        hit = any(self.guided(t) for t in self.schedule()[0])
        text = hit and self.text_cfg > 1.0
        return text, text and self.image_cfg > 1.0


def combine(v: torch.Tensor, v_text: torch.Tensor | None, v_img: torch.Tensor | None, settings: SamplerSettings,
            ) -> torch.Tensor:
    """BAGEL's guidance of ``[R, n, C]`` velocities; a ``None`` branch is not applied.

    Renorm rescales the guided velocity to at most the conditional one's norm (never below
    ``cfg_renorm_min`` of it): over each request's whole latent (``global``), per token (``channel``), or
    per token on the text guidance only (``text_channel``). Without the text branch nothing is applied,
    as the reference does with text CFG ≤ 1 (its image guidance is nested in the text guidance)."""
    if v_text is None:
        return v
    kind, low = settings.cfg_renorm_type, settings.cfg_renorm_min

    def ratio(ref: torch.Tensor, new: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        ref_n = torch.linalg.vector_norm(ref, dim=dims, keepdim=True)
        new_n = torch.linalg.vector_norm(new, dim=dims, keepdim=True)
        return (ref_n / (new_n + 1e-8)).clamp(min=low, max=1.0)

    if kind == "text_channel":
        out = v_text + settings.text_cfg * (v - v_text)
        out = out * ratio(v, out, (-1,))
        if v_img is not None:
            out = v_img + settings.image_cfg * (out - v_img)
        return out
    out = v_text + settings.text_cfg * (v - v_text)
    if v_img is not None:
        out = v_img + settings.image_cfg * (out - v_img)
    dims = (1, 2) if kind == "global" else (-1,)
    return out * ratio(v, out, dims)


def guided_velocity(model: BagelModel, cache: KVCache, x: torch.Tensor, t: float, grid: tuple[int, int],
                    settings: SamplerSettings, batch_cfg: bool = True,
                    routes: dict[int, object] | None = None) -> torch.Tensor:
    """The guided velocity of latents ``x`` ``[R, n, C]`` at time ``t``: every CFG branch of the cache
    that ``t`` needs (inside the interval) in one forward (``batch_cfg``) or one forward each, combined."""
    rows, n = x.shape[0], x.shape[1]
    has_text, has_img = settings.branches
    branches = 1 + has_text + has_img
    active = branches if settings.guided(t) else 1
    route = (routes or {}).get(active) or latent_query_route(rows * active, n, model.device)
    if batch_cfg or active == 1:
        view = cache if active == branches else cache.view_rows(0, rows * active)
        v_all = model.velocity(view, x.repeat(active, 1, 1), t, grid, route)
    else:
        single = (routes or {}).get(1) or latent_query_route(rows, n, model.device)
        v_all = torch.cat([model.velocity(cache.view_rows(b * rows, (b + 1) * rows), x, t, grid, single)
                           for b in range(active)])
    parts = list(v_all.split(rows))
    v = parts.pop(0)
    v_text = parts.pop(0) if active > 1 and has_text else None
    v_img = parts.pop(0) if active > 1 and has_img else None
    return combine(v, v_text, v_img, settings)


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
    for k, (t, dt) in enumerate(zip(times, deltas), 1):
        x = x - guided_velocity(model, cache, x, t, grid, settings, batch_cfg, routes) * dt
        check_deadline("denoising")
        progress.step(k, len(times))
    if not torch.isfinite(x).all():
        raise ModelError(f"stage I produced non-finite latents ({settings.steps} steps)")
    return x
