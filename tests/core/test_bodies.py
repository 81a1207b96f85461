"""Bounded request-body parsing (g2u/bodies.py): hostile JSON is a 400 naming the field or ``body``, never
a RecursionError or the int-digits ValueError; a base64 image sent as a form text field is recognised."""

from __future__ import annotations

import base64
import json
import math

import pytest

from g2u.bodies import MAX_DEPTH, check_body, image_from_form_value, parse_json_body
from g2u.errors import InputError
from load_tests import hostile_files


def _field(exc_info) -> str:
    return exc_info.value.field


def test_a_normal_body_parses_to_its_fields():
    raw = json.dumps({"question": "q?", "steps": 30, "text_cfg": 4.0, "options": ["a", "b"],
                      "image": "aGVsbG8="}).encode()
    assert parse_json_body(raw) == {"question": "q?", "steps": 30, "text_cfg": 4.0, "options": ["a", "b"],
                                    "image": "aGVsbG8="}


def test_non_finite_constants_are_left_to_the_field_checks():
    body = parse_json_body(b'{"question": "q?", "text_cfg": NaN}')
    assert math.isnan(body["text_cfg"])


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 100_000])
def test_deep_nesting_is_a_400(depth):
    with pytest.raises(InputError) as err:
        parse_json_body(hostile_files.deep_json(depth))
    assert err.value.status == 400
    assert _field(err) in ("body", "options")  # past the parser's guard: body; below it: the deep field
    assert "nested deeper" in err.value.reason


def test_deep_body_at_top_level_names_body():
    with pytest.raises(InputError) as err:
        parse_json_body(b"[" * 100_000 + b"]" * 100_000)
    assert _field(err) == "body"


@pytest.mark.parametrize("field", ["steps", "seed", "max_new_tokens"])
def test_a_5000_digit_integer_names_its_field(field):
    with pytest.raises(InputError) as err:
        parse_json_body(hostile_files.huge_int_json(5000, field))
    assert _field(err) == field and "5000 characters" in err.value.reason


def test_a_long_number_inside_a_list_names_the_list_field():
    with pytest.raises(InputError) as err:
        parse_json_body(b'{"question": "q?", "options": ["a", ' + b"1" * 300 + b".5]}")
    assert _field(err) == "options"


def test_an_already_parsed_body_is_checked_too():
    # TorchServe's worker parses application/json itself (up to Python's 4300-digit limit).
    with pytest.raises(InputError) as err:
        check_body({"question": "q?", "seed": 10**4000})
    assert _field(err) == "seed"
    nested: list = []
    for _ in range(MAX_DEPTH + 2):
        nested = [nested]
    with pytest.raises(InputError) as err:
        check_body({"question": "q?", "options": nested})
    assert _field(err) == "options"
    assert check_body({"steps": 10**18, "options": ["a"]}) == {"steps": 10**18, "options": ["a"]}


@pytest.mark.parametrize("raw", [b"not json", b'["a list"]', b"\xff\xfe{}", b""])
def test_not_a_json_object_names_body(raw):
    with pytest.raises(InputError) as err:
        parse_json_body(raw)
    assert _field(err) == "body"


def test_form_value_raw_image_bytes_are_kept():
    png = hostile_files.small_png()
    assert image_from_form_value(png) == png


@pytest.mark.parametrize("encode", [
    pytest.param(lambda png: base64.b64encode(png), id="base64 bytes"),
    pytest.param(lambda png: base64.encodebytes(png), id="base64 wrapped at 76 columns"),
    pytest.param(lambda png: b"data:image/png;base64," + base64.b64encode(png), id="data URL bytes"),
    pytest.param(lambda png: base64.b64encode(png).decode(), id="base64 str"),
])
def test_form_value_base64_text_is_decoded(encode):
    png = hostile_files.small_png()
    assert image_from_form_value(encode(png)) == png


def test_form_value_broken_base64_names_the_field():
    with pytest.raises(InputError) as err:
        image_from_form_value(b"abc")
    assert _field(err) == "image" and "base64" in err.value.reason


def test_handler_split_fields_uses_the_bounded_parser():
    """The handler's adapter from TorchServe's rows: what TorchServe could not parse arrives as bytes."""
    handler = pytest.importorskip("handler.g2u_handler")
    with pytest.raises(InputError) as err:
        handler.split_fields({"body": hostile_files.deep_json()})
    assert _field(err) == "body"
    with pytest.raises(InputError) as err:
        handler.split_fields({"body": hostile_files.huge_int_json(5000, "steps")})
    assert _field(err) == "steps"
    png = hostile_files.small_png()
    fields, image = handler.split_fields({"image": base64.b64encode(png), "question": b"q?"})
    assert image == png and fields == {"question": "q?"}
