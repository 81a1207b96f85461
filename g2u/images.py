"""Image decoding and normalisation, and the explicit edit working size.

Every image a user sends is decoded under bounds, so one request cannot crash or stall a worker:

- the pixel count is checked from the header before any pixel is decoded (decompression bombs, 413);
- only the first frame of a multi-frame file (TIFF pages, GIF/APNG/WebP animations) is ever read: the
  frames are never counted or enumerated (PIL's ``n_frames`` walks every TIFF IFD / GIF frame);
- any exception the decoder raises (PIL's text/ICC chunk limits, truncated data, corrupt headers) is a
  400 naming the field, never a 500;
- large images come down to a bounded working size while decoding (JPEG: the decoder's own DCT
  scaling through ``draft``; others: ``reduce`` right after decoding), and 16/32-bit images are rescaled
  to 8 bit strip by strip, so memory stays near the size of the decoded file, never a float64 copy of it.

The result is 8-bit RGB: RGBA/P/LA composited on white, L/CMYK/16-bit converted, EXIF rotation applied.
``img.info["original_size"]`` keeps the size the client sent when the working size is smaller.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from g2u.errors import InputError

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest accepted image (width × height); larger ones are rejected as decompression bombs."""

DEFAULT_WORKING_PIXELS = 4096 * 4096
"""Largest image kept after decoding: above every stage's own size (stage I edits at most 2048², the
Qwen2.5-VL processor's default ``max_pixels`` is 12 845 056), so no stage loses detail it would use."""

MAX_EDIT_SIDE = 2048

_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
"""EXIF orientation → the transpose that shows the image upright (the table of ``ImageOps.exif_transpose``,
applied here to the reduced RGB image: that function copies the full-size image even when nothing turns,
and the reduced copy no longer carries a TIFF's orientation tag)."""

_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "I", "F", "CMYK"}

MAX_TIFF_CHUNKS = 65536
"""Most strips or tiles a TIFF's first page may have. PIL reads every offset and builds one tile per
strip before decoding a pixel: 1.5 M one-row strips cost seconds to refuse, or a minute to decode. A
40 MP image stored one row per strip has at most ~8 000 rows (or 40 000 at a 1000:1 aspect)."""

_STRIP_ROWS = 256
"""Rows converted at a time when rescaling 16/32-bit images to 8 bit (bounds the float temporaries)."""


def decode_base64(data: str, field: str = "image") -> bytes:
    if "," in data[:100] and data.lstrip().startswith("data:"):
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(field, "is not valid base64") from exc


