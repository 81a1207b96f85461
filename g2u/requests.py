"""One G→U request, and the validation that turns user fields (CLI, REST, evaluation) into it.

Every field is checked here, once, with an error that names it: the CLI, the TorchServe handler and
the evaluation harness all call ``parse_request`` and never validate on their own.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from g2u.errors import InputError
from g2u.images import DEFAULT_MAX_PIXELS, decode_base64, load_image
from g2u.types import FAMILIES, MODES, AnswerParams, EditParams

MAX_QUESTION_CHARS = 4000
MAX_OPTIONS = 26
MAX_OPTION_CHARS = 1000
WRITERS = ("library", "openai", "self")
DEFAULT_ORDER = ("I", "q", "T")
RANGES = {
    "steps": (1, 200),
    "text_cfg": (1.0, 30.0),
    "image_cfg": (1.0, 30.0),
    "seed": (0, 2**32 - 1),
    "max_new_tokens": (1, 2048),
}
# Control characters other than tab/newline/carriage return have no place in a question.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class G2URequest:
    image: Image.Image
    question: str
    options: list[str] | None = None
    mode: str = "g2u"
    prompt: str | None = None
    prompt_name: str | None = None
    family: str | None = None
    writer: str = "library"
    edit: EditParams = field(default_factory=EditParams)
    answer: AnswerParams = field(default_factory=AnswerParams)
    order: tuple[str, ...] = DEFAULT_ORDER
    return_thought: bool = False
    id: str | None = None
    gold_answer: str | None = None
    """Known answer (evaluation only): the leak guard also rejects edit prompts containing it."""


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise InputError(name, f"must be an integer, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError as exc:
            raise InputError(name, f"must be an integer, got {value[:40]!r}") from exc
    if not isinstance(value, int):
        raise InputError(name, f"must be an integer, got {type(value).__name__}")
    lo, hi = RANGES[name]
    if not lo <= value <= hi:
        raise InputError(name, f"must be in [{lo}, {hi}], got {value}")
    return value


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise InputError(name, f"must be a number, got {type(value).__name__}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError as exc:
            raise InputError(name, f"must be a number, got {value[:40]!r}") from exc
    if not isinstance(value, (int, float)):
        raise InputError(name, f"must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(name, "must be a finite number")
    lo, hi = RANGES[name]
    if not lo <= value <= hi:
        raise InputError(name, f"must be in [{lo}, {hi}], got {value}")
    return value


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InputError(name, f"must be a boolean, got {str(value)[:40]!r}")


def _text(name: str, value: Any, limit: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InputError(name, f"must be a string, got {type(value).__name__}")
    if _CONTROL.search(value):
        raise InputError(name, "contains control characters")
    if not allow_empty and not value.strip():
        raise InputError(name, "is empty")
    if len(value) > limit:
        raise InputError(name, f"is longer than {limit} characters ({len(value)})")
    return value.strip()


def _options(value: Any) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):  # multipart forms carry lists as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError("options", "must be a JSON list of strings") from exc
    if not isinstance(value, list):
        raise InputError("options", f"must be a list of strings, got {type(value).__name__}")
    if not 2 <= len(value) <= MAX_OPTIONS:
        raise InputError("options", f"must have 2..{MAX_OPTIONS} entries, got {len(value)}")
    return [_text(f"options[{i}]", v, MAX_OPTION_CHARS) for i, v in enumerate(value)]


def _size(value: Any) -> tuple[int, int] | None:
    """``edit_size``: an int (square), "WxH", or [W, H]."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parts = re.split(r"[x×, ]+", value.strip().lower())
        try:
            nums = [int(p) for p in parts if p]
        except ValueError as exc:
            raise InputError("edit_size", f"must be 'WIDTHxHEIGHT' or an integer, got {value[:40]!r}") from exc
    elif isinstance(value, bool):
        raise InputError("edit_size", "must be 'WIDTHxHEIGHT', an integer or [width, height]")
    elif isinstance(value, int):
        nums = [value]
    elif isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        nums = value
    else:
        raise InputError("edit_size", "must be 'WIDTHxHEIGHT', an integer or [width, height]")
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) <= 0:
        raise InputError("edit_size", f"must be two positive integers, got {value!r}")
    return nums[0], nums[1]


