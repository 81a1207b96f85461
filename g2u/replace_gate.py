"""The authors' ``replace`` variant: answer from the thought Î only when it stayed close to I.

Their harness (PRIS-CV/reverse-flow-mllm @ d10606c8, ``mingunivisioninfer_replace.py``) computes
PSNR(Î, I) (8-bit RGB, data range 255) and keeps Î when it exceeds 25 dB, else answers from I. Ours reads
the same PSNR from the thought's edit measures (``g2u.measures``: at the thought's size, I resized to it;
same formula, data range 1 on /255 values). ``replace_min_psnr`` unset: always Î (the paper's ``replace``).
"""

from __future__ import annotations

from typing import Any

AUTHORS_MIN_PSNR = 25.0
"""The authors' threshold, in dB."""


def replace_source(psnr: float | None, min_psnr: float | None) -> str:
    """``"thought"`` or ``"original"``: the image a ``replace`` answer reads. Strictly above the threshold
    keeps Î, as the authors' ``psnr_value > 25``; no threshold always keeps it; no PSNR (none measured)
    with a threshold falls back to I."""
    if min_psnr is None:
        return "thought"
    if psnr is None:
        return "original"
    return "thought" if psnr > min_psnr else "original"


def replace_record(psnr: float | None, min_psnr: float | None) -> dict[str, Any] | None:
    """What the result reports about the decision (``None`` without a threshold)."""
    if min_psnr is None:
        return None
    return {"min_psnr": min_psnr, "psnr": psnr, "answered_from": replace_source(psnr, min_psnr)}
