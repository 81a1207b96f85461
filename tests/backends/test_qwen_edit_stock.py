"""Our Qwen-Image-Edit stage I against the stock diffusers ``QwenImageEditPipeline``, run here directly.

The input is non-square and no side is a multiple of 32, so the stock call resizes it itself, with its
image processor's own filter (``VaeImageProcessor(resample="lanczos")``). Ours resizes it to the working
size before calling its pipeline (``Placement.apply`` with the pipeline's filter), which then has nothing
left to resize: the two must condition on the same pixels. The only change to the stock call: its
``calculate_dimensions`` returns the demo's working size instead of ~1024² (a CPU test cannot afford
1024²; at 1024² our default size is the stock rule, ``tests/backends/test_faithful.py``).

What is compared: the conditioning pixels exactly (the image the text encoder reads and the tensor the VAE
encodes, captured in both pipelines), then the output image. The tiny random model's output barely
depends on input detail (a bicubic resize moves it by 0.1 level), so the conditioning comparison is the
one that sees a wrong filter. Noise floor (float32 both, measured): decoded floats differ by ≤ 1.1e-6
(our batched CFG against the stock two passes), uint8 images identical (0 of 11520 values);
``IMAGE_OFF`` allows 0.5 % of values one rounding step apart.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import QwenImageEditPipeline
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit
from PIL import Image

from g2u.backends.qwen_image_edit import QwenImageEditBackend
from g2u.schema import edit_params

IMAGE_OFF = 5e-3
INPUT = (75, 53)
PROMPT = "remove the distractors and isolate the salient object"


def _picture(size: tuple[int, int]) -> Image.Image:
    """Fine structure (so the resampling filter matters), deterministic."""
    w, h = size
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    arr = np.stack([(x * 37 + y * 11) % 256, (y * 29) % 256, ((x * y) * 7) % 256], axis=-1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _spy(monkeypatch, pipe) -> dict[str, np.ndarray]:
    """What ``pipe`` conditions on: the image its text encoder reads and the tensor its VAE encodes."""
    seen: dict[str, np.ndarray] = {}
    encode, prepare = pipe.encode_prompt, pipe.prepare_latents

    def encode_prompt(*args, image=None, **kwargs):
        images = image if isinstance(image, (list, tuple)) else [image]
        seen.setdefault("text encoder image", np.stack([np.asarray(i.convert("RGB")) for i in images]))
        return encode(*args, image=image, **kwargs)

    def prepare_latents(image, *args, **kwargs):
        seen.setdefault("VAE input", image.detach().float().numpy().copy())
        return prepare(image, *args, **kwargs)

    monkeypatch.setattr(pipe, "encode_prompt", encode_prompt)
    monkeypatch.setattr(pipe, "prepare_latents", prepare_latents)
    return seen


@pytest.fixture(scope="module")
def backend(demo_root) -> QwenImageEditBackend:
    return QwenImageEditBackend.from_pretrained(str(demo_root / "qwen_image_edit"), device="cpu", dtype="float32")


def test_stage_one_is_the_stock_pipeline_on_an_odd_input(backend, monkeypatch):
    text_cfg, seed = 4.0, 3
    image = _picture(INPUT)
    plan = backend.plan_edit_size(image.size)
    assert plan.placement.pad is None and all(s % 32 for s in INPUT)
    width, height = plan.size
    # The stock rule at 1024² is ours for real checkpoints (tests/backends/test_faithful.py); the demo's is
    # that rule scaled to its area, so the stock call is given the demo's size in place of its ~1024².
    monkeypatch.setattr(pipeline_qwenimage_edit, "calculate_dimensions", lambda area, ratio: (width, height, None))
    stock = QwenImageEditPipeline(**backend.pipe.components)
    stock.set_progress_bar_config(disable=True)
    seen = {"stock": _spy(monkeypatch, stock), "ours": _spy(monkeypatch, backend.pipe)}
    expected = stock(image=image, prompt=PROMPT, negative_prompt=" ", true_cfg_scale=text_cfg, num_inference_steps=3,
                     generator=torch.Generator().manual_seed(seed)).images[0]
    (ours,) = backend.edit([image], [PROMPT], [edit_params(steps=3, text_cfg=text_cfg, seed=seed, size=plan.size)])
    for what in ("text encoder image", "VAE input"):
        got, ref = seen["ours"][what], seen["stock"][what]
        assert got.shape == ref.shape and np.array_equal(got, ref), f"{what} differs from the stock pipeline's"
    a, b = np.asarray(ours.image, dtype=np.int32), np.asarray(expected.convert("RGB"), dtype=np.int32)
    assert a.shape == b.shape == (height, width, 3)
    diff = np.abs(a - b)
    assert diff.max() <= 1 and (diff > 0).mean() <= IMAGE_OFF, \
        f"{int((diff > 0).sum())} of {diff.size} values differ, by up to {int(diff.max())}"
