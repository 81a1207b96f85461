"""The FLOP/byte ledger: torch's counter on meta tensors agrees with hand-counted FLOPs, and the released
configs are counted without allocating their weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from g2u.bench.ledger import ACCELERATORS, Entry, _lm_forward, count_flops, qwen_image_edit_ledger
from g2u.errors import InputError


def test_linear_layer_flops_on_meta():
    layer = torch.nn.Linear(64, 32, device="meta")
    x = torch.empty(8, 64, device="meta")
    assert count_flops(layer, x) == 2 * 8 * 64 * 32


def test_attention_flops_on_meta():
    b, h, lq, lk, d = 2, 4, 16, 24, 32
    q = torch.empty(b, h, lq, d, device="meta")
    k = torch.empty(b, h, lk, d, device="meta")
    v = torch.empty(b, h, lk, d, device="meta")
    # QKᵀ and AV: 2·lq·lk·d each, per head and batch row.
    assert count_flops(F.scaled_dot_product_attention, q, k, v) == 4 * b * h * lq * lk * d


def test_decode_token_flops_match_hand_count():
    """One decoded token of a Qwen2.5-VL language model after ``past`` cached tokens: every linear layer
    once (2 FLOPs per weight) plus attention over past + 1 positions."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from g2u.backends.qwen_vl import build_tiny_qwen2_5_vl

    model, _, _ = build_tiny_qwen2_5_vl(None, 0, hidden_size=64, num_layers=3, heads=4, kv_heads=2,
                                        intermediate_size=96)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    with torch.device("meta"):
        meta = Qwen2_5_VLForConditionalGeneration(model.config)
    lm = meta.model.language_model
    c = lm.config
    hd = c.hidden_size // c.num_attention_heads
    past = 40
    per_layer = (c.hidden_size * c.hidden_size * 2  # q, o
                 + 2 * c.hidden_size * c.num_key_value_heads * hd  # k, v
                 + 3 * c.hidden_size * c.intermediate_size)  # gate, up, down
    linear = 2 * c.num_hidden_layers * per_layer
    attention = c.num_hidden_layers * 4 * c.num_attention_heads * hd * (past + 1)
    assert count_flops(_lm_forward, lm, 1, 1, past, torch.device("meta"), torch.float32) == linear + attention


def test_floor_is_the_slower_of_compute_and_memory():
    acc = ACCELERATORS["h100-sxm"]
    compute_bound = Entry("edit", "x", flops=989e12, bytes=1e9, times=2)
    memory_bound = Entry("understand", "y", flops=1e9, bytes=3.35e12)
    assert compute_bound.floor_s(acc) == pytest.approx(2.0)
    assert memory_bound.floor_s(acc) == pytest.approx(1.0)


def test_unknown_accelerator_is_named():
    from g2u.bench.ledger import accelerator

    with pytest.raises(InputError) as err:
        accelerator("tpu-v9")
    assert err.value.field == "accelerator"


def test_real_size_ledger_on_meta_allocates_nothing():
    """The released Qwen-Image-Edit (20B transformer, 8B text encoder) counted on meta: every weight stays
    a meta tensor, both CFG branches cost twice one branch, and every stage has a positive floor."""
    from g2u.bench.sizes import build_qwen_image_edit, parameter_bytes

    parts = build_qwen_image_edit("real", device="meta", dtype=torch.bfloat16)
    for module in (parts.transformer, parts.text_encoder, parts.vae):
        assert all(p.is_meta for p in module.parameters())
    assert parameter_bytes(parts.transformer) > 40e9  # 20B parameters in bf16, none of it allocated
    ledger = qwen_image_edit_ledger(parts, width=512, height=512, steps=30, text_cfg=4.0, answer_tokens=32)
    steps = {e.item: e for e in ledger.entries if e.item.startswith("denoising step")}
    one = next(e for name, e in steps.items() if "one CFG branch" in name)
    both = next(e for name, e in steps.items() if "2 CFG branches" in name)
    assert both.flops == 2 * one.flops and both.times == 30
    report = ledger.to_dict(ACCELERATORS["h100-sxm-measured"], measured_s={"edit": 10.0})
    assert set(report["stages"]) == {"edit", "understand"}
    assert all(s["floor_s"] > 0 for s in report["stages"].values())
    assert report["stages"]["edit"]["fraction_of_floor"] == pytest.approx(report["stages"]["edit"]["floor_s"] / 10)
    # A step over 2×1024 image tokens of a 20B MMDiT is tens of TFLOPs per branch.
    assert 20e12 < one.flops < 60e12