def _order(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    if not isinstance(value, list) or sorted(value) != sorted(DEFAULT_ORDER):
        raise InputError("order", "must be a permutation of I, q, T (image, question, thought)")
    return tuple(value)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InputError(name, f"must be one of {', '.join(allowed)}; got {str(value)[:40]!r}")
    return value


KNOWN_FIELDS = {
    "image", "question", "options", "mode", "prompt", "prompt_name", "family", "writer", "steps",
    "text_cfg", "image_cfg", "seed", "edit_size", "return_thought", "max_new_tokens", "order", "id", "think",
}


def parse_request(fields: dict[str, Any], *, modes: tuple[str, ...] = MODES,
                  max_pixels: int = DEFAULT_MAX_PIXELS, image: Image.Image | bytes | None = None,
                  strict: bool = True) -> G2URequest:
    """Validate user ``fields`` into a G2URequest.

    ``image`` may be given separately (multipart upload, CLI file); otherwise ``fields["image"]`` is
    base64 (optionally a data URL). A request never names a local path or URL to read: only bytes.
    """
    if strict:
        unknown = sorted(set(fields) - KNOWN_FIELDS)
        if unknown:
            raise InputError(unknown[0], f"unknown field; known fields: {', '.join(sorted(KNOWN_FIELDS))}")
    if image is None:
        raw = fields.get("image")
        if raw is None:
            raise InputError("image", "is required")
        if isinstance(raw, (bytes, bytearray)):
            image = bytes(raw)
        elif isinstance(raw, str):
            image = decode_base64(raw)
        else:
            raise InputError("image", f"must be base64 text or a file upload, got {type(raw).__name__}")
    pil = load_image(image, max_pixels=max_pixels)

    if "question" not in fields:
        raise InputError("question", "is required")
    req = G2URequest(image=pil, question=_text("question", fields["question"], MAX_QUESTION_CHARS))
    req.options = _options(fields.get("options"))
    req.mode = _choice("mode", fields.get("mode", "g2u"), modes)
    for name in ("prompt", "prompt_name"):
        if fields.get(name) not in (None, ""):
            setattr(req, name, _text(name, fields[name], 1000))
    if fields.get("family") not in (None, ""):
        req.family = _choice("family", fields["family"], FAMILIES)
    req.writer = _choice("writer", fields.get("writer", "library"), WRITERS)
    if req.writer != "library" and (req.prompt or req.prompt_name):
        raise InputError("writer", f"the {req.writer!r} writer writes the prompt: drop 'prompt'/'prompt_name'")
    edit = EditParams()
    for name in ("steps", "seed"):
        if fields.get(name) not in (None, ""):
            setattr(edit, name, _int(name, fields[name]))
    for name in ("text_cfg", "image_cfg"):
        if fields.get(name) not in (None, ""):
            setattr(edit, name, _float(name, fields[name]))
    edit.size = _size(fields.get("edit_size"))
    if fields.get("think") not in (None, ""):
        edit.think = _bool("think", fields["think"])
    req.edit = edit
    if fields.get("max_new_tokens") not in (None, ""):
        req.answer = AnswerParams(max_new_tokens=_int("max_new_tokens", fields["max_new_tokens"]))
    if fields.get("order") not in (None, ""):
        req.order = _order(fields["order"])
    if fields.get("return_thought") not in (None, ""):
        req.return_thought = _bool("return_thought", fields["return_thought"])
    if fields.get("id") not in (None, ""):
        req.id = _text("id", str(fields["id"]), 200)
    return req
