"""The bagel backend on its tiny random demo checkpoint (released layout), CPU only.

Checks the invariants the implementation relies on, without the reference code: the released names
load, a prefilled KV cache gives the velocity of a full recomputation, batched CFG equals unbatched,
a CFG branch at scale 1.0 is never computed, seeds decide the output, batching does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from g2u.backends.bagel import BagelBackend, VaeImage
from g2u.backends.bagel.layout import patchify
from g2u.backends.bagel.model import LatentSegment, TextSegment, VitSegment
from g2u.backends.bagel.params import sampler_settings
from g2u.backends.bagel.sampler import SamplerSettings, combine, denoise
from g2u.backends.bagel.vae import encode_latents
from g2u.backends.bagel.vision import to_unit_tensor
from g2u.backends.base import Backend, read_demo_marker
from g2u.demo.bagel import DEMO_EDIT_AREA, build_bagel_demo
from g2u.errors import CheckpointError, InputError
from g2u.modes import MODES
from g2u.schema import answer_params, edit_params


def _settings(**given) -> SamplerSettings:
    """Sampler settings of a request: the schema's and BAGEL's option defaults under ``given``."""
    core = {k: given.pop(k) for k in ("steps", "text_cfg", "image_cfg") if k in given}
    return sampler_settings(edit_params(**core, options=given))

def edit_images(backend, images, prompts, params):
    """Stage I through the backend protocol, thoughts only (``edit`` returns EditOutput)."""
    return [out.image for out in backend.edit(images, prompts, params)]

SIZE = (64, 48)
GRID = (3, 4)  # latent tokens (rows, cols) of SIZE


def _picture(size: tuple[int, int], phase: int = 0) -> Image.Image:
    w, h = size
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    arr = np.stack([(x * 5 + phase) % 256, (y * 7) % 256, ((x + y) * 3 + phase) % 256], axis=-1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return build_bagel_demo(tmp_path_factory.mktemp("bagel") / "bagel", seed=0)


@pytest.fixture(scope="module")
def backend(demo_dir) -> BagelBackend:
    return BagelBackend.from_pretrained(str(demo_dir), device="cpu")  # fp32: exact invariants


def _contexts(backend: BagelBackend, settings: SamplerSettings, prompts=("sharpen the details",), phase=0):
    images = [_picture(SIZE, phase + 9 * i) for i in range(len(prompts))]
    pixels = torch.stack([to_unit_tensor(img, SIZE) for img in images])
    latents = [patchify(z, 2) for z in encode_latents(backend.vae, pixels, None)]
    cache, _ = backend.edit_contexts(images, list(prompts), latents, GRID, settings)
    return images, latents, cache


# ---------------------------------------------------------------- checkpoint layout and loading
def test_demo_writes_the_released_layout(demo_dir):
    for name in ("ema.safetensors", "ae.safetensors", "llm_config.json", "vit_config.json", "tokenizer.json"):
        assert (demo_dir / name).is_file(), name
    vit_layers = json.loads((demo_dir / "vit_config.json").read_text())["num_hidden_layers"]
    with safe_open(str(demo_dir / "ema.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_slice("vit_model.vision_model.embeddings.patch_embedding.weight").get_shape()[1] == 3 * 14 * 14
    for name in ("language_model.model.layers.0.self_attn.q_proj_moe_gen.weight",
                 "language_model.model.layers.1.mlp_moe_gen.down_proj.weight",
                 "language_model.model.norm_moe_gen.weight", "language_model.lm_head.weight",
                 "latent_pos_embed.pos_embed", "vit_pos_embed.pos_embed", "time_embedder.mlp.2.weight",
                 "vae2llm.weight", "llm2vae.weight", "connector.fc1.weight"):
        assert name in keys, name
    assert not any(k.startswith(f"vit_model.vision_model.encoder.layers.{vit_layers - 1}.") for k in keys)
    with safe_open(str(demo_dir / "ae.safetensors"), "pt") as f:
        ae_keys = set(f.keys())
    assert {"encoder.down.0.block.0.conv1.weight", "decoder.up.1.upsample.conv.weight",
            "decoder.mid.attn_1.q.weight", "encoder.norm_out.weight"} <= ae_keys
    assert read_demo_marker(demo_dir)["default_edit_area"] == DEMO_EDIT_AREA


def test_demo_build_is_deterministic(demo_dir, tmp_path):
    again = build_bagel_demo(tmp_path / "again", seed=0)
    for name in ("ema.safetensors", "ae.safetensors"):
        assert (again / name).read_bytes() == (demo_dir / name).read_bytes()


def test_loads_every_tensor_the_builder_wrote(backend, demo_dir):
    assert isinstance(backend, Backend)
    assert backend.info.backend == "bagel" and backend.info.demo is True
    assert "vae_concat" in backend.modes
    assert backend.size_multiple == 16 and backend.default_edit_area == DEMO_EDIT_AREA
    state = backend.model.state_dict()
    with safe_open(str(demo_dir / "ema.safetensors"), "pt") as f:
        for key in f.keys():
            assert torch.equal(state[key], f.get_tensor(key)), key
    assert len(state) == len(list(safe_open(str(demo_dir / "ema.safetensors"), "pt").keys()))


def test_missing_file_is_a_checkpoint_error(tmp_path):
    (tmp_path / "llm_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="ema.safetensors"):
        BagelBackend.from_pretrained(str(tmp_path))


# ---------------------------------------------------------------- sampler invariants
def test_prefilled_cache_gives_the_velocity_of_a_full_recomputation(backend):
    """The context is prefilled once (image, then prompt) and reused; evaluating the query after a fresh
    one-pass prefill of [image, prompt, query] must give the same velocity, and reusing must not alter
    the cache."""
    settings = _settings(steps=4, text_cfg=1.0, image_cfg=1.0)
    images, latents, cache = _contexts(backend, settings)
    model = backend.model
    x_t = torch.randn(1, GRID[0] * GRID[1], 64, generator=torch.Generator().manual_seed(0))
    length = cache.length
    v1 = model.velocity(cache, x_t, 0.6, GRID)
    v_other = model.velocity(cache, torch.randn_like(x_t), 0.3, GRID)
    v2 = model.velocity(cache, x_t, 0.6, GRID)
    assert cache.length == length
    assert torch.equal(v1, v2) and not torch.allclose(v1, v_other)

    fresh = model.new_cache(1)
    prompt = backend.encode_text("sharpen the details")
    hidden = model.extend(fresh, [[LatentSegment(latents[0], GRID), VitSegment(images[0]), TextSegment(prompt),
                                   LatentSegment(x_t[0], GRID, t=0.6)]])
    n = x_t.shape[1]
    v_full = model.llm2vae(hidden[:, -n - 1:-1]).float()
    torch.testing.assert_close(v1, v_full, rtol=1e-4, atol=1e-5)


def test_batched_cfg_equals_unbatched(backend):
    settings = _settings(steps=5, text_cfg=4.0, image_cfg=2.0, cfg_interval=(0.4, 1.0))
    _, _, cache = _contexts(backend, settings, prompts=("sharpen the details", "remove the noise and the blur"))
    noise = torch.randn(2, GRID[0] * GRID[1], 64, generator=torch.Generator().manual_seed(1))
    batched = denoise(backend.model, cache, noise, GRID, settings, batch_cfg=True)
    unbatched = denoise(backend.model, cache, noise, GRID, settings, batch_cfg=False)
    torch.testing.assert_close(batched, unbatched, rtol=1e-4, atol=1e-5)
    plain = denoise(backend.model, cache.view_rows(0, 2), noise, GRID,
                    _settings(steps=5, text_cfg=1.0, image_cfg=1.0))
    assert not torch.allclose(batched, plain, atol=1e-3)  # guidance does change the result


@pytest.mark.parametrize(("text_cfg", "image_cfg", "rows_per_request"),
                         [(1.0, 1.0, 1), (4.0, 1.0, 2), (4.0, 2.0, 3), (1.0, 2.0, 1)])
def test_a_branch_at_scale_one_is_never_computed(backend, text_cfg, image_cfg, rows_per_request):
    """Count the language model's forwards and their rows during one edit of two requests."""
    calls: list[tuple[int, int]] = []
    hook = backend.model.language_model.register_forward_hook(
        lambda mod, args, out: calls.append((args[0].shape[0], args[0].shape[1])))
    steps = 4
    try:
        params = [edit_params(steps=steps, text_cfg=text_cfg, image_cfg=image_cfg, size=SIZE, seed=s) for s in (0, 1)]
        edit_images(backend, [_picture(SIZE), _picture(SIZE, 5)], ["sharpen it", "denoise it"], params)
    finally:
        hook.remove()
    denoise_calls = [rows for rows, length in calls if length == GRID[0] * GRID[1] + 2]
    assert len(denoise_calls) == steps - 1
    assert set(denoise_calls) == {2 * rows_per_request}
    assert max(rows for rows, _ in calls) == 2 * rows_per_request


