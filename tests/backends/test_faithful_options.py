"""The readings where the references differ, each an explicit option with the reference's default.

* stage-II sizing: each image on its own (stock Qwen2.5-VL processing, BAGEL's inferencer) or ``shared``;
* ``order``: the paper's [I, q, Î] or lmms-eval's [I, Î, q], by name, recorded in the result;
* ``replace`` with ``replace_min_psnr``: the authors' PSNR > 25 dB rule, recorded in the result;
* the ``multiturn`` layout's turns reach BAGEL (as role segments), not only the chat-template backends.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from g2u.answer_prompt import answer_contents
from g2u.backends import load_backend
from g2u.backends.bagel.model import TextSegment
from g2u.backends.base import BackendBase
from g2u.backends.qwen_vl import qwen_vl_stage2
from g2u.pipeline import G2UPipeline
from g2u.replace_gate import AUTHORS_MIN_PSNR, replace_source
from g2u.schema import answer_params, parse_request
from g2u.types import Thought, Turn


def _picture(size, shift=0) -> Image.Image:
    w, h = size
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    return Image.fromarray(np.stack([(x * 5 + shift) % 256, (y * 7) % 256, (x + y) % 256], -1).astype(np.uint8))


class Spy:
    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def answer(self, contents, params):
        self.calls.append([list(c) for c in contents])
        return self.inner.answer(contents, params)

    answer_grouped = BackendBase.answer_grouped  # grouped calls go through this spy's answer


@pytest.fixture(scope="module")
def qwen(demo_root):
    return load_backend(str(demo_root / "qwen_image_edit"))


# ------------------------------------------------------------------------------------------ stage-II sizing
def test_each_stage2_image_is_sized_on_its_own_by_default():
    """A small benchmark image and a ~1024² thought: stock processing reads each at its own smart_resize."""
    sizing = qwen_vl_stage2(3136, 1003520)
    small, thought = Image.new("RGB", (320, 240)), Image.new("RGB", (1024, 768))
    images, record = sizing.prepare([small, thought])
    assert record["sizing"] == "per_image"
    assert [im.size for im in images] == [sizing.plan(small.size).size, sizing.plan(thought.size).size]
    assert images[0].size != images[1].size  # the thought is not downsampled to the small image's size
    shared, record = sizing.prepare([small, thought], "shared")
    assert record["sizing"] == "shared" and shared[0].size == shared[1].size == sizing.plan(small.size).size


def test_stage2_sizing_is_a_request_field_reaching_the_backend(qwen):
    req = parse_request({"question": "What?", "stage2_sizing": "shared"}, image=_picture((300, 200)))
    assert req.answer.stage2_sizing == "shared"
    assert parse_request({"question": "What?"}, image=_picture((30, 20))).answer.stage2_sizing == "per_image"
    (answer,) = qwen.answer([[_picture((300, 200)), "What?", _picture((64, 64))]], answer_params(max_new_tokens=2))
    record = answer.stage2
    assert record["sizing"] == "per_image" and record["images"][0]["size"] != record["images"][1]["size"]


# ------------------------------------------------------------------------------------------ order, replace
def test_named_order_lmms_eval_puts_the_thought_before_the_question(qwen):
    image, thought = _picture((48, 32)), _picture((48, 32), 9)
    req = parse_request({"question": "What is it?", "order": "lmms_eval"}, image=image)
    parts = answer_contents(req, Thought(image=thought, edit=None), None, qwen)
    assert parts[0] is image and parts[1] is thought and isinstance(parts[2], str)
    assert parse_request({"question": "q"}, image=image).order == ("I", "q", "T")  # the paper's, by default


@pytest.mark.parametrize(("psnr", "threshold", "source"), [
    (25.0, AUTHORS_MIN_PSNR, "original"),  # strictly above, as the authors' `psnr_value > 25`
    (25.01, AUTHORS_MIN_PSNR, "thought"),
    (3.0, None, "thought"),                # no threshold: the paper's replace, always Î
    (None, 25.0, "original"),
])
def test_replace_source(psnr, threshold, source):
    assert replace_source(psnr, threshold) == source


@pytest.mark.parametrize(("threshold", "answered_from"), [(100.0, "original"), (0.0, "thought"), (None, None)])
def test_replace_with_a_psnr_threshold_answers_from_what_it_records(qwen, threshold, answered_from):
    spy = Spy(qwen)
    fields = {"question": "What shape?", "mode": "replace", "steps": 2, "order": "lmms_eval"}
    if threshold is not None:
        fields["replace_min_psnr"] = threshold
    req = parse_request(fields, image=_picture((48, 32)))
    [result] = G2UPipeline(spy)([req])
    [[parts]] = spy.calls
    record = result.to_dict()["answer_prompt"]
    read = [p for p in parts if isinstance(p, Image.Image)]
    if threshold is None:
        assert record is None and read == [result.thought.image]
        return
    assert record["replace"] == {"min_psnr": threshold, "psnr": result.thought.measures["psnr"],
                                 "answered_from": answered_from}
    assert read == [req.image if answered_from == "original" else result.thought.image]


def test_result_records_the_order_it_used(qwen):
    req = parse_request({"question": "What?", "steps": 2, "order": "lmms_eval"}, image=_picture((48, 32)))
    [result] = G2UPipeline(qwen)([req])
    assert result.to_dict()["answer_prompt"] == {"order": "I,T,q", "order_name": "lmms_eval"}


# ------------------------------------------------------------------------------------------ multiturn on BAGEL
def test_multiturn_turns_reach_bagel_as_role_segments(demo_root, monkeypatch):
    bagel = load_backend(str(demo_root / "bagel"))
    rows_seen = []
    extend = bagel.model.extend
    monkeypatch.setattr(bagel.model, "extend", lambda cache, rows: rows_seen.append(rows) or extend(cache, rows))
    image, thought = _picture((48, 32)), _picture((48, 32), 9)
    req = parse_request({"question": "What?", "layout": "multiturn"}, image=image)
    parts = answer_contents(req, Thought(image=thought, edit=None), None, bagel)
    assert [p.role for p in parts if isinstance(p, Turn)] == ["user", "assistant", "user"]
    bagel.answer([parts], answer_params(max_new_tokens=2))
    texts = [s.ids for s in rows_seen[0][0] if isinstance(s, TextSegment)]
    roles = [bagel.encode_text("user"), bagel.encode_text("assistant")]
    assert [t for t in texts if t in roles] == [roles[0], roles[1], roles[0]]
