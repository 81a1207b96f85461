"""Our BAGEL backend against golden data of the official ByteDance-Seed/Bagel code.

The goldens in ``tests/golden/bagel`` were written by ``scripts/bagel_golden.py``: the official code at
the commit in ``meta.json``, run on the seed-0 tiny demo checkpoint in float32 (the script aliases the
reference's hard-coded bf16 casts to float32; nothing else of its code changes). We run in float32 too,
so what is left between the two is float32 rounding of different operation orders: the noise floor.

Noise floor, measured (``python scripts/bagel_noise_floor.py``, ours float32 against the reference float32):
relative L2 of the guided velocity ≤ 2.0e-6 at every step of every case, understanding logits 2.5e-7,
posterior mean 1.6e-6; decoded uint8 images identical but for 0–1 value of 9216 one truncation step
apart. Against the released bf16 reference (``--dtype bfloat16``) the same numbers are velocities
0.5–3.9 %, logits 0.56 %, ~half of all image values off by up to 5: a 0.9 % change (timestep shift
3.0 → 2.5) hides below a bf16 floor, hence float32 goldens. Tolerances: ``REL_L2`` (1e-4, ~50× the
float32 floor) for continuous values, ``IMAGE_OFF`` for images; token ids, laid-out token lists and
template strings compare exactly. ``scripts/mutation_check.py`` shows which bugs this catches.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from g2u.backends.bagel import BagelBackend
from g2u.backends.bagel.layout import patchify
from g2u.backends.bagel.model import TextSegment
from g2u.backends.bagel.params import (
    DEFAULT_CFG_INTERVAL,
    DEFAULT_MAX_THINK_TOKENS,
    DEFAULT_RENORM_MIN,
    DEFAULT_RENORM_TYPE,
    DEFAULT_TIMESTEP_SHIFT,
    GEN_THINK_SYSTEM_PROMPT,
    VLM_THINK_SYSTEM_PROMPT,
    BagelOptions,
    sampler_settings,
)
from g2u.backends.bagel.sampler import SamplerSettings, guided_velocity
from g2u.backends.bagel.vae import encode_latents
from g2u.backends.bagel.vision import to_unit_tensor
from g2u.demo.bagel import build_bagel_demo
from g2u.schema import answer_params, edit_params

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "bagel"
REL_L2 = 1e-4
"""Relative L2 bound of every continuous golden (velocities, logits, latents): ~50× the measured float32
noise floor (≤ 2.0e-6)."""
IMAGE_OFF = 1e-3
"""Decoded images: values may differ by 1 where float32 rounding puts a pixel on the other side of a
truncation step (measured: 0 or 1 value of 9216 per image); at most 0.1 % of them. Rounding instead of
truncating moves about half of all values."""
PAPER_OVERRIDES = {"cfg_img_scale": 1.0, "num_timesteps": 30}
"""Where our defaults are the paper's (BAGEL-7B-MoT: 30 steps, image CFG 1.0) instead of the reference
notebook's editing cells (50 steps, image CFG 2.0); every other sampler default is the notebook's."""


def _script():
    """The golden script itself (its inputs and prompts are the ones the goldens were made from)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "bagel_golden.py"
    spec = importlib.util.spec_from_file_location("bagel_golden", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_GOLDEN_SCRIPT = _script()
EDIT_PROMPT, QUESTION = _GOLDEN_SCRIPT.EDIT_PROMPT, _GOLDEN_SCRIPT.QUESTION
golden_picture = _GOLDEN_SCRIPT.golden_picture
CASES = tuple(_GOLDEN_SCRIPT.EDIT_CASES)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN / "golden.safetensors"))


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((GOLDEN / "meta.json").read_text())


@pytest.fixture(scope="module")
def backend(tmp_path_factory, meta) -> BagelBackend:
    folder = build_bagel_demo(tmp_path_factory.mktemp("golden") / "bagel", seed=meta["seed"])
    return BagelBackend.from_pretrained(str(folder), device="cpu", dtype="float32")


