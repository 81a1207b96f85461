"""Edit measures of the visual thought Î against the input I: SSIM and PSNR (torchmetrics), computed at
the thought's working size (I is resized to it).

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


def edit_measures(original: Image.Image, thought: Image.Image) -> dict[str, float]:
    """{"ssim", "psnr"} of ``thought`` against ``original`` (PSNR capped at 100 dB for identical images):
    1.0 / 100 dB mean "nothing was edited"."""
    ref = original if original.size == thought.size else original.resize(thought.size, Image.Resampling.BICUBIC)
    a, b = _tensor(ref), _tensor(thought)
    ssim = float(structural_similarity_index_measure(b, a, data_range=1.0))
    psnr = float(peak_signal_noise_ratio(b, a, data_range=1.0))
    return {"ssim": round(ssim, 6), "psnr": round(min(psnr, 100.0), 4)}

