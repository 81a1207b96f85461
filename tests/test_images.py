"""Image decoding: every common mode is normalised, broken or oversized images are rejected by field."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from g2u.errors import InputError
from g2u.images import check_edit_size, load_image, working_size


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK", "LA", "1"])
def test_common_modes_become_rgb(mode):
    src = Image.new("RGB", (40, 30), (200, 50, 25)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    img = load_image(_encode(src, fmt))
    assert img.mode == "RGB" and img.size == (40, 30)


def test_transparent_pixels_composite_on_white():
    src = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_image(_encode(src, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_image_is_rescaled_not_clipped():
    arr = (np.arange(64 * 16).reshape(16, 64) * 60).astype(np.uint16)
    img = load_image(_encode(Image.fromarray(arr), "PNG"))
    values = np.asarray(img)[..., 0]
    assert values.min() == 0 and values.max() == 255


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    r, g, b = load_image(data).getpixel((4, 4))
    assert r > 200 and b < 50


def test_exif_rotation_is_applied():
    src = Image.new("RGB", (40, 20), (0, 255, 0))
    exif = src.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img = load_image(_encode(src, "JPEG", exif=exif.tobytes()))
    assert img.size == (20, 40)


def test_truncated_png_is_rejected_with_field():
    data = _encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    with pytest.raises(InputError) as err:
        load_image(data[: len(data) // 2])
    assert err.value.field == "image" and "truncated" in err.value.reason


def test_truncated_jpeg_is_rejected():
    data = _encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(InputError, match="image"):
        load_image(data[: len(data) // 3])


def test_not_an_image_is_rejected():
    with pytest.raises(InputError) as err:
        load_image(b"hello, I am text")
    assert err.value.field == "image"


def test_decompression_bomb_rejected_before_decoding():
    # 10000x10000 white PNG compresses to a few KB; it must be refused from its header alone.
    data = _encode(Image.new("1", (10000, 10000), 1), "PNG")
    assert len(data) < 100_000
    with pytest.raises(InputError) as err:
        load_image(data, max_pixels=40_000_000)
    assert err.value.field == "image" and "pixels" in err.value.reason


def test_pixel_limit_is_configurable():
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(InputError) as err:
        load_image(data, max_pixels=5000)
    assert "5000" in err.value.reason and err.value.status == 413


def test_working_size_keeps_aspect_and_multiple():
    w, h = working_size(1600, 900, 512 * 512, 16)
    assert w % 16 == 0 and h % 16 == 0
    assert abs(w * h - 512 * 512) / (512 * 512) < 0.05
    assert abs(w / h - 16 / 9) < 0.05


def test_explicit_edit_size_checked():
    assert check_edit_size((512, 384), 16) == (512, 384)
    with pytest.raises(InputError, match="multiple of 16"):
        check_edit_size((500, 384), 16)
    with pytest.raises(InputError, match="edit_size"):
        check_edit_size((8, 4096), 16)
