"""Edit measures of the visual thought Î against the input I: SSIM and PSNR (torchmetrics), computed at
the thought's working size (I is resized to it), brought down to at most ``MEASURE_MAX_PIXELS`` (a
thought the caller brings may be 4096²: measured at full size it took 23–44 s and 12.7 GB) and up to
``MEASURE_MIN_SIDE`` pixels a side (SSIM's 11-pixel window).

These measure how much the editor changed the pixels, not whether the thought is faithful: they are
highest when the editor does nothing and meaningless for edits that move pixels (outpaint, zoom,
viewpoint). The paper's fidelity is the judged VIEScore in ``g2u.judge``. Responses carry them as
``measures`` (and, for one release, under the older key ``fidelity``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def _tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)


MEASURE_MAX_PIXELS = 1024 * 1024
"""Largest area the measures run at: above every stage-I working size of the real models (512²..1024²),
so a generated thought is measured exactly as before; a larger brought one is reduced first."""
MEASURE_MIN_SIDE = 16


def measure_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size the measures of a thought of ``size`` run at (its own size when within the bounds)."""
    w, h = size
    scale = min(1.0, (MEASURE_MAX_PIXELS / (w * h)) ** 0.5)
    w, h = max(1, round(w * scale)), max(1, round(h * scale))
    if min(w, h) < MEASURE_MIN_SIDE:
        up = MEASURE_MIN_SIDE / min(w, h)
        w, h = max(MEASURE_MIN_SIDE, round(w * up)), max(MEASURE_MIN_SIDE, round(h * up))
    return w, h


def edit_measures(original: Image.Image, thought: Image.Image) -> dict[str, float]:
    """{"ssim", "psnr"} of ``thought`` against ``original`` (PSNR capped at 100 dB for identical images):
    1.0 / 100 dB mean "nothing was edited". Cost is bounded by ``MEASURE_MAX_PIXELS`` whatever the sizes."""
    size = measure_size(thought.size)
    if thought.size != size:
        thought = thought.resize(size, Image.Resampling.BICUBIC)
    ref = original if original.size == size else original.resize(size, Image.Resampling.BICUBIC)
    a, b = _tensor(ref), _tensor(thought)
    ssim = float(structural_similarity_index_measure(b, a, data_range=1.0))
    psnr = float(peak_signal_noise_ratio(b, a, data_range=1.0))
    return {"ssim": round(ssim, 6), "psnr": round(min(psnr, 100.0), 4)}