def test_cfg_interval_drops_the_branches_outside_it(backend):
    settings = _settings(steps=6, text_cfg=4.0, image_cfg=1.0, cfg_interval=(0.5, 1.0))
    times, deltas = settings.schedule()
    assert times[0] == pytest.approx(1.0) and sum(deltas) == pytest.approx(1.0)
    guided = [settings.guided(t) for t in times]
    assert any(guided) and not all(guided)
    _, _, cache = _contexts(backend, settings)
    rows: list[int] = []
    hook = backend.model.language_model.register_forward_hook(lambda m, a, o: rows.append(a[0].shape[0]))
    try:
        denoise(backend.model, cache, torch.zeros(1, GRID[0] * GRID[1], 64), GRID, settings)
    finally:
        hook.remove()
    assert rows == [2 if g else 1 for g in guided]


def test_renorm_never_exceeds_the_conditional_norm():
    gen = torch.Generator().manual_seed(0)
    v, v_text, v_img = (torch.randn(2, 6, 8, generator=gen) for _ in range(3))
    for kind in ("global", "channel"):
        out = combine(v, v_text, v_img, _settings(text_cfg=4.0, image_cfg=2.0, cfg_renorm_type=kind))
        dims = (1, 2) if kind == "global" else (-1,)
        assert (out.norm(dim=dims) <= v.norm(dim=dims) * (1 + 1e-5)).all()
    assert torch.equal(combine(v, None, None, _settings()), v)


