"""Request validation: each bad field fails with its name and the reason; good fields are typed."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from g2u.errors import InputError
from g2u.schema import parse_request


@pytest.fixture
def png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (1, 2, 3)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _fields(png_b64: str, **extra) -> dict:
    return {"image": png_b64, "question": "What colour is the square?", **extra}


def test_minimal_request_gets_paper_defaults(png_b64):
    req = parse_request(_fields(png_b64))
    assert req.mode == "g2u" and req.writer == "library"
    assert (req.edit.steps, req.edit.text_cfg, req.edit.image_cfg) == (30, 4.0, 1.0)
    assert req.image.size == (32, 24) and req.order == ("I", "q", "T")


def test_multipart_style_strings_are_parsed(png_b64):
    req = parse_request(_fields(png_b64, steps="12", text_cfg="3.5", seed="7", edit_size="64x48",
                                return_thought="true", options='["red", "blue"]', order="I,T,q"))
    assert (req.edit.steps, req.edit.text_cfg, req.edit.seed, req.edit.size) == (12, 3.5, 7, (64, 48))
    assert req.return_thought is True and req.options == ["red", "blue"] and req.order == ("I", "T", "q")


def test_data_url_accepted(png_b64):
    assert parse_request(_fields("data:image/png;base64," + png_b64)).image.size == (32, 24)


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({"question": "x" * 5000}, "question"),
        ({"question": "bell\x07 character"}, "question"),
        ({"question": 42}, "question"),
        ({"mode": "dream"}, "mode"),
        ({"steps": 0}, "steps"),
        ({"steps": 10_000}, "steps"),
        ({"steps": "many"}, "steps"),
        ({"steps": True}, "steps"),
        ({"steps": [3]}, "steps"),
        ({"text_cfg": float("nan")}, "text_cfg"),
        ({"text_cfg": 1e9}, "text_cfg"),
        ({"image_cfg": -1}, "image_cfg"),
        ({"seed": -5}, "seed"),
        ({"edit_size": "big"}, "edit_size"),
        ({"edit_size": [0, 64]}, "edit_size"),
        ({"options": ["only one"]}, "options"),
        ({"options": "not json"}, "options"),
        ({"options": [1, 2]}, "options[0]"),
        ({"family": "dreamy"}, "family"),
        ({"writer": "oracle"}, "writer"),
        ({"return_thought": "maybe"}, "return_thought"),
        ({"order": "I,q"}, "order"),
        ({"image": "@@@not base64@@@"}, "image"),
        ({"image": base64.b64encode(b"not an image").decode()}, "image"),
        ({"image": 12}, "image"),
        ({"surprise": 1}, "surprise"),
        ({"writer": "openai", "prompt_name": "deblur"}, "writer"),
    ],
)
def test_bad_fields_are_named(png_b64, extra, field):
    with pytest.raises(InputError) as err:
        parse_request(_fields(png_b64, **extra))
    assert err.value.field == field
    assert err.value.reason


def test_missing_image_and_question(png_b64):
    with pytest.raises(InputError, match="image"):
        parse_request({"question": "q"})
    with pytest.raises(InputError, match="question"):
        parse_request({"image": png_b64})


def test_unicode_question_is_kept(png_b64):
    q = "Quelle est la couleur du carré ? 这是什么颜色？ 🟥"
    assert parse_request(_fields(png_b64, question=q)).question == q
