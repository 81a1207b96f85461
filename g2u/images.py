"""Image decoding and normalisation, and the explicit edit working size.

Every image a user sends is checked before any pixel is decoded (decompression bombs), decoded fully
(truncated files fail here, not inside a model) and normalised to RGB: RGBA/P/LA composited on white,
L/CMYK/16-bit converted, animated images reduced to their first frame, EXIF rotation applied.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from g2u.errors import InputError

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest accepted image (width × height); larger ones are rejected as decompression bombs."""

MAX_EDIT_SIDE = 2048


def decode_base64(data: str, field: str = "image") -> bytes:
    if "," in data[:100] and data.lstrip().startswith("data:"):
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(field, "is not valid base64") from exc


def load_image(source: bytes | str | Path | Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS,
               field: str = "image") -> Image.Image:
    """Open, validate and normalise an image to RGB. Raises InputError naming ``field``."""
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (str, Path)):
            try:
                source = Path(source).read_bytes()
            except OSError as exc:
                raise InputError(field, f"cannot read file: {exc.strerror or exc}") from exc
        if not source:
            raise InputError(field, "is empty")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(source))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(field, f"has more pixels than the limit of {max_pixels} (decompression bomb)",
                             status=413) from exc
        except UnidentifiedImageError as exc:
            raise InputError(field, "is not a readable image (unknown format)") from exc
        except OSError as exc:
            raise InputError(field, f"is not a readable image ({exc})") from exc
    width, height = img.size
    if width * height > max_pixels:
        raise InputError(field, f"has {width}x{height} = {width * height} pixels, more than the "
                                f"limit of {max_pixels}", status=413)
    if width < 1 or height < 1:
        raise InputError(field, "has no pixels")
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(field, f"is truncated or corrupt ({exc})") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Normalise any PIL mode to 8-bit RGB (transparency composited on white)."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def working_size(width: int, height: int, area: int, multiple: int) -> tuple[int, int]:
    """The input's aspect ratio at about ``area`` pixels, each side a multiple of ``multiple``."""
    ratio = width / height
    w = math.sqrt(area * ratio)
    h = w / ratio
    w = max(multiple, round(w / multiple) * multiple)
    h = max(multiple, round(h / multiple) * multiple)
    return int(min(w, MAX_EDIT_SIDE)), int(min(h, MAX_EDIT_SIDE))


def check_edit_size(size: tuple[int, int], multiple: int, field: str = "edit_size") -> tuple[int, int]:
    """Validate an explicit working size; it must already be a multiple of the backend's stride."""
    w, h = size
    for side in (w, h):
        if not multiple <= side <= MAX_EDIT_SIDE:
            raise InputError(field, f"each side must be in [{multiple}, {MAX_EDIT_SIDE}], got {w}x{h}")
        if side % multiple:
            raise InputError(field, f"each side must be a multiple of {multiple} for this backend, got {w}x{h}")
    return w, h


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