def rel_l2(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.float(), ref.float()
    assert ours.shape == ref.shape, f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    return ((ours - ref).norm() / ref.norm().clamp_min(1e-12)).item()


def _close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    err = rel_l2(ours, ref)
    assert err <= REL_L2, f"{what}: relative L2 error {err:.3g} > {REL_L2}"


@contextmanager
def laid_text(backend: BagelBackend):
    """Every text segment our model lays out (``[<|im_start|>, ids…, <|im_end|>]``, row 0), split into
    the conditional context (the first cache extended) and the others (the image-free CFG context)."""
    model, sp = backend.model, backend.model.special
    seen: dict[str, list[list[int]]] = {"cond": [], "image_free": []}
    first: list = []
    extend = model.extend

    def spy(cache, rows):
        if not first:
            first.append(cache)
        kind = "cond" if cache is first[0] else "image_free"
        seen[kind] += [[sp.bos, *s.ids, sp.eos] for s in rows[0] if isinstance(s, TextSegment)]
        return extend(cache, rows)

    model.extend = spy
    try:
        yield seen
    finally:
        del model.extend


@contextmanager
def decoded_ids(backend: BagelBackend):
    """The ids of every ``decode`` call (row 0), and the lm-head logits computed meanwhile."""
    model = backend.model
    calls: list[list[int]] = []
    logits: list[torch.Tensor] = []
    decode = model.decode
    hook = model.language_model.lm_head.register_forward_hook(lambda m, i, o: logits.append(o.detach().float()))
    model.decode = lambda *a, **k: (lambda out: calls.append(out[0]) or out)(decode(*a, **k))
    try:
        yield calls, logits
    finally:
        del model.decode
        hook.remove()


def _settings(case: dict) -> SamplerSettings:
    return SamplerSettings(steps=case["num_timesteps"], text_cfg=case["cfg_text_scale"],
                           image_cfg=case["cfg_img_scale"], timestep_shift=case["timestep_shift"],
                           cfg_interval=tuple(case["cfg_interval"]), cfg_renorm_type=case["cfg_renorm_type"],
                           cfg_renorm_min=case["cfg_renorm_min"])


def _edit_params(backend: BagelBackend, case: dict, **options):
    size = backend.plan_edit_size(golden_picture().size).size
    return edit_params(steps=case["num_timesteps"], text_cfg=case["cfg_text_scale"], image_cfg=case["cfg_img_scale"],
                       seed=case["seed"], size=size,
                       options={"timestep_shift": case["timestep_shift"], "cfg_interval": case["cfg_interval"],
                                "cfg_renorm_type": case["cfg_renorm_type"], "cfg_renorm_min": case["cfg_renorm_min"],
                                **options})


def _image_equal(ours, ref: torch.Tensor, what: str) -> None:
    import numpy as np

    arr = torch.from_numpy(np.asarray(ours, dtype=np.uint8).copy())
    assert arr.shape == ref.shape, f"{what}: image {tuple(arr.shape)} != reference {tuple(ref.shape)}"
    diff = (arr.int() - ref.int()).abs()
    off = int((diff > 0).sum())
    assert int(diff.max()) <= 1 and off <= IMAGE_OFF * diff.numel(), \
        f"{what}: {off} of {diff.numel()} values differ, by up to {int(diff.max())}"


# ----------------------------------------------------------------------------------- the reference itself
def test_goldens_are_the_pinned_reference_in_float32(meta):
    assert meta["bagel_commit"] == _GOLDEN_SCRIPT.PINNED_COMMIT
    assert meta["reference_dtype"] == "float32"


def test_think_system_prompts_are_the_reference_strings(meta):
    assert GEN_THINK_SYSTEM_PROMPT == meta["gen_think_system_prompt"]
    assert VLM_THINK_SYSTEM_PROMPT == meta["vlm_think_system_prompt"]


def test_sampler_defaults_are_the_references(meta):
    """Every default our requests, BAGEL's options and the sampler take is the reference notebook's
    editing recipe (both editing cells agree), except the paper's stated overrides."""
    from g2u.schema import field_default

    cells = meta["defaults"]["notebook_edit"]
    assert len(cells) == 2
    recipe = {k: v for k, v in cells[0].items()}
    assert all(c[k] == v for c in cells for k, v in recipe.items())
    expected = {**recipe, **PAPER_OVERRIDES}
    opts, sampler = BagelOptions(), sampler_settings(edit_params())  # a default request's sampler
    for source, ours in {
        "params.py": {"timestep_shift": DEFAULT_TIMESTEP_SHIFT, "cfg_interval": list(DEFAULT_CFG_INTERVAL),
                      "cfg_renorm_type": DEFAULT_RENORM_TYPE, "cfg_renorm_min": DEFAULT_RENORM_MIN},
        "request schema": {"cfg_text_scale": field_default("text_cfg"), "cfg_img_scale": field_default("image_cfg"),
                           "num_timesteps": field_default("steps"), "timestep_shift": opts.timestep_shift,
                           "cfg_interval": list(opts.cfg_interval), "cfg_renorm_type": opts.cfg_renorm_type,
                           "cfg_renorm_min": opts.cfg_renorm_min},
        "edit_params()": {"cfg_text_scale": edit_params().text_cfg, "cfg_img_scale": edit_params().image_cfg,
                          "num_timesteps": edit_params().steps},
        "sampler_settings": {"cfg_text_scale": sampler.text_cfg, "cfg_img_scale": sampler.image_cfg,
                            "num_timesteps": sampler.steps, "timestep_shift": sampler.timestep_shift,
                            "cfg_interval": list(sampler.cfg_interval), "cfg_renorm_type": sampler.cfg_renorm_type,
                            "cfg_renorm_min": sampler.cfg_renorm_min},
    }.items():
        assert ours == {k: expected[k] for k in ours}, source
    # the think budget: the notebook's think-edit cell and the inferencer's own default
    assert DEFAULT_MAX_THINK_TOKENS == cells[1]["max_think_token_n"] == \
        meta["defaults"]["interleave_inference"]["max_think_token_n"]
    assert opts.max_think_tokens == DEFAULT_MAX_THINK_TOKENS


# ----------------------------------------------------------------------------------- understanding
def test_understanding_layout_logits_and_tokens(backend, golden, meta):
    """The public answer call lays out the reference's tokens, computes its logits and decodes its ids:
    our ``max_new_tokens`` = N − 1 against the inferencer's ``max_think_token_n`` = N (its budget counts
    the start token)."""
    ref = meta["understanding"]
    with laid_text(backend) as laid, decoded_ids(backend) as (calls, logits):
        (answer,) = backend.answer([[golden_picture(), QUESTION]], answer_params(max_new_tokens=ref["budget"] - 1))
    assert laid["cond"] == ref["segments"]
    assert calls == [ref["generated"]]
    assert answer.text == backend.decode_text(ref["generated"])
    _close(torch.cat([x.reshape(-1, x.shape[-1]) for x in logits]), golden["understanding_logits"][:-1], "logits")


def test_understanding_logit_of_the_budget_end(backend, golden, meta):
    """The reference computes one more lm-head row than it keeps (the token after the budget): ours, decoding
    one token more, computes the same row."""
    ref = meta["understanding"]
    with decoded_ids(backend) as (calls, logits):
        backend.answer([[golden_picture(), QUESTION]], answer_params(max_new_tokens=ref["budget"]))
    assert calls[0][:-1] == ref["generated"]
    _close(torch.cat([x.reshape(-1, x.shape[-1]) for x in logits]), golden["understanding_logits"], "logits")


def test_understanding_with_think_template_and_tokens(backend, golden, meta):
    """``think_answer``: the reasoning system prompt laid out as the inferencer's (exact ids), then the same
    decode under the same budget."""
    ref = meta["understanding_think"]
    with laid_text(backend) as laid, decoded_ids(backend) as (calls, logits):
        backend.think_answer([[golden_picture(), QUESTION]], answer_params(max_new_tokens=2),
                             max_think_tokens=ref["budget"])
    assert laid["cond"] == ref["segments"]  # (a retry pass, if any, lays out its own new cache)
    assert calls[0] == ref["generated"]
    n = len(ref["generated"])
    first = torch.cat([x.reshape(-1, x.shape[-1]) for x in logits])[:n]
    _close(first, golden["understanding_think_logits"][:n], "think logits")


# ----------------------------------------------------------------------------------- VAE
def test_vae_pixels_and_posterior_mean(backend, golden, meta):
    image = backend.plan_edit_size(golden_picture().size).placement.apply(golden_picture())
    assert list(image.size) == meta["resized"]
    pixels = to_unit_tensor(image, image.size)[None]
    assert (pixels - golden["vae_pixels"]).abs().max().item() <= 1e-6
    _close(encode_latents(backend.vae, golden["vae_pixels"], None), golden["vae_mean"], "posterior mean")


# ----------------------------------------------------------------------------------- edits
@pytest.mark.parametrize("name", CASES)
def test_edit_velocity_at_every_step(backend, golden, meta, name):
    """At each grid time t (inside and outside the CFG interval) our guided velocity of the reference's own
    x_t (rebuilt from its noise and velocities) is the reference's; the contexts lay out its tokens."""
    case = meta["edits"][name]
    settings = _settings(case)
    image = backend.plan_edit_size(golden_picture().size).placement.apply(golden_picture())
    w, h = image.size
    grid = (h // backend.size_multiple, w // backend.size_multiple)
    context = [patchify(golden[f"{name}_posterior"][0], backend.model.dims.latent_patch)]
    with laid_text(backend) as laid:
        cache, _ = backend.edit_contexts([image], [EDIT_PROMPT], context, grid, settings)
    assert laid["cond"] == case["segments"]
    if settings.branches[1]:  # the image-free branch exists only where the reference uses it
        assert laid["image_free"] == case["image_free_segments"]
    else:
        assert laid["image_free"] == []
    times, deltas = settings.schedule()
    ref_v = golden[f"{name}_velocities"]
    assert len(times) == ref_v.shape[0]
    x = golden[f"{name}_noise"][None].clone()
    cache.reserve(x.shape[1] + 2)
    for i, (t, dt) in enumerate(zip(times, deltas)):
        v = guided_velocity(backend.model, cache, x, t, grid, settings)
        _close(v[0], ref_v[i], f"{name}: velocity at t={t:.3f} (step {i}, guided={settings.guided(t)})")
        x = x - ref_v[i][None] * dt


@pytest.mark.parametrize("name", CASES)
def test_edit_end_to_end_image(backend, golden, meta, name):
    """The public edit with the case's seed: posterior sample, initial noise, every step, the decoder and the
    uint8 conversion (truncating, as the reference's) give the reference's image, value for value."""
    case = meta["edits"][name]
    params = _edit_params(backend, case)
    pixels = to_unit_tensor(backend.plan_edit_size(golden_picture().size).placement.apply(golden_picture()),
                            tuple(params.size))[None]
    posterior = encode_latents(backend.vae, pixels, [torch.Generator().manual_seed(case["seed"])])
    _close(posterior, golden[f"{name}_posterior"], f"{name}: posterior sample")
    (out,) = backend.edit([golden_picture()], [EDIT_PROMPT], [params])
    _image_equal(out.image, golden[f"{name}_image"], name)


def test_edit_with_think_plan_layout_and_image(backend, golden, meta):
    """``think``: the planning system prompt, the prompt, the plan decoded under the reference's budget
    (N − 1 tokens), re-read as the reference re-reads it, and the image it leads to."""
    ref = meta["think_edit"]
    params = _edit_params(backend, ref, think=True, max_think_tokens=ref["budget"])
    with laid_text(backend) as laid, decoded_ids(backend) as (calls, _):
        (out,) = backend.edit([golden_picture()], [EDIT_PROMPT], [params])
    assert calls == [ref["generated"]]
    assert out.plan == ref["plan"]
    assert laid["cond"] == ref["segments"]
    _image_equal(out.image, golden["think_edit_image"], "think edit")