# ---------------------------------------------------------------- stage I through the protocol
def test_edit_is_decided_by_the_seed_not_the_batch(backend):
    img_a, img_b = _picture(SIZE), _picture(SIZE, 17)
    alone = edit_images(backend, [img_a], ["sharpen the details"], [edit_params(steps=4, size=SIZE, seed=3)])[0]
    again = edit_images(backend, [img_a], ["sharpen the details"], [edit_params(steps=4, size=SIZE, seed=3)])[0]
    batch = edit_images(backend, [img_b, img_a], ["extend the frame to the left", "sharpen the details"],
                         [edit_params(steps=4, size=SIZE, seed=8), edit_params(steps=4, size=SIZE, seed=3)])
    other = edit_images(backend, [img_a], ["sharpen the details"], [edit_params(steps=4, size=SIZE, seed=4)])[0]
    assert alone.size == SIZE and alone.mode == "RGB"
    assert np.array_equal(np.asarray(alone), np.asarray(again))
    assert np.abs(np.asarray(alone, np.int16) - np.asarray(batch[1], np.int16)).max() <= 1
    assert not np.array_equal(np.asarray(alone), np.asarray(other))


def test_mixed_sizes_are_grouped(backend):
    params = [edit_params(steps=3, size=SIZE, seed=0), edit_params(steps=3, size=(32, 32), seed=0)]
    out = edit_images(backend, [_picture(SIZE), _picture((40, 40))], ["a", "b"], params)
    assert [o.size for o in out] == [SIZE, (32, 32)]


def test_think_decodes_a_plan_into_the_context(backend):
    settings = _settings(steps=3, text_cfg=4.0, image_cfg=1.0)
    images, latents, plain = _contexts(backend, settings)
    thought, plans = backend.edit_contexts(images, ["sharpen the details"], latents, GRID, settings, think_tokens=6)
    assert isinstance(plans[0], str)
    assert thought.length > plain.length
    params = edit_params(steps=3, size=SIZE, seed=0, options={"think": True, "max_think_tokens": 6})
    [out] = backend.edit([images[0]], ["sharpen the details"], [params])
    assert out.image.size == SIZE and isinstance(out.plan, str) and out.plan
    [plain_out] = backend.edit([images[0]], ["sharpen the details"], [edit_params(steps=3, size=SIZE, seed=0)])
    assert plain_out.plan is None
    assert params.batch_key() != edit_params(steps=3, size=SIZE, seed=0).batch_key()


@pytest.mark.parametrize(("change", "field"), [
    ({"size": (60, 48)}, "edit_size"),
    ({"size": (512, 64)}, "edit_size"),
    ({"steps": 1}, "steps"),
    ({"negative_prompt": "blurry"}, "negative_prompt"),
    ({"options": {"cfg_renorm_type": "bogus"}}, "cfg_renorm_type"),
    ({"options": {"cfg_interval": (0.8, 0.2)}}, "cfg_interval"),
])
def test_validate_edit_names_the_field(backend, change, field):
    params = edit_params(**{"size": SIZE, **change})
    with pytest.raises(InputError) as err:
        backend.validate_edit(params)
    assert err.value.field == field


# ---------------------------------------------------------------- stage II
def test_answers_are_greedy_and_independent_of_batching(backend):
    img, thought = _picture((96, 64)), _picture((96, 64), 40)
    contents = [[img, "What is in the picture?"], [img, "Which object is on the left?", thought],
                [img, "Is there a circle?", VaeImage(thought)]]
    params = answer_params(max_new_tokens=6)
    batched = [a.text for a in backend.answer(contents, params)]
    single = [backend.answer([c], params)[0].text for c in contents]
    assert batched == single and all(isinstance(a, str) for a in batched)
    assert [a.text for a in backend.answer(contents, params)] == batched


def test_vae_thought_enters_as_latents_through_the_generation_expert(backend):
    """A ``VaeImage`` part is laid out as latent tokens (generation expert), not ViT tokens."""
    img = _picture((96, 64))
    vit = backend.answer_context([[img, "q"]])
    vae = backend.answer_context([[backend.thought_part(img, MODES["vae_concat"]), "q"]])
    seg = backend._segment(VaeImage(img))
    assert isinstance(seg, LatentSegment) and isinstance(backend._segment(img), VitSegment)
    n_latent = seg.grid[0] * seg.grid[1]
    text = len(backend.encode_text("q")) + 2
    assert vae.length == n_latent + 2 + text
    assert vit.length != vae.length
