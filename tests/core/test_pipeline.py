"""The G→U loop on the demo checkpoints: modes see exactly the parts they should, batching works,
seeds reproduce, and every result carries its edit record, fidelity, timings and demo flag."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from g2u.backends import load_backend
from g2u.backends.base import BackendBase
from g2u.errors import InputError
from g2u.pipeline import G2UPipeline
from g2u.schema import parse_request
from g2u.types import G2URequest


class SpyBackend:
    """Wraps a real backend and records what each stage was given."""

    def __init__(self, inner):
        self.inner = inner
        self.edit_calls: list[tuple] = []
        self.answer_calls: list[list[list]] = []
        self.answer_params: list = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    answer_grouped = BackendBase.answer_grouped  # grouped calls go through this spy's answer

    def edit(self, images, prompts, params):
        self.edit_calls.append((list(images), list(prompts), list(params)))
        return self.inner.edit(images, prompts, params)

    def answer(self, contents, params):
        self.answer_calls.append([list(c) for c in contents])
        self.answer_params.append(params)
        return self.inner.answer(contents, params)


@pytest.fixture(scope="module", params=["qwen_image_edit", "decoupled", "bagel"])
def backend(request, demo_root):
    return load_backend(str(demo_root / request.param))


@pytest.fixture
def spy(backend):
    return SpyBackend(backend)


def _req(image, mode="g2u", **fields) -> G2URequest:
    return parse_request({"question": "What shape is in the middle?", "mode": mode, "steps": 2, **fields},
                         image=image)


def _native_reasoning(backend) -> bool:
    """The backend has a reasoning format of its own (BAGEL's think prompt)."""
    return type(backend).think_answer is not BackendBase.think_answer


def _contains(parts, img) -> bool:
    return any(p is img for p in parts)


def test_baseline_never_runs_stage_one(spy, rgb_image):
    [result] = G2UPipeline(spy)([_req(rgb_image, "baseline")])
    assert spy.edit_calls == []
    [[parts]] = spy.answer_calls
    assert _contains(parts, rgb_image) and sum(isinstance(p, Image.Image) for p in parts) == 1
    assert result.thought is None and result.to_dict()["edit"] is None and isinstance(result.answer, str)


def test_replace_never_passes_the_original(spy, rgb_image):
    [result] = G2UPipeline(spy)([_req(rgb_image, "replace")])
    assert len(spy.edit_calls) == 1
    [[parts]] = spy.answer_calls
    assert not _contains(parts, rgb_image)
    assert _contains(parts, result.thought.image)


def test_g2u_answers_from_image_question_thought_in_order(spy, rgb_image):
    [result] = G2UPipeline(spy)([_req(rgb_image)])
    [[parts]] = spy.answer_calls
    assert parts[0] is rgb_image and isinstance(parts[1], str) and parts[2] is result.thought.image
    spy.answer_calls.clear()
    G2UPipeline(spy)([_req(rgb_image, order=("I", "T", "q"))])
    [[parts]] = spy.answer_calls
    assert parts[0] is rgb_image and isinstance(parts[1], Image.Image) and isinstance(parts[2], str)


def test_textual_cot_reasons_then_answers_without_an_image(spy, rgb_image):
    [result] = G2UPipeline(spy)([_req(rgb_image, "textual_cot")])
    assert spy.edit_calls == [] and result.reasoning is not None
    if _native_reasoning(spy.inner):  # BAGEL: its think prompt reasons and answers in one decode
        assert len(spy.answer_calls) <= 1  # a second pass only when the budget ended inside the reasoning
        return
    assert len(spy.answer_calls) == 2
    assert f"Reasoning: {result.reasoning}" in spy.answer_calls[1][0][1]


def test_result_schema(backend, rgb_image):
    [result] = G2UPipeline(backend)([_req(rgb_image, options=["circle", "square"])])
    out = result.to_dict()
    assert out["mode"] == "g2u" and isinstance(out["answer"], str)
    edit = out["edit"]
    assert edit["family"] == "enhancement" and edit["prompt_name"] == "sharpen_details" and edit["writer"] == "library"
    assert (edit["steps"], edit["text_cfg"], edit["image_cfg"], edit["seed"]) == (2, 4.0, 1.0, 0)
    assert edit["size"] == list(result.thought.image.size)
    assert set(out["measures"]) == {"ssim", "psnr"} and -1 <= out["measures"]["ssim"] <= 1
    assert out["fidelity"] == out["measures"]  # the older key, kept for one release (g2u.results.DEPRECATED_KEYS)
    assert {"edit", "understand", "measures", "write_prompt", "total"} <= set(out["timings_ms"])
    assert out["model"]["demo"] is True and "meaningless" in out["model"]["note"]


def test_batch_of_two_sizes(spy, rgb_image):
    tall = Image.new("RGB", (40, 120), (10, 200, 30))
    results = G2UPipeline(spy)([_req(rgb_image), _req(tall, seed=3)])
    wide_size, tall_size = (r.thought.image.size for r in results)
    assert wide_size[0] > wide_size[1] and tall_size[1] > tall_size[0]
    assert all(side % spy.size_multiple == 0 for side in wide_size + tall_size)
    assert len(spy.edit_calls) == 1 and len(spy.edit_calls[0][0]) == 2  # one batched stage-I call
    assert len(spy.answer_calls) == 1 and len(spy.answer_calls[0]) == 2  # one batched stage-II call


def test_explicit_edit_size_is_used(backend, rgb_image):
    m = backend.size_multiple
    req = _req(rgb_image)
    req.edit.size = (4 * m, 2 * m)
    [result] = G2UPipeline(backend)([req])
    assert result.thought.image.size == (4 * m, 2 * m)
    assert req.edit.size == (4 * m, 2 * m)  # the caller's request is not mutated into something else


def test_same_seed_same_outputs_across_loads(demo_root, rgb_image):
    def run(seed):
        pipe = G2UPipeline(load_backend(str(demo_root / "qwen_image_edit")))
        [r] = pipe([_req(rgb_image, seed=seed)])
        return np.asarray(r.thought.image), r.answer

    (t1, a1), (t2, a2), (t3, _) = run(5), run(5), run(6)
    assert np.array_equal(t1, t2) and a1 == a2
    assert not np.array_equal(t1, t3)


def test_leaking_free_prompt_is_rejected(backend, rgb_image):
    req = _req(rgb_image, options=["a red circle", "a blue square"], prompt="Draw a red circle bigger")
    with pytest.raises(InputError) as err:
        G2UPipeline(backend)([req])
    assert err.value.field == "prompt" and "option" in err.value.reason


def test_backend_only_modes_are_checked_per_backend(backend, rgb_image):
    pipe = G2UPipeline(backend)
    if "vae_concat" in backend.modes:
        pipe.plan(_req(rgb_image, "vae_concat"))
        return
    with pytest.raises(InputError) as err:
        pipe.plan(_req(rgb_image, "vae_concat"))
    assert err.value.field == "mode"


def test_misaligned_edit_size_rejected(backend, rgb_image):
    req = _req(rgb_image)
    req.edit.size = (backend.size_multiple * 4 + 3, backend.size_multiple * 4)
    with pytest.raises(InputError) as err:
        G2UPipeline(backend).plan(req)
    assert err.value.field == "edit_size"


def test_backend_specific_edit_params_rejected_before_batching(demo_root, rgb_image):
    pipe = G2UPipeline(load_backend(str(demo_root / "decoupled_kontext")))
    req = _req(rgb_image)
    req.edit.image_cfg = 1.5  # FLUX.1 Kontext has no image-CFG branch
    with pytest.raises(InputError) as err:
        pipe.plan(req)
    assert err.value.field == "image_cfg"
    req.mode = "baseline"  # no stage I: edit parameters are irrelevant
    pipe.plan(req)


def test_bagel_vae_concat_and_think(demo_root, rgb_image):
    spy = SpyBackend(load_backend(str(demo_root / "bagel")))
    pipe = G2UPipeline(spy)
    assert "vae_concat" in pipe.modes
    req = _req(rgb_image, "vae_concat")
    req.edit.options["think"] = True
    [result] = pipe([req])
    [[parts]] = spy.answer_calls
    assert parts[0] is rgb_image and not any(p is result.thought.image for p in parts)
    assert not isinstance(parts[2], (str, Image.Image))  # the thought enters as VAE features
    assert result.thought.edit.options == {"think": True} and isinstance(result.thought.edit.plan, str)


@pytest.mark.parametrize("layout", ["paper", "labelled", "multiturn"])
def test_stage_two_layouts(demo_root, rgb_image, layout):
    from g2u.types import Turn

    spy = SpyBackend(load_backend(str(demo_root / "qwen_image_edit")))
    req = _req(rgb_image)
    req.layout = layout
    [result] = G2UPipeline(spy)([req])
    [[parts]] = spy.answer_calls
    thought = result.thought.image
    images = [p for p in parts if isinstance(p, Image.Image)]
    texts = [p for p in parts if isinstance(p, str)]
    assert result.layout == layout and result.to_dict()["layout"] == layout
    if layout == "paper":  # [I, q, Î] as the paper writes it, the instruction with the question
        assert parts[0] is rgb_image and parts[2] is thought and len(texts) == 1 and "single word" in parts[1]
        return
    assert parts[-1].startswith(req.question) and "single word" in parts[-1]  # question + instruction last
    if layout == "labelled":
        assert parts[0].startswith("The original image") and parts[1] is rgb_image
        assert "edited view" in parts[2] and parts[3] is thought
    else:
        roles = [p.role for p in parts if isinstance(p, Turn)]
        assert roles == ["user", "assistant", "user"] and images == [rgb_image, thought, rgb_image]
        assert parts[parts.index(Turn("assistant")) + 1] is thought
        # the authors' strings (PRIS-CV/reverse-flow-mllm): the first user turn asks to enhance first
        assert texts[0] == f"{texts[1]} Please enhance the image first to help you see the photo more clearly."
        assert result.to_dict()["answer_prompt"]["layout_source"].startswith("PRIS-CV/reverse-flow-mllm")


def test_textual_cot_has_its_own_budget(spy, rgb_image, monkeypatch):
    req = _req(rgb_image, "textual_cot")
    req.reasoning_tokens = 5
    if _native_reasoning(spy.inner):
        budgets = []
        real = spy.inner.think_answer
        def think_answer(contents, params, max_think_tokens):
            budgets.append(max_think_tokens)
            return real(contents, params, max_think_tokens)

        monkeypatch.setattr(spy.inner, "think_answer", think_answer)
        [result] = G2UPipeline(spy)([req])
        assert budgets == [5] and result.reasoning is not None
        return
    [result] = G2UPipeline(spy)([req])
    assert [p.max_new_tokens for p in spy.answer_params] == [5, req.answer.max_new_tokens]  # reasoning, answer
    assert result.reasoning is not None and result.layout is None
