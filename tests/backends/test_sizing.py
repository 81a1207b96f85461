"""Working sizes and stage-II sizes: each model's own rule, every input shape, reported.

The rule tables are checked against the references' formulas evaluated by hand (BAGEL's
``ImageTransform(1024, 512, 16)``; diffusers' ``calculate_dimensions``), the limits against every odd
shape a user can send (1×1, 4000×60 panoramas, 8000×20 strips, 40 MP photos).
"""

from __future__ import annotations

import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from g2u.backends.bagel.layout import bagel_rule
from g2u.backends.qwen_image_edit import qwen_image_edit_rule
from g2u.backends.qwen_vl import qwen_vl_stage2
from g2u.errors import InputError
from g2u.sizing import SizeLimits, edit_plan, place

BAGEL_LIMITS = SizeLimits(multiple=16, max_side=1024)
QWEN_LIMITS = SizeLimits(multiple=16, max_side=2048)
ODD_SHAPES = [(1, 1), (3, 2), (4000, 60), (60, 4000), (8000, 20), (20, 8000), (7000, 5000), (2560, 512)]


@pytest.mark.parametrize(("size", "expected"), [
    ((640, 480), (688, 512)),   # short side lifted to 512, 682.7 → 688 (stride 16)
    ((1, 1), (512, 512)),
    ((2560, 512), (1024, 208)),  # long side capped at 1024
    ((7000, 5000), (1024, 736)),
    ((1024, 1024), (1024, 1024)),
])
def test_bagel_default_is_its_inference_transform(size, expected):
    plan = edit_plan(size, BAGEL_LIMITS, ("bagel", bagel_rule()))
    assert plan.size == expected
    assert plan.record()["pad"] is None


@pytest.mark.parametrize(("size", "expected"), [((640, 480), (1184, 896)), ((1000, 1000), (1024, 1024)),
                                                 ((1920, 1080), (1376, 768))])
def test_qwen_default_is_diffusers_calculate_dimensions(size, expected):
    plan = edit_plan(size, QWEN_LIMITS, ("qwen", qwen_image_edit_rule()))
    assert plan.size == expected


@pytest.mark.parametrize("limits", [BAGEL_LIMITS, QWEN_LIMITS, SizeLimits(multiple=16, max_side=64)])
@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_every_shape_gets_a_size_inside_the_limits(shape, limits):
    for rule in (("bagel", bagel_rule()), ("qwen", qwen_image_edit_rule())):
        plan = edit_plan(shape, limits, rule)
        w, h = plan.size
        assert w % limits.multiple == 0 and h % limits.multiple == 0
        assert limits.multiple <= min(w, h) and max(w, h) <= limits.max_side
        out = plan.placement.apply(Image.new("RGB", shape, (255, 0, 0)))
        assert out.size == plan.size
        # padded: the content is the largest aspect-keeping fit (to whole pixels), centred
        rw, rh = plan.placement.resize
        if plan.placement.pad is not None:
            scale = min(w / shape[0], h / shape[1])
            assert (rw, rh) == (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
            left, top, right, bottom = plan.placement.pad
            assert left + rw + right == w and top + rh + bottom == h and abs(left - right) <= 1
            assert plan.placement.unpad(out).size == (rw, rh)


def test_a_strip_is_padded_not_squashed_and_the_record_says_so():
    plan = edit_plan((8000, 20), BAGEL_LIMITS, ("bagel", bagel_rule()))
    record = plan.record()
    assert record["size"] == [1024, 16] and record["resize"] == [1024, 3]
    assert record["pad"] == [0, 6, 0, 7]
    # a 4000×60 panorama fits by the stride's rounding alone: resized, no padding
    assert edit_plan((4000, 60), BAGEL_LIMITS, ("bagel", bagel_rule())).record()["pad"] is None


def test_area_option_and_explicit_size():
    plan = edit_plan((640, 480), QWEN_LIMITS, ("qwen", qwen_image_edit_rule()), area=512 * 512)
    assert plan.rule == "area:262144" and plan.size == (592, 448)
    assert edit_plan((640, 480), QWEN_LIMITS, ("q", qwen_image_edit_rule()), size=(512, 384)).size == (512, 384)
    with pytest.raises(InputError) as err:
        edit_plan((640, 480), BAGEL_LIMITS, ("bagel", bagel_rule()), size=(2048, 512))
    assert err.value.field == "edit_size"
    with pytest.raises(InputError) as err:
        edit_plan((640, 480), BAGEL_LIMITS, ("bagel", bagel_rule()), area=3)
    assert err.value.field == "edit_area"


def test_placement_of_a_matching_aspect_is_a_plain_resize():
    assert place((640, 480), (688, 512), 16).pad is None


@pytest.mark.parametrize("processor", [(3136, 12845056), (28 * 28 * 4, 28 * 28 * 16)])
@pytest.mark.parametrize("shape", [*ODD_SHAPES, (8000, 5000)])
def test_qwen_vl_stage2_size_passes_the_processor_unchanged(shape, processor):
    """The processor's own smart_resize raises on aspect ≥ 200 and would resize anything else: the stage-II
    size must be a fixed point of it, so what we report is what the model reads."""
    lo, hi = processor
    plan = qwen_vl_stage2(lo, hi).plan(shape)
    w, h = plan.size
    assert max(w, h) / min(w, h) < 200
    assert smart_resize(h, w, 28, lo, hi) == (h, w)


def test_stage2_cap_bounds_a_40_megapixel_input_per_image_and_shared():
    cap = 1024 * 1024
    sizing = qwen_vl_stage2(3136, 12845056, cap=cap)
    original, thought = Image.new("RGB", (8000, 5000)), Image.new("RGB", (1216, 768))
    images, record = sizing.prepare([original, thought])  # each on its own (the default)
    assert [im.size for im in images] == [tuple(r["size"]) for r in record["images"]]
    assert all(w * h <= cap for w, h in (im.size for im in images))
    images, record = sizing.prepare([original, thought], "shared")
    assert images[0].size == images[1].size == tuple(record["size"])
    assert record["size"][0] * record["size"][1] <= cap
    uncapped = qwen_vl_stage2(3136, 12845056).plan((8000, 5000)).size
    assert uncapped[0] * uncapped[1] > cap  # the default is the processor's own max_pixels
