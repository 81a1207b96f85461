"""Image decoding: every common mode is normalised, broken or oversized images are rejected by field."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import GifImagePlugin, Image, PngImagePlugin, TiffImagePlugin

from g2u.errors import InputError
from g2u.images import DEFAULT_WORKING_PIXELS, check_edit_size, load_image, working_size
from load_tests import hostile_files


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


# ---------------------------------------------------------------- bounded decoding
# Crafted files come from load_tests/hostile_files.py: the reliability catalogue sends the same bytes.


@pytest.mark.parametrize("data", [
    pytest.param(hostile_files.png_ztxt_bomb(), id="zTXt before the pixels"),
    pytest.param(hostile_files.png_ztxt_bomb(after_pixels=True), id="zTXt after the pixels"),
    pytest.param(hostile_files.png_iccp_bomb(), id="iCCP"),
])
def test_png_chunk_inflating_past_pil_limit_is_a_400_naming_image(data):
    assert len(data) < 60_000
    with pytest.raises(InputError) as err:
        load_image(data)
    assert err.value.field == "image" and err.value.status == 400


def test_any_decoder_exception_is_an_input_error(monkeypatch):
    def broken(self, *args, **kwargs):
        raise KeyError("a decoder bug")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", broken)
    with pytest.raises(InputError) as err:
        load_image(hostile_files.small_png())
    assert err.value.field == "image" and "KeyError" in err.value.reason


def _forbid_frame_counting(monkeypatch):
    """Counting frames walks the whole file (every TIFF IFD, every GIF frame): fail if anyone asks."""
    def counted(self):
        raise AssertionError(f"{type(self).__name__}.n_frames was read")

    for cls in (TiffImagePlugin.TiffImageFile, GifImagePlugin.GifImageFile):
        monkeypatch.setattr(cls, "n_frames", property(counted))


def test_many_page_tiff_reads_the_first_page_only(monkeypatch):
    _forbid_frame_counting(monkeypatch)
    seeks = []
    original = TiffImagePlugin.TiffImageFile._seek
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_seek",
                        lambda self, frame: (seeks.append(frame), original(self, frame))[1])
    img = load_image(hostile_files.many_page_tiff(20_000, first=(64, 48)))
    assert img.size == (64, 48) and img.getpixel((3, 2)) == (16, 16, 16)
    assert set(seeks) == {0}


def test_animated_gif_is_not_enumerated(monkeypatch):
    _forbid_frame_counting(monkeypatch)
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), *[Image.new("RGB", (16, 16), (0, 0, 255))] * 50]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20)
    r, _, b = load_image(data).getpixel((4, 4))
    assert r > 200 and b < 50


def test_apng_gives_its_default_image():
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    data = _encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert load_image(data).getpixel((4, 4)) == (255, 0, 0)


def test_animated_webp_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    data = _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert load_image(data).getpixel((4, 4)) == (255, 0, 0)


def test_large_16_bit_png_is_reduced_without_a_float_copy_of_the_full_image():
    import tracemalloc

    width, height = 2400, 1800
    data = hostile_files.png16((width, height))
    tracemalloc.start()
    try:
        img = load_image(data, max_working_pixels=500_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert img.mode == "RGB" and img.width * img.height <= 500_000
    assert img.info["original_size"] == (width, height)
    assert abs(img.width / img.height - width / height) < 0.01
    row = np.asarray(img)[0, :, 0]
    assert row[0] == 0 and row[-1] >= 250  # the 16-bit ramp is stretched to 8 bit, not clipped
    # numpy's allocations are traced: a float64 copy of the full image would be 35 MB, a float32 one 17 MB;
    # the strips' temporaries stay below even a 16-bit copy.
    assert peak < width * height * 2, peak


def test_large_jpeg_is_decoded_at_a_reduced_scale_and_keeps_its_rotation():
    src = Image.new("RGB", (4000, 2000), (0, 200, 0))
    exif = src.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img = load_image(_encode(src, "JPEG", exif=exif.tobytes()), max_working_pixels=1_000_000)
    assert img.width * img.height <= 1_000_000 and img.height > img.width  # rotated after the reduction
    assert img.info["original_size"] == (4000, 2000)


def test_default_working_size_covers_every_stage():
    assert DEFAULT_WORKING_PIXELS >= 12_845_056  # Qwen2.5-VL's default max_pixels
    img = load_image(_encode(Image.new("RGB", (3000, 2000)), "PNG"))
    assert img.size == (3000, 2000) and "original_size" not in img.info
