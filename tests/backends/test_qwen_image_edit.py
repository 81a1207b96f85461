"""The qwen_image_edit backend on a tiny random Qwen-Image-Edit built here (real layout, real code path)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import QwenImageEditPipeline
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit
from PIL import Image
from transformers import Qwen2VLProcessor

from g2u.backends.base import Backend
from g2u.backends.qwen_image_edit import QwenImageEditBackend
from g2u.demo.qwen import DEMO_EDIT_AREA, build_qwen_image_edit_demo
from g2u.errors import InputError
from g2u.schema import answer_params, edit_params


def edit_images(backend, images, prompts, params):
    """Stage I through the backend protocol, thoughts only (``edit`` returns EditOutput)."""
    return [out.image for out in backend.edit(images, prompts, params)]

STEPS = 3


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _picture(size: tuple[int, int], shift: int = 0) -> Image.Image:
    w, h = size
    x = np.arange(w)[None, :, None]
    y = np.arange(h)[:, None, None]
    arr = np.concatenate([(x * 5 + shift) % 256 + 0 * y, (y * 7) % 256 + 0 * x, ((x + y) * 3) % 256], axis=2)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("qwen_demo") / "qwen_image_edit"
    build_qwen_image_edit_demo(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def backend(ckpt) -> QwenImageEditBackend:
    return QwenImageEditBackend.from_pretrained(str(ckpt), device="cpu")


def test_loading_prints_no_processor_type_warning(ckpt, capfd):
    """diffusers checks the processor's type on every load: the image-only processor must be a
    Qwen2VLProcessor, or each CLI call and worker start prints "Expected types for processor"."""
    capfd.readouterr()
    loaded = QwenImageEditBackend.from_pretrained(str(ckpt), device="cpu")
    assert "Expected types" not in capfd.readouterr().err
    assert isinstance(loaded.pipe.processor, Qwen2VLProcessor)


def test_demo_checkpoint_has_the_real_layout_and_is_deterministic(ckpt, tmp_path):
    index = json.loads((ckpt / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageEditPipeline"
    assert index["processor"] == ["transformers", "Qwen2VLProcessor"]
    for sub in ("scheduler", "vae", "text_encoder", "tokenizer", "processor", "transformer"):
        assert (ckpt / sub).is_dir(), sub
    assert (ckpt / "processor" / "video_preprocessor_config.json").is_file()
    te = json.loads((ckpt / "text_encoder" / "config.json").read_text())
    tr = json.loads((ckpt / "transformer" / "config.json").read_text())
    assert te["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert tr["joint_attention_dim"] == te["text_config"]["hidden_size"]

    build_qwen_image_edit_demo(tmp_path / "same", seed=0)
    build_qwen_image_edit_demo(tmp_path / "other", seed=1)
    same, other, ref = _digests(tmp_path / "same"), _digests(tmp_path / "other"), _digests(ckpt)
    assert same == ref
    weights = "transformer/diffusion_pytorch_model.safetensors"
    assert other[weights] != ref[weights]


def test_load_reports_demo_and_shares_one_text_model(backend):
    assert isinstance(backend, Backend)
    assert backend.info.backend == "qwen_image_edit"
    assert backend.info.demo is True
    assert backend.info.dtype == "float32" and backend.info.device == "cpu"
    assert backend.default_edit_area == DEMO_EDIT_AREA
    assert backend.size_multiple == 16
    assert "vae_concat" not in backend.modes
    assert backend.answer_model is backend.pipe.text_encoder
    vlms = [
        c
        for c in backend.pipe.components.values()
        if isinstance(c, torch.nn.Module) and hasattr(c, "generate")
    ]
    assert vlms == [backend.pipe.text_encoder]


def test_edit_returns_exact_working_sizes_for_mixed_inputs(backend):
    images = [_picture((96, 64)), _picture((40, 90), shift=9)]
    params = [edit_params(steps=STEPS, size=(64, 48), seed=1), edit_params(steps=STEPS, size=(32, 80), seed=2)]
    out = edit_images(backend, images, ["sharpen the details", "extend the frame to the left"], params)
    assert [o.size for o in out] == [(64, 48), (32, 80)]
    assert all(o.mode == "RGB" for o in out)


def test_same_seed_same_thought_across_loads(ckpt, backend):
    other = QwenImageEditBackend.from_pretrained(str(ckpt), device="cpu")
    img = _picture((80, 64))
    a = edit_images(backend, [img], ["denoise"], [edit_params(steps=STEPS, size=(48, 48), seed=7)])[0]
    b = edit_images(other, [img], ["denoise"], [edit_params(steps=STEPS, size=(48, 48), seed=7)])[0]
    c = edit_images(other, [img], ["denoise"], [edit_params(steps=STEPS, size=(48, 48), seed=8)])[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_batched_cfg_matches_stock_two_pass(backend, monkeypatch):
    """One batch-2 forward (cond + padded, masked uncond) equals the stock pipeline's two passes, fp32."""
    width, height, seed = 48, 32, 5
    img = _picture((width, height))
    prompt = "remove the distractors and isolate the salient object"
    # The stock call resizes to ~1024²; pin that size to the working size so both run the same problem.
    monkeypatch.setattr(
        pipeline_qwenimage_edit, "calculate_dimensions", lambda area, ratio: (width, height, None)
    )
    stock = QwenImageEditPipeline(**backend.pipe.components)
    stock.set_progress_bar_config(disable=True)
    expected = stock(
        image=img,
        prompt=prompt,
        negative_prompt=" ",
        true_cfg_scale=4.0,
        height=height,
        width=width,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images

    calls: list[int] = []
    hook = backend.pipe.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append(kwargs["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        ours = backend.pipe(
            image=[img],
            prompt=[prompt],
            width=width,
            height=height,
            negative_prompt=" ",
            true_cfg_scale=4.0,
            num_inference_steps=STEPS,
            generator=[torch.Generator().manual_seed(seed)],
            output_type="np",
        ).images
    finally:
        hook.remove()
    assert calls == [2] * STEPS  # cond and uncond went through together
    assert ours.shape == expected.shape == (1, height, width, 3)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_text_cfg_one_skips_the_uncond_branch(backend):
    calls: list[int] = []
    hook = backend.pipe.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append(kwargs["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        edit_images(backend,
            [_picture((32, 32))] * 2, ["a", "b"], [edit_params(steps=2, text_cfg=1.0, size=(32, 32))] * 2
        )
    finally:
        hook.remove()
    assert calls == [2, 2]  # one forward per step, batch = the two items, no uncond rows


def test_item_thought_does_not_depend_on_batch_mates(backend):
    img, mate = _picture((64, 48)), _picture((64, 48), shift=100)
    kwargs = {"width": 48, "height": 32, "num_inference_steps": STEPS, "true_cfg_scale": 4.0, "output_type": "np"}
    alone = backend.pipe(
        image=[img], prompt=["sharpen"], generator=[torch.Generator().manual_seed(3)], **kwargs
    )
    both = backend.pipe(
        image=[mate, img],
        prompt=["zoom in on the detail of the top left corner", "sharpen"],
        generator=[torch.Generator().manual_seed(11), torch.Generator().manual_seed(3)],
        **kwargs,
    )
    np.testing.assert_allclose(both.images[1], alone.images[0], atol=1e-4)
    assert not np.allclose(both.images[0], alone.images[0], atol=1e-2)


def test_answer_one_and_two_images(backend):
    img, thought = _picture((64, 48)), _picture((48, 48), shift=50)
    contents = [[img, "What color is the square?"], [img, "What color is the square?", thought]]
    answers = [a.text for a in backend.answer(contents, answer_params(max_new_tokens=6))]
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    # Greedy and left-padded: a batched answer equals the answer alone.
    assert [a.text for a in backend.answer(contents[1:], answer_params(max_new_tokens=6))] == answers[1:]


def test_rejects_image_cfg_and_bad_sizes(backend):
    img = _picture((32, 32))
    with pytest.raises(InputError) as err:
        edit_images(backend, [img], ["x"], [edit_params(steps=1, image_cfg=1.5, size=(32, 32))])
    assert err.value.field == "image_cfg"
    with pytest.raises(InputError) as err:
        edit_images(backend, [img], ["x"], [edit_params(steps=1, size=(40, 32))])
    assert err.value.field == "edit_size"
