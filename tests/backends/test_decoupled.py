"""The decoupled backend on its two demo checkpoints: InstructPix2Pix + Qwen2.5-VL, Kontext + LLaVA.

Both checkpoints are built in a temp folder with the demo builders and loaded back through
``load_decoupled_dir`` → ``DecoupledBackend.from_pretrained``: the code path of a real checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from g2u.backends.base import Backend
from g2u.backends.decoupled import DecoupledBackend, load_decoupled_dir
from g2u.demo.decoupled import DEMO_EDIT_AREA, build_decoupled_demo, build_decoupled_kontext_demo
from g2u.errors import CheckpointError, InputError
from g2u.schema import answer_params, edit_params


def edit_images(backend, images, prompts, params):
    """Stage I through the backend protocol, thoughts only (``edit`` returns EditOutput)."""
    return [out.image for out in backend.edit(images, prompts, params)]

KINDS = ("ip2p", "kontext")
EDITOR_CLASS = {"ip2p": "StableDiffusionInstructPix2PixPipeline", "kontext": "FluxKontextPipeline"}
ANSWER_CLASS = {"ip2p": "Qwen2_5_VLForConditionalGeneration", "kontext": "LlavaForConditionalGeneration"}
MULTIPLE = {"ip2p": 8, "kontext": 16}


@pytest.fixture(scope="module")
def demo_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoupled")
    return {"ip2p": build_decoupled_demo(root / "ip2p", seed=0),
            "kontext": build_decoupled_kontext_demo(root / "kontext", seed=0)}


@pytest.fixture(scope="module")
def backends(demo_dirs) -> dict[str, DecoupledBackend]:
    return {kind: load_decoupled_dir(folder) for kind, folder in demo_dirs.items()}


def _picture(size: tuple[int, int], phase: int = 0) -> Image.Image:
    w, h = size
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    arr = np.stack([(x * 5 + phase) % 256, (y * 7) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


@pytest.mark.parametrize("kind", KINDS)
def test_demo_loads_with_real_classes_and_demo_flag(backends, demo_dirs, kind):
    backend = backends[kind]
    assert isinstance(backend, Backend)
    assert type(backend.editor).__name__ == EDITOR_CLASS[kind]
    assert type(backend.answer_model).__name__ == ANSWER_CLASS[kind]
    assert backend.info.backend == "decoupled" and backend.info.demo is True
    assert backend.info.checkpoint == str(demo_dirs[kind])
    assert backend.size_multiple == MULTIPLE[kind]
    assert backend.default_edit_area == DEMO_EDIT_AREA
    spec = json.loads((demo_dirs[kind] / "g2u_backend.json").read_text())
    assert spec == {"backend": "decoupled", "editor": "editor", "answerer": "answerer"}
    assert (demo_dirs[kind] / "editor" / "model_index.json").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_edit_returns_exactly_the_requested_sizes(backends, kind):
    m = MULTIPLE[kind]
    sizes = [(6 * m, 4 * m), (3 * m, 5 * m), (6 * m, 4 * m)]  # two share a batch group, one does not
    images = [_picture((100, 60)), _picture((37, 90), 40), Image.new("L", (64, 64), 90)]
    params = [edit_params(steps=2, size=s, seed=i) for i, s in enumerate(sizes)]
    out = edit_images(backends[kind], images, ["brighten", "zoom in", "denoise"], params)
    assert [o.size for o in out] == sizes
    assert all(o.mode == "RGB" for o in out)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_thought_across_loads(backends, demo_dirs, kind):
    size = (4 * MULTIPLE[kind], 4 * MULTIPLE[kind])
    img = _picture((70, 50))

    def run(backend: DecoupledBackend, seed: int) -> np.ndarray:
        params = [edit_params(steps=3, size=size, seed=seed)]
        return _arr(edit_images(backend, [img], ["sharpen the details"], params)[0])

    first = run(backends[kind], 7)
    again = run(load_decoupled_dir(demo_dirs[kind]), 7)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, run(backends[kind], 8)), "the seed must change the noise"


@pytest.mark.parametrize("kind", KINDS)
def test_seed_is_per_item_in_a_batch(backends, kind):
    size = (4 * MULTIPLE[kind], 4 * MULTIPLE[kind])
    img = _picture((64, 64))
    pair = edit_images(backends[kind], [img, img], ["edit", "edit"],
                               [edit_params(steps=2, size=size, seed=1), edit_params(steps=2, size=size, seed=2)])
    alone = edit_images(backends[kind], [img], ["edit"], [edit_params(steps=2, size=size, seed=2)])[0]
    assert not np.array_equal(_arr(pair[0]), _arr(pair[1]))
    assert np.abs(_arr(pair[1]) - _arr(alone)).max() <= 2  # same noise; batching may move float rounding


@pytest.mark.parametrize("kind", KINDS)
def test_answer_with_one_and_two_images(backends, kind):
    img, thought = _picture((64, 48)), _picture((48, 64), 90)
    contents = [[img, "What colour dominates?"], [img, "What colour dominates?", thought]]
    answers = [a.text for a in backends[kind].answer(contents, answer_params(max_new_tokens=4))]
    assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers)
    assert [a.text for a in backends[kind].answer(contents, answer_params(max_new_tokens=4))] == answers  # greedy


def test_kontext_rejects_image_cfg(backends):
    with pytest.raises(InputError) as err:
        edit_images(backends["kontext"], [_picture((64, 64))], ["x"], [edit_params(image_cfg=1.5, size=(64, 64))])
    assert err.value.field == "image_cfg"


@pytest.mark.parametrize(("kind", "params", "field"), [
    ("ip2p", edit_params(text_cfg=1.0, image_cfg=1.5, size=(64, 64)), "image_cfg"),
    ("ip2p", edit_params(image_cfg=0.5, size=(64, 64)), "image_cfg"),
    ("ip2p", edit_params(size=(60, 64)), "edit_size"),
    ("kontext", edit_params(size=(72, 64)), "edit_size"),
    ("kontext", edit_params(steps=0, size=(64, 64)), "steps"),
])
def test_impossible_params_are_rejected_by_field(backends, kind, params, field):
    with pytest.raises(InputError) as err:
        backends[kind].validate_edit(params)
    assert err.value.field == field


def test_from_pretrained_with_explicit_parts_finds_demo_marker(demo_dirs):
    folder = demo_dirs["kontext"]
    backend = DecoupledBackend.from_pretrained(str(folder / "editor"), str(folder / "answerer"))
    assert backend.info.demo is True and backend.default_edit_area == DEMO_EDIT_AREA


def test_load_decoupled_dir_rejects_bad_layouts(tmp_path):
    with pytest.raises(CheckpointError):
        load_decoupled_dir(tmp_path)
    (tmp_path / "g2u_backend.json").write_text(json.dumps({"backend": "bagel"}))
    with pytest.raises(CheckpointError):
        load_decoupled_dir(tmp_path)
    (tmp_path / "g2u_backend.json").write_text(json.dumps({"backend": "decoupled", "editor": "missing",
                                                           "answerer": "answerer"}))
    with pytest.raises(CheckpointError):
        load_decoupled_dir(tmp_path)


def test_builder_is_deterministic(tmp_path, demo_dirs):
    from safetensors.torch import load_file

    again = build_decoupled_kontext_demo(tmp_path / "again", seed=0)
    for path in sorted(demo_dirs["kontext"].rglob("*.safetensors")):
        a, b = load_file(path), load_file(again / path.relative_to(demo_dirs["kontext"]))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), path
