"""Crafted hostile inputs (built in memory in milliseconds): files that once made a single request crash or
stall a worker. The unit tests (tests/core/test_images.py, tests/core/test_bodies.py) and the reliability catalogue
(load_tests/reliability.py) send the same bytes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def small_png(size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def png_with_chunk(kind: bytes, data: bytes, after_pixels: bool = False) -> bytes:
    """A valid small PNG with one extra chunk, right after IHDR (read by ``Image.open``) or right
    before IEND (read when the pixels are loaded)."""
    png = small_png()
    at = len(png) - 12 if after_pixels else 8 + 25  # IEND is the last 12 bytes; IHDR is 25 bytes after the signature
    return png[:at] + _chunk(kind, data) + png[at:]


def _deflated_zeros(inflated: int) -> bytes:
    return zlib.compress(b"\0" * inflated, 9)


def png_ztxt_bomb(inflated: int = 48 * 2**20, after_pixels: bool = False) -> bytes:
    """A compressed text chunk (zTXt) that inflates to ``inflated`` bytes: ~48 KB on the wire by default,
    past PIL's MAX_TEXT_CHUNK (1 MiB), which raises ``ValueError: Decompressed data too large``."""
    return png_with_chunk(b"zTXt", b"Comment\0\0" + _deflated_zeros(inflated), after_pixels)


def png_iccp_bomb(inflated: int = 48 * 2**20) -> bytes:
    """An ICC profile chunk (iCCP) that inflates past PIL's limit, like ``png_ztxt_bomb``."""
    return png_with_chunk(b"iCCP", b"icc\0\0" + _deflated_zeros(inflated))


def many_page_tiff(pages: int = 150_000, first: tuple[int, int] = (64, 48)) -> bytes:
    """A TIFF whose first page is a ``first``-sized grey image and whose other ``pages - 1`` pages are 1×1
    (~100 bytes an IFD: 15 MB for 150 000). Counting its frames (PIL's ``n_frames``) parses every IFD:
    minutes of CPU for one request; the first page alone is a valid picture."""
    width, height = first
    pixels = bytes((x * 4 + y * 2) % 256 for y in range(height) for x in range(width))
    entries = [(256, 3, width), (257, 3, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8),
               (278, 3, height), (279, 4, len(pixels))]
    tiny = {256: 1, 257: 1, 278: 1, 279: 1}
    ifd_size = 2 + 12 * len(entries) + 4
    start = 8 + len(pixels) + len(pixels) % 2

    def ifd(values: list[tuple[int, int, int]], nxt: int) -> bytes:
        return struct.pack("<H", len(values)) + b"".join(
            struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1, value, 0)
            for tag, kind, value in values) + struct.pack("<I", nxt)

    body = bytearray(b"II*\0" + struct.pack("<I", start) + pixels + b"\0" * (len(pixels) % 2))
    body += ifd(entries, start + ifd_size if pages > 1 else 0)
    rest = [(tag, kind, tiny.get(tag, value)) for tag, kind, value in entries]
    for page in range(1, pages):
        body += ifd(rest, start + (page + 1) * ifd_size if page + 1 < pages else 0)
    return bytes(body)


def many_strip_tiff(strips: int = 1_500_000) -> bytes:
    """A valid 1×``strips`` 8-bit TIFF stored one row per strip: its StripOffsets and StripByteCounts
    arrays hold ``strips`` entries each (9 bytes a strip: 13.5 MB for 1.5 M, under the body limit).
    PIL reads both arrays and builds one tile per strip before decoding anything (6 s to refuse before
    the client-bounds rows)."""
    pixels_at = 8
    offsets_at = pixels_at + strips + strips % 2
    counts_at = offsets_at + 4 * strips
    ifd_at = counts_at + 4 * strips
    entries = [(256, 3, 1, 1), (257, 4, 1, strips), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, strips, offsets_at), (277, 3, 1, 1), (278, 3, 1, 1), (279, 4, strips, counts_at)]
    body = bytearray(b"II*\0" + struct.pack("<I", ifd_at))
    body += bytes(k % 256 for k in range(strips)) + b"\0" * (strips % 2)
    body += struct.pack(f"<{strips}I", *range(pixels_at, pixels_at + strips))
    body += struct.pack(f"<{strips}I", *([1] * strips))
    body += struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack("<HHII", tag, kind, count, value) if kind == 4 or count > 1 else \
            struct.pack("<HHIHH", tag, kind, count, value, 0)
    return bytes(body + struct.pack("<I", 0))


def png16(size: tuple[int, int] = (7300, 5466)) -> bytes:
    """A 16-bit greyscale PNG of ``size`` (39.9 MP by default) with a smooth ramp: compresses to ~100 KB,
    decodes to 80 MB of 16-bit pixels (a float64 copy would be 320 MB more)."""
    w, h = size
    row = (np.arange(w, dtype=np.uint32) * 65535 // max(1, w - 1)).astype(np.uint16)
    img = Image.fromarray(np.broadcast_to(row, (h, w)).copy())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def deep_json(depth: int = 100_000) -> bytes:
    """A JSON body nested ``depth`` arrays deep under a field: ``json.loads`` raises RecursionError."""
    return b'{"question": "q?", "options": ' + b"[" * depth + b"]" * depth + b"}"


def huge_int_json(digits: int = 5000, field: str = "steps") -> bytes:
    """A JSON body whose ``field`` is an integer of ``digits`` digits: ``json.loads`` raises
    ``ValueError: Exceeds the limit (4300 digits)``."""
    return b'{"question": "q?", "' + field.encode() + b'": ' + b"9" * digits + b"}"