def load_image(source: bytes | str | Path | Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS,
               field: str = "image", max_working_pixels: int = DEFAULT_WORKING_PIXELS) -> Image.Image:
    """Open, validate and normalise an image to 8-bit RGB of at most ``max_working_pixels``.
    Raises InputError naming ``field``: 413 over ``max_pixels``, 400 for anything undecodable."""
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (str, Path)):
            path = Path(source)
            try:
                source = path.read_bytes()
            except OSError as exc:
                raise InputError(field, f"cannot read file {str(path)!r}: {exc.strerror or exc}") from exc
        if not source:
            raise InputError(field, "is empty")
        img = _open(source, max_pixels, field)
    width, height = img.size
    if width * height > max_pixels:
        raise InputError(field, f"has {width}x{height} = {width * height} pixels, more than the "
                                f"limit of {max_pixels}", status=413)
    if width < 1 or height < 1:
        raise InputError(field, "has no pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if img.format == "JPEG" and width * height > max_working_pixels:
                # The JPEG decoder scales by 1/2..1/8 while decoding: the full size is never in memory.
                img.draft(img.mode, _reduced(img.size, max_working_pixels))
            img.load()  # first frame only: nothing here seeks, counts frames or reads other pages
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
            img = _bounded(img, max_working_pixels)
            out = to_rgb(img)
            if orientation in _ORIENTATION:
                out = out.transpose(_ORIENTATION[orientation])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(field, f"has more pixels than the limit of {max_pixels} (decompression bomb)",
                         status=413) from exc
    except MemoryError as exc:
        raise InputError(field, "is too large to decode in this worker's memory", status=413) from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the client's file, never a 500
        raise InputError(field, f"is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    if out.width * out.height < width * height:
        out.info["original_size"] = (width, height)
    return out


def _tiff_chunks(data: bytes) -> int:
    """The largest strip/tile count declared in a TIFF's first IFD (0: not a TIFF, or unreadable here;
    PIL then judges it). Reads the header and the IFD's entries only."""
    head = data[:4]
    if head not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return 0
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:] in (b"+\0", b"\0+")
    try:
        if big:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
            (ifd,) = struct.unpack_from(order + "Q", data, 8)
            (n,) = struct.unpack_from(order + "Q", data, ifd)
            entry, first, count_fmt, size = 20, ifd + 8, "Q", 4
        else:
            (ifd,) = struct.unpack_from(order + "I", data, 4)
            (n,) = struct.unpack_from(order + "H", data, ifd)
            entry, first, count_fmt, size = 12, ifd + 2, "I", 4
        most = 0
        for k in range(min(n, 4096)):
            tag, _kind = struct.unpack_from(order + "HH", data, first + k * entry)
            if tag in (273, 279, 324, 325):  # Strip/Tile Offsets and ByteCounts
                (count,) = struct.unpack_from(order + count_fmt, data, first + k * entry + size)
                most = max(most, count)
        return most
    except struct.error:
        return 0


def _open(data: bytes, max_pixels: int, field: str) -> Image.Image:
    """``Image.open`` reads the header (and PNG chunks before the pixels); it raises many types."""
    chunks = _tiff_chunks(data)
    if chunks > MAX_TIFF_CHUNKS:
        raise InputError(field, f"is a TIFF of {chunks} strips or tiles, more than the limit of {MAX_TIFF_CHUNKS}: "
                                "store it in fewer, larger strips (or send a PNG)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(field, f"has more pixels than the limit of {max_pixels} (decompression bomb)",
                         status=413) from exc
    except UnidentifiedImageError as exc:
        raise InputError(field, "is not a readable image (unknown format)") from exc
    except MemoryError as exc:
        raise InputError(field, "is too large to decode in this worker's memory", status=413) from exc
    except Exception as exc:  # noqa: BLE001 - e.g. ValueError: PNG text/ICC chunk past PIL's limits
        raise InputError(field, f"is not a readable image ({type(exc).__name__}: {exc})") from exc


def _reduced(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """``size`` divided by the smallest integer factor that brings it to at most ``max_pixels``."""
    factor = _factor(size, max_pixels)
    return max(1, size[0] // factor), max(1, size[1] // factor)


def _factor(size: tuple[int, int], max_pixels: int) -> int:
    factor = max(1, math.ceil(math.sqrt(size[0] * size[1] / max_pixels)))
    while (size[0] // factor) * (size[1] // factor) > max_pixels:
        factor += 1
    return factor


def _bounded(img: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale a decoded image to at most ``max_pixels`` by an integer box reduction (cheap, no
    ringing). Modes ``reduce`` cannot take (P, 1, I;16) are brought to one it can first."""
    factor = _factor(img.size, max_pixels)
    if factor == 1:
        return img
    if img.mode.startswith("I;16"):
        img = _to_8bit(img)
    elif img.mode not in _REDUCIBLE:
        img = to_rgb(img)
    return img.reduce(factor)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit or float → 8-bit L, stretched to the image's own range (not clipped at 255), one strip
    of rows at a time so the float temporaries stay small."""
    lo, hi = img.getextrema()
    width, height = img.size
    out = Image.new("L", img.size, 0)
    if hi > lo:
        scale = 255.0 / (float(hi) - float(lo))
        for top in range(0, height, _STRIP_ROWS):
            strip = np.asarray(img.crop((0, top, width, min(height, top + _STRIP_ROWS))), dtype=np.float32)
            strip -= float(lo)
            strip *= scale
            out.paste(Image.fromarray(np.rint(strip, out=strip).astype(np.uint8), "L"), (0, top))
    return out


def to_rgb(img: Image.Image) -> Image.Image:
    """Normalise any PIL mode to 8-bit RGB (transparency composited on white)."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        return _to_8bit(img).convert("RGB")
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
