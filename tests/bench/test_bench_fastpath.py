"""The fast path keeps answers and thoughts equal to the stock path up to float noise, and its switches
refuse settings that cannot work, naming the field."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from g2u.backends.qwen_vl import build_tiny_qwen2_5_vl, prepare_answer_inputs
from g2u.errors import InputError
from g2u.fastpath import (
    STOCK,
    FastPath,
    VisionEncodingCache,
    disable_vision_reuse,
    enable_vision_reuse,
    set_decoding,
)


@pytest.fixture(scope="module")
def tiny_vl():
    model, _, processor = build_tiny_qwen2_5_vl(None, 3)
    return model, processor


def _images():
    red = Image.new("RGB", (56, 56), (200, 30, 30))
    blue = Image.new("RGB", (56, 56), (30, 60, 200))
    return red, blue


def _generate(model, inputs, tokens=6):
    with torch.inference_mode():
        return model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                              output_logits=True, return_dict_in_generate=True)


def test_vision_reuse_encodes_each_image_once_and_changes_nothing(tiny_vl):
    model, processor = tiny_vl
    red, blue = _images()
    inputs = prepare_answer_inputs(model, processor, [[red, "What is in the picture?", red, blue]])
    disable_vision_reuse(model)
    plain = _generate(model, inputs)
    cache = enable_vision_reuse(model)
    try:
        assert enable_vision_reuse(model) is cache  # idempotent
        reused = _generate(model, inputs)
        # Red appears twice in the prompt and is encoded once; blue once.
        assert (cache.misses, cache.hits) == (2, 1)
        again = _generate(model, inputs)
        assert (cache.misses, cache.hits) == (2, 4)  # a second request with the same pixels: all hits
    finally:
        disable_vision_reuse(model)
    assert torch.equal(plain.sequences, reused.sequences) and torch.equal(plain.sequences, again.sequences)
    for a, b in zip(plain.logits, reused.logits):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert not isinstance(model.model.__dict__.get("get_image_features"), VisionEncodingCache)


def test_vision_cache_is_bounded(tiny_vl):
    model, processor = tiny_vl
    cache = enable_vision_reuse(model, max_images=1)
    try:
        for img in _images():
            _generate(model, prepare_answer_inputs(model, processor, [[img, "Which color?"]]), tokens=1)
        assert len(cache.store) == 1
    finally:
        disable_vision_reuse(model)


def test_static_cache_decodes_the_same_tokens_and_logits(tiny_vl):
    model, processor = tiny_vl
    red, blue = _images()
    inputs = prepare_answer_inputs(model, processor, [[red, "What color is it?"], [blue, "Which shape is it?"]])
    set_decoding(model, static_cache=False, compile_decode=False)
    dynamic = _generate(model, inputs, tokens=8)
    set_decoding(model, static_cache=True, compile_decode=False)
    try:
        static = _generate(model, inputs, tokens=8)
    finally:
        set_decoding(model, static_cache=False, compile_decode=False)
    assert torch.equal(dynamic.sequences, static.sequences)
    for a, b in zip(dynamic.logits, static.logits):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_defaults_follow_the_device():
    cpu = FastPath().resolved(torch.device("cpu"))
    assert cpu.vision_reuse and not cpu.static_cache and not cpu.compile_decode
    gpu = FastPath().resolved(torch.device("cuda"))
    assert gpu.static_cache and gpu.compile_decode
    assert not STOCK.resolved(torch.device("cuda")).static_cache


def test_bad_fast_path_settings_name_the_field():
    with pytest.raises(InputError) as err:
        FastPath(static_cache=False, compile_decode=True).resolved(torch.device("cpu"))
    assert err.value.field == "compile_decode"
    with pytest.raises(InputError) as err:
        FastPath(step_cache=1.5).resolved(torch.device("cpu"))
    assert err.value.field == "step_cache"
