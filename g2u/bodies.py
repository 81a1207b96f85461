"""Bounded parsing of request bodies: JSON with a nesting-depth and a number-size limit, and the image
of a multipart form sent as a text field.

Why not plain ``json.loads``: a body nested 100 000 levels deep raises RecursionError, and an integer of
5 000 digits raises ``ValueError: Exceeds the limit (4300 digits)`` — both 500s, and the second names no
field. Here the parser's own recursion guard turns a deep body into a 400 naming ``body`` (a pre-scan of
the brackets costs ~10 ms per MB of base64 image for nothing: the C scanner stops at the guard in
microseconds), the parsed value is then walked iteratively against ``max_depth``, and integers and floats
go through ``parse_int``/``parse_float`` hooks that never convert an over-long literal: after parsing,
the field holding one is named in the error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from g2u.errors import InputError
from g2u.images import decode_base64

MAX_DEPTH = 16
"""Deepest nesting of objects and arrays a request body may have (the schema itself needs 2)."""

MAX_NUMBER_CHARS = 64
"""Longest number literal accepted (an int64 has 19 digits; a float in full precision about 25)."""

_MAX_INT_BITS = (10**MAX_NUMBER_CHARS).bit_length()
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=_\-\s]+")


class _Oversized:
    """Stands in for a number literal longer than MAX_NUMBER_CHARS until its field is known."""

    def __init__(self, literal: str):
        self.chars = len(literal)


def _number(kind: type) -> Any:
    def parse(literal: str) -> Any:
        return _Oversized(literal) if len(literal) > MAX_NUMBER_CHARS else kind(literal)
    return parse


def parse_json_body(raw: bytes | bytearray | str, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """A request's JSON body → its fields. Raises InputError naming ``body`` (not JSON, not an object,
    nested deeper than ``max_depth``) or the field whose number literal is too long."""
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("body", "must be UTF-8 encoded JSON") from exc
    try:
        body = json.loads(data, parse_int=_number(int), parse_float=_number(float))
    except RecursionError as exc:  # the C scanner's recursion guard: far deeper than max_depth
        raise InputError("body", f"is nested deeper than {max_depth} levels") from exc
    except ValueError as exc:  # JSONDecodeError
        raise InputError("body", "must be a JSON object or a multipart form with an 'image' file") from exc
    if not isinstance(body, dict):
        raise InputError("body", f"must be a JSON object, got {type(body).__name__}")
    return check_body(body, max_depth)


def check_body(body: dict[str, Any], max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Check a body that is already parsed (TorchServe's worker parses ``application/json`` itself):
    no value nested deeper than ``max_depth``, no number longer than MAX_NUMBER_CHARS. Returns it."""
    for name, value in body.items():
        problem = _problem(value, max_depth - 1, max_depth)
        if problem:
            raise InputError(str(name), problem)
    return body


def _problem(value: Any, depth_left: int, max_depth: int) -> str | None:
    """Why ``value`` is refused, or None. Iterative: the value may be deep."""
    stack = [(value, depth_left)]
    while stack:
        item, left = stack.pop()
        if isinstance(item, _Oversized):
            return f"is a number of {item.chars} characters; at most {MAX_NUMBER_CHARS} are accepted"
        if isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > _MAX_INT_BITS:
            return f"is a number of more than {MAX_NUMBER_CHARS} digits"
        if isinstance(item, (list, dict)):
            if left <= 0:
                return f"is nested deeper than the body's limit of {max_depth} levels"
            stack.extend((v, left - 1) for v in (item.values() if isinstance(item, dict) else item))
    return None


def image_from_form_value(value: bytes | bytearray | str, field: str = "image") -> bytes:
    """The image of a multipart form field: TorchServe hands every form field over as bytes, so a base64
    text field (or a data URL) looks like a file upload. Text made only of base64 characters is decoded;
    anything else (a real file: PNG, JPEG, ... start with binary magic bytes) is returned as is."""
    if isinstance(value, str):
        return decode_base64(value.strip(), field)
    data = bytes(value)
    head = data[:5].lower()
    if head == b"data:" or (data and _BASE64_TEXT.fullmatch(data)):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InputError(field, "is not valid base64") from exc
        return decode_base64("".join(text.split()), field)
    return data
