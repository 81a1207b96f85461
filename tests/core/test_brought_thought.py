"""Thoughts brought by the caller: REST base64 / file part, CLI --thought, dataset column."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from g2u.backends import load_backend
from g2u.batch import RawItem, outcome_body, run_batch
from g2u.measures import edit_measures
from g2u.pipeline import G2UPipeline

FAST = {"steps": 2, "max_new_tokens": 3}


class Counting:
    def __init__(self, inner):
        self.inner, self.edit_calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def edit(self, images, prompts, params):
        self.edit_calls += 1
        return self.inner.edit(images, prompts, params)


@pytest.fixture(scope="module")
def backend(demo_root):
    return load_backend(str(demo_root / "qwen_image_edit"))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _thought() -> Image.Image:
    return Image.new("RGB", (40, 24), (10, 200, 30))


def test_base64_thought_is_used_instead_of_stage_one(backend, rgb_image):
    pipe = G2UPipeline(Counting(backend))
    fields = {"question": "What is shown?", **FAST, "thought": base64.b64encode(_png(_thought())).decode()}
    [out] = run_batch(pipe, [RawItem(fields, rgb_image)])
    body = outcome_body(out)
    assert out.ok, body
    assert pipe.backend.edit_calls == 0
    assert body["edit"]["provided"] is True and body["edit"]["writer"] == "provided"
    assert body["measures"] == edit_measures(rgb_image, _thought())
    assert out.result.thought.image.tobytes() == _thought().tobytes()


def test_file_part_thought_over_rest_stays_bytes(backend, rgb_image):
    from handler.g2u_handler import split_fields

    fields, image = split_fields({"image": _png(rgb_image), "question": b"What is shown?", "thought": _png(_thought()),
                                  "steps": b"2", "max_new_tokens": b"3"})
    assert isinstance(fields["thought"], bytes)
    [out] = run_batch(G2UPipeline(backend), [RawItem(fields, image)])
    assert out.ok and out.result.thought.edit.provided


@pytest.mark.parametrize("fields, field", [
    ({"thought": "%%% not base64"}, "thought"),
    ({"thought": base64.b64encode(b"not an image").decode()}, "thought"),
    ({"thought": "THOUGHT", "mode": "baseline"}, "thought"),
    ({"thought": "THOUGHT", "candidates": 2}, "thought"),
])
def test_bad_thoughts_are_4xx_naming_the_field(backend, rgb_image, fields, field):
    fields = {k: base64.b64encode(_png(_thought())).decode() if v == "THOUGHT" else v for k, v in fields.items()}
    [out] = run_batch(G2UPipeline(backend), [RawItem({"question": "What?", **FAST, **fields}, rgb_image)])
    assert out.status == 400 and out.error["field"] == field, out.error


def test_oversized_thought_is_refused_by_the_bounded_loader(backend, rgb_image):
    fields = {"question": "What?", **FAST, "thought": _png(Image.new("RGB", (200, 200)))}
    [out] = run_batch(G2UPipeline(backend), [RawItem(fields, rgb_image)], max_pixels=100 * 100)
    assert out.status == 413 and out.error["field"] == "thought"


def test_cli_thought_flag(demo_root, rgb_image, tmp_path, capsys):
    from g2u.cli import main

    rgb_image.save(tmp_path / "in.png")
    _thought().save(tmp_path / "t.png")
    code = main(["predict", "--image", str(tmp_path / "in.png"), "--thought", str(tmp_path / "t.png"),
                 "--question", "What?", "--steps", "2", "--max-new-tokens", "3",
                 "--checkpoint", str(demo_root / "qwen_image_edit"), "--out", str(tmp_path / "out")])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["edit"]["provided"] is True


def test_dataset_thought_path_column(tmp_path, rgb_image):
    from g2u.eval.datasets import load_jsonl

    rgb_image.save(tmp_path / "a.png")
    (tmp_path / "thoughts").mkdir()
    _thought().save(tmp_path / "thoughts" / "a.png")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"id": "1", "image": "a.png", "question": "q?", "answer": "x", "thought_path": "thoughts/a.png"})
        + "\n" + json.dumps({"id": "2", "image": "a.png", "question": "q?", "answer": "x"}) + "\n")
    one, two = load_jsonl(tmp_path / "m.jsonl")
    assert one.thought_path == str((tmp_path / "thoughts" / "a.png").resolve())
    assert one.thought_bytes() == (tmp_path / "thoughts" / "a.png").read_bytes()
    assert two.thought_path is None and "thought_path" not in one.extra


def test_a_thought_is_never_a_setting():
    from g2u.errors import InputError
    from g2u.schema import validate_settings

    with pytest.raises(InputError) as err:
        validate_settings({"thought": "aGk="})
    assert err.value.field == "thought"
