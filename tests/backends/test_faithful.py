"""Faithful G→U on the demo backends: working size by the model's own rule on any input shape,
I and Î at one stage-II size, BAGEL's own think prompt, real-checkpoint loading checks, the Plus layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from g2u.backends import load_backend
from g2u.backends.bagel import BagelBackend
from g2u.backends.bagel.model import TextSegment
from g2u.backends.bagel.params import VLM_THINK_SYSTEM_PROMPT
from g2u.backends.qwen_image_edit import QwenImageEditBackend
from g2u.backends.qwen_vl import QWEN2_5_VL_CHAT_TEMPLATE
from g2u.errors import CheckpointError
from g2u.pipeline import G2UPipeline
from g2u.schema import answer_params, edit_params, parse_request

ODD = [(1, 1), (4000, 60), (8000, 20), (20, 8000)]


def _picture(size: tuple[int, int]) -> Image.Image:
    w, h = size
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    arr = np.stack([(x * 5) % 256, (y * 7) % 256, ((x + y) * 3) % 256], axis=-1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def bagel(demo_root) -> BagelBackend:
    return BagelBackend.from_pretrained(str(demo_root / "bagel"), device="cpu")


@pytest.fixture(scope="module")
def qwen(demo_root) -> QwenImageEditBackend:
    return QwenImageEditBackend.from_pretrained(str(demo_root / "qwen_image_edit"), device="cpu")


# ------------------------------------------------------------------------------------------ stage I
def test_default_rules_are_the_models_own(demo_root):
    real_bagel = BagelBackend.from_pretrained(str(demo_root / "bagel"), device="cpu", demo=False)
    assert real_bagel.default_size_rule[1](640, 480) == (688, 512)  # ImageTransform(1024, 512, 16)
    real_qwen = QwenImageEditBackend.from_pretrained(str(demo_root / "qwen_image_edit"), device="cpu", demo=False)
    assert real_qwen.default_size_rule[1](640, 480) == (1184, 896)  # calculate_dimensions(1024², 4/3)


@pytest.mark.parametrize("name", ["bagel", "qwen"])
def test_every_shape_is_edited_at_its_reported_size(name, bagel, qwen):
    backend = {"bagel": bagel, "qwen": qwen}[name]
    for shape in ODD:
        plan = backend.plan_edit_size(shape)
        w, h = plan.size
        assert max(w, h) <= backend.size_limits.max_side and min(w, h) >= backend.size_multiple
        params = edit_params(steps=2, size=plan.size, text_cfg=1.0)
        backend.validate_edit(params)
        (out,) = backend.edit([_picture(shape)], ["sharpen the details"], [params])
        assert out.image.size == plan.size


def test_pipeline_reports_the_backend_plan_in_edit_size(bagel):
    pipe = G2UPipeline(bagel)
    req = parse_request({"question": "What is in the picture?", "steps": 2, "text_cfg": 1.0},
                        image=_picture((4000, 60)))
    (thought,) = pipe.edit([pipe.plan(req)])
    plan = bagel.plan_edit_size((4000, 60))
    assert tuple(thought.edit.size) == plan.size == thought.image.size
    assert thought.edit.sizing == plan.record() and thought.edit.to_dict()["sizing"]["input"] == [4000, 60]


def test_bagel_edit_context_vit_reads_the_resized_image(bagel, monkeypatch):
    seen: list[tuple[int, int]] = []
    original = bagel.model.embed_vit_images

    def spy(images):
        seen.extend(img.size for img in images)
        return original(images)

    monkeypatch.setattr(bagel.model, "embed_vit_images", spy)
    plan = bagel.plan_edit_size((300, 100))
    bagel.edit([_picture((300, 100))], ["sharpen"], [edit_params(steps=2, size=plan.size, text_cfg=1.0)])
    assert seen == [plan.size]


# ------------------------------------------------------------------------------------------ stage II
@pytest.mark.parametrize("name", ["bagel", "qwen"])
def test_stage2_shared_reads_original_and_thought_at_one_size_even_for_a_strip(name, bagel, qwen):
    backend = {"bagel": bagel, "qwen": qwen}[name]
    original = _picture((8000, 20))
    thought = _picture(backend.plan_edit_size((8000, 20)).size)
    shared = answer_params(max_new_tokens=3, stage2_sizing="shared")
    (answer,) = backend.answer([[original, "What is in the picture?", thought]], shared)
    assert isinstance(answer.text, str)
    record = answer.stage2
    sizes = {tuple(r["resize"]) if r["pad"] is None else tuple(record["size"]) for r in record["images"]}
    assert sizes == {tuple(record["size"])}
    first = record["images"][0]
    # aspect 400 cannot reach the model unpadded (BAGEL pads in its generation-side resize, reported as pre)
    assert first["pad"] is not None or first["pre"]["pad"] is not None


def test_stage2_cap_is_configurable(qwen):
    cap = 28 * 28 * 6
    [answer] = qwen.answer([[_picture((900, 700)), "What?"]], answer_params(max_new_tokens=2))
    w, h = answer.stage2["size"]
    assert w * h > cap  # the processor's own max_pixels by default
    qwen.stage2_max_pixels = cap
    try:
        [answer] = qwen.answer([[_picture((900, 700)), "What?"]], answer_params(max_new_tokens=2))
        w, h = answer.stage2["size"]
        assert w * h <= cap
    finally:
        qwen.stage2_max_pixels = None
    per_call = answer_params(max_new_tokens=2)
    per_call.stage2_max_pixels = 28 * 28 * 4  # a request's own cap, where the schema carries one
    [answer] = qwen.answer([[_picture((900, 700)), "What?"]], per_call)
    w, h = answer.stage2["size"]
    assert w * h <= 28 * 28 * 4


# ------------------------------------------------------------------------------------------ BAGEL think
def test_bagel_think_answer_uses_its_vlm_think_prompt_and_a_real_budget(bagel, monkeypatch):
    rows_seen = []
    original = bagel.model.extend

    def spy(cache, rows):
        rows_seen.append(rows)
        return original(cache, rows)

    monkeypatch.setattr(bagel.model, "extend", spy)
    budget = []
    decode = bagel.model.decode
    monkeypatch.setattr(bagel.model, "decode", lambda cache, n, *a, **k: budget.append(n) or decode(cache, n, *a, **k))
    out = bagel.think_answer([[_picture((64, 48)), "What is in the picture?"]], answer_params(max_new_tokens=3),
                             max_think_tokens=5)
    (reasoning, answer), = out
    assert isinstance(reasoning, str) and isinstance(answer.text, str) and answer.stage2 is not None
    first = rows_seen[0][0][0]
    assert isinstance(first, TextSegment) and first.ids == bagel.encode_text(VLM_THINK_SYSTEM_PROMPT)
    assert budget[0] == 4  # the inferencer's max_think_token_n = 5 counts its start token
    # 5 tokens cannot close </think> on random weights: the answer comes from the follow-up pass
    assert budget[1:] == [3]


# ------------------------------------------------------------------------------------------ checkpoints
def _copy(demo_root: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_root / name, tmp_path / name))


def test_text_encoder_without_lm_head_is_a_checkpoint_error(demo_root, tmp_path):
    folder = _copy(demo_root, "qwen_image_edit", tmp_path)
    weights = folder / "text_encoder" / "model.safetensors"
    tensors = load_file(str(weights))
    assert "lm_head.weight" in tensors
    save_file({k: v for k, v in tensors.items() if k != "lm_head.weight"}, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lm_head"):
        QwenImageEditBackend.from_pretrained(str(folder), device="cpu")


def test_processor_without_chat_template_falls_back_to_the_stock_one(demo_root, tmp_path):
    folder = _copy(demo_root, "qwen_image_edit", tmp_path)
    for sub in ("processor", "tokenizer"):
        (folder / sub / "chat_template.jinja").unlink()
    backend = QwenImageEditBackend.from_pretrained(str(folder), device="cpu")
    assert backend.pipe.processor.chat_template == QWEN2_5_VL_CHAT_TEMPLATE
    assert isinstance(backend.answer([[_picture((64, 48)), "What?"]], answer_params(max_new_tokens=2))[0].text, str)


def test_plus_layout_loads_as_the_plus_variant_and_edits(demo_root):
    from diffusers import QwenImageEditPlusPipeline

    backend = load_backend(str(demo_root / "qwen_image_edit_plus"), backend="qwen_image_edit", device="cpu")
    assert isinstance(backend.pipe, QwenImageEditPlusPipeline) and backend.plus
    assert backend.info.demo
    plan = backend.plan_edit_size((96, 64))
    (out,) = backend.edit([_picture((96, 64))], ["sharpen"], [edit_params(steps=2, size=plan.size)])
    thought = out.image
    assert thought.size == plan.size
    (answer,) = backend.answer([[_picture((96, 64)), "What?", thought]], answer_params(max_new_tokens=2))
    assert isinstance(answer.text, str)
