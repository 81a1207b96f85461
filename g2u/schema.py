"""The one schema of a G→U request: every field, its type, bounds, default and help text, once.

Everything else is derived from ``RequestFields``: request validation (``parse_request``, the same error
shape everywhere: ``field`` + ``reason``), the CLI options (``add_request_arguments``), the MLflow pyfunc
signature (``pyfunc_columns``), the evaluation settings, the MLproject check and the README field table
(``field_table``). Backends declare their own fields (``BACKEND_OPTIONS``); they are reachable from every
entry point and refused, with their name, by a backend that does not read them.
"""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from g2u.backends.bagel.params import BagelOptions
from g2u.errors import InputError
from g2u.images import DEFAULT_MAX_PIXELS, decode_base64, load_image
from g2u.modes import DEFAULT_MODE, MODES
from g2u.types import FAMILIES, AnswerParams, EditParams, G2URequest, Strategy

MAX_QUESTION_CHARS = 4000
MAX_OPTIONS = 26
MAX_OPTION_CHARS = 1000
MAX_PROMPT_CHARS = 1000
MAX_CANDIDATES = 8
DEFAULT_ORDER = ("I", "q", "T")
NEGATIVE_PROMPT = " "
"""Stage I's negative prompt, as the references run it (diffusers' Qwen-Image-Edit examples, BAGEL's app)."""
TEMPERATURE = 0.0
"""Stage II decodes greedily (no request field: answers stay reproducible)."""
MIN_THOUGHT_SIDE = 8
"""Smallest side of a brought thought (one under ~6 px failed SSIM's window: a 500)."""
# Control characters other than tab/newline/carriage return have no place in a text field.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _numeric(annotation: Any) -> bool:
    """``int``/``float`` or an optional one (``float | None``: ``timeout_s``)."""
    if annotation in (int, float, "int", "float"):
        return True
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return any(a in (int, float) for a in args) and all(a in (int, float, type(None)) for a in args)


def _json_list(text: str) -> Any:
    """A list sent as JSON text (forms, the CLI): parsed with the body's bounds, so text nested 100 000
    deep or holding a 5 000-digit number is this field's 400, never a RecursionError (500)."""
    from g2u.bodies import MAX_DEPTH, _number, _problem

    try:
        value = json.loads(text, parse_int=_number(int), parse_float=_number(float))
    except RecursionError as exc:
        raise ValueError(f"must be a JSON list of strings (this text nests deeper than {MAX_DEPTH} levels)") from exc
    except ValueError as exc:  # JSONDecodeError
        raise ValueError("must be a JSON list of strings") from exc
    problem = _problem(value, MAX_DEPTH, MAX_DEPTH)
    if problem:
        raise ValueError(f"must be a JSON list of strings; this text {problem}")
    return value


def _clean_text(value: Any) -> Any:
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise ValueError("contains control characters")
        value = value.strip()
        if not value:
            raise ValueError("is empty")
    return value


class CoreFields(BaseModel):
    """Fields every backend reads. ``stage`` in the extras says which stage a field changes: evaluation
    keys and thought caches ignore ``edit`` fields for modes without a thought."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    image: Any = Field(None, description="the input picture: a multipart file, or base64 / a data URL in JSON; "
                                         "at most 40 MP (else 413)", json_schema_extra={"required": True})
    question: str = Field(..., max_length=MAX_QUESTION_CHARS, description="the question, at most 4000 characters")
    options: list[str] | None = Field(None, min_length=2, max_length=MAX_OPTIONS,
                                      description="multiple-choice options: a list of 2..26 strings "
                                                  "(JSON-encoded text in a form or on the CLI)")
    # an evaluation protocol's question text (g2u/eval/protocols.py), per sample
    prompt_text: str | None = Field(None, max_length=4 * MAX_QUESTION_CHARS,
                                    description="the question exactly as the answer model reads it (hint, options "
                                                "and instruction included), as an evaluation protocol builds it; "
                                                "default: `question` and `options` with this project's instruction")
    mode: str = Field(DEFAULT_MODE, description="one of " + ", ".join(f"`{m}`" for m in MODES)
                      + " (`vae_concat` on BAGEL only)")
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="a free edit prompt",
                               json_schema_extra={"stage": "edit"})
    prompt_name: str | None = Field(None, max_length=200, description="a library edit prompt (`g2u prompts`)",
                                    json_schema_extra={"stage": "edit"})
    family: Literal["enhancement", "extension"] | None = Field(
        None, description="a prompt family's default prompt (or the family a writer must use)",
        json_schema_extra={"stage": "edit"})
    writer: Literal["library", "openai", "self", "route"] = Field(
        "library", description="who writes the edit prompt: the library, an OpenAI-compatible model, "
                               "the model itself, or `route` (the library prompt learned per question type, "
                               "g2u/data/routes.yaml)", json_schema_extra={"stage": "edit"})
    steps: int = Field(30, ge=1, le=200, description="denoising steps of stage I (the paper: 30)",
                       json_schema_extra={"stage": "edit"})
    text_cfg: float = Field(4.0, ge=1.0, le=30.0, description="text CFG scale (the paper: 4.0)",
                            json_schema_extra={"stage": "edit"})
    image_cfg: float = Field(1.0, ge=1.0, le=30.0,
                             description="image CFG scale (the paper: 1.0, where the branch is not computed)",
                             json_schema_extra={"stage": "edit"})
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of stage I's noise", json_schema_extra={"stage": "edit"})
    edit_size: tuple[int, int] | None = Field(
        None, description="working size `WIDTHxHEIGHT` (multiples of the backend's stride; default: the "
                          "input's aspect at the backend's area)", json_schema_extra={"stage": "edit"})
    edit_area: int | None = Field(None, ge=64 * 64, le=4096 * 4096,
                                  description="working area in pixels when `edit_size` is not given, e.g. 262144 "
                                              "for the fast 512² setting (default: the backend's own size rule)",
                                  json_schema_extra={"stage": "edit"})
    stage2_max_pixels: int | None = Field(None, ge=28 * 28, le=40_000_000,
                                          description="cap on each stage-II image, I and Î alike (default: the "
                                                      "answer model's processor setting)")
    max_new_tokens: int = Field(32, ge=1, le=2048, description="answer length budget in tokens")
    order: tuple[str, ...] = Field(DEFAULT_ORDER, description="g2u answer-prompt order of image `I`, question "
                                                              "`q` and thought `T`, e.g. `I,q,T` (the paper's), "
                                                              "or a name: `paper` (I,q,T), `lmms_eval` (I,T,q)")
    layout: Literal["paper", "labelled", "multiturn"] = Field(
        "paper", description="stage-II prompt layout of a thought mode: `paper` ([I, q, Î] in `order`), `labelled` "
                             "(each image introduced, question last), `multiturn` (user [I, q, enhance first], "
                             "assistant [Î], user [I, q])")
    reasoning_tokens: int = Field(512, ge=1, le=4096, description="token budget of the `textual_cot` reasoning")
    timeout_s: float | None = Field(None, gt=0, le=3600, description="seconds this request may take; past them it "
                                    "is answered 504 (capped by the server's own deadline)")
    candidates: int = Field(1, ge=1, le=MAX_CANDIDATES,
                            description="beyond the paper: imagine N thoughts (1..8) in one batched edit call "
                                        "and keep the one `selection` picks (default: N = the number of "
                                        "`candidate_prompts`, else 1)", json_schema_extra={"stage": "edit"})
    candidate_prompts: list[str] | None = Field(
        None, min_length=1, max_length=MAX_CANDIDATES,
        description="edit prompts of the first candidates (JSON list of 1..8 strings); the others take the "
                    "request's prompt, the other family's default, then new seeds", json_schema_extra={"stage": "edit"})
    selection: Literal["judge", "agreement", "confidence"] = Field(
        "confidence", description="how a candidate is chosen: `confidence` (answer token probability), "
                                  "`agreement` (majority vote with the baseline answer), `judge` (a "
                                  "configured fidelity judge's score)")
    gate: Literal["none", "confidence"] = Field(
        "none", description="beyond the paper: `confidence` answers the baseline first and skips stage I "
                            "when its answer probability is at least `gate_threshold`")
    gate_threshold: float = Field(0.9, ge=0.0, le=1.0, description="τ of the confidence gate, in [0, 1]")
    thought: Any = Field(None, description="a thought brought by the caller (like `image`: a file or base64), "
                                           "used instead of generating one; at most 40 MP")
    return_thought: bool = Field(False, description="include the thought Î as a base64 PNG in the response")
    # --- faithfulness options: both readings legitimate, the references' by default
    stage2_sizing: Literal["per_image", "shared"] = Field(
        "per_image", description="stage-II image sizes: `per_image` (each of I and Î by the model's rule from its "
                                 "own size, as stock Qwen2.5-VL processing and BAGEL's inferencer) or `shared` "
                                 "(both at the size of I)")
    replace_min_psnr: float | None = Field(
        None, ge=0.0, le=100.0, description="`replace` only: answer from Î only when PSNR(Î, I) exceeds this "
                                            "many dB, else from I (the authors' harness: 25); unset: always Î")
    stream: bool = Field(False, description="HTTP only: answer as server-sent events — the prompt chosen, stage I "
                                            "steps, the answer's tokens, then the result (see Streaming)")
    id: str | None = Field(None, max_length=200, description="an id echoed back in the response")

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        """``True`` is an int to Python, never a step count to a user."""
        if isinstance(data, dict):
            for name, value in data.items():
                info = cls.model_fields.get(name)
                if isinstance(value, bool) and info is not None and _numeric(info.annotation):
                    raise _FieldError(name, f"must be a number, got {value}")
        return data

    @field_validator("question", "prompt", "prompt_name", "id", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _clean_text(value)

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> Any:
        if isinstance(value, str):  # multipart forms and the CLI carry lists as JSON text
            value = _json_list(value)
        if isinstance(value, list):
            for i, v in enumerate(value):
                if not isinstance(v, str):
                    raise _FieldError(f"options[{i}]", f"must be a string, got {type(v).__name__}")
                try:
                    _clean_text(v)
                except ValueError as exc:
                    raise _FieldError(f"options[{i}]", str(exc)) from exc
                if len(v) > MAX_OPTION_CHARS:
                    raise _FieldError(f"options[{i}]", f"is longer than {MAX_OPTION_CHARS} characters")
            value = [v.strip() for v in value]
        return value

    @field_validator("candidate_prompts", mode="before")
    @classmethod
    def _candidate_prompts(cls, value: Any) -> Any:
        if isinstance(value, str):  # forms, the CLI and pyfunc columns carry lists as JSON text
            value = _json_list(value)
        if isinstance(value, list):
            for i, v in enumerate(value):
                if not isinstance(v, str):
                    raise _FieldError(f"candidate_prompts[{i}]", f"must be a string, got {type(v).__name__}")
                try:
                    _clean_text(v)
                except ValueError as exc:
                    raise _FieldError(f"candidate_prompts[{i}]", str(exc)) from exc
                if len(v) > MAX_PROMPT_CHARS:
                    raise _FieldError(f"candidate_prompts[{i}]", f"is longer than {MAX_PROMPT_CHARS} characters")
            value = [v.strip() for v in value]
        return value

    @field_validator("edit_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        """An int (square), "WxH", or [W, H]."""
        if isinstance(value, bool):
            raise ValueError("must be 'WIDTHxHEIGHT', an integer or [width, height]")
        if isinstance(value, str):
            try:
                value = [int(p) for p in re.split(r"[x×, ]+", value.strip().lower()) if p]
            except ValueError as exc:
                raise ValueError(f"must be 'WIDTHxHEIGHT' or an integer, got {value[:40]!r}") from exc
        if isinstance(value, int):
            value = [value]
        if isinstance(value, (list, tuple)):
            if len(value) == 1:
                value = [value[0], value[0]]
            if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise ValueError(f"must be two positive integers, got {value!r}")
            return tuple(value)
        raise ValueError("must be 'WIDTHxHEIGHT', an integer or [width, height]")

    @field_validator("order", mode="before")
    @classmethod
    def _order(cls, value: Any) -> Any:
        from g2u.answer_prompt import named_orders

        if isinstance(value, str) and value.strip() in named_orders():
            return named_orders()[value.strip()]
        if isinstance(value, str):
            value = [p for p in re.split(r"[,\s]+", value.strip()) if p]
        if not isinstance(value, (list, tuple)) or sorted(value) != sorted(DEFAULT_ORDER):
            raise ValueError("must be a permutation of I, q, T (image, question, thought) or one of "
                             + ", ".join(named_orders()))
        return tuple(value)

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in MODES:
            raise ValueError(f"must be one of {', '.join(MODES)}; got {value[:40]!r}")
        return value

    @model_validator(mode="after")
    def _writer_vs_prompt(self) -> CoreFields:
        if self.writer != "library" and (self.prompt or self.prompt_name):
            raise _FieldError("writer", f"the {self.writer!r} writer writes the prompt: drop 'prompt'/'prompt_name'")
        return self

    @model_validator(mode="after")
    def _candidates(self) -> CoreFields:
        """``candidates`` defaults to the number of ``candidate_prompts``; fewer would drop some."""
        if self.candidate_prompts:
            if "candidates" not in self.model_fields_set:
                self.candidates = len(self.candidate_prompts)
            elif self.candidates < len(self.candidate_prompts):
                raise _FieldError("candidates", f"is {self.candidates} but {len(self.candidate_prompts)} "
                                                "candidate_prompts were given")
        return self


class _FieldError(ValueError):
    """A validator's error about a field other than the one validated (``options[2]``, ``writer``)."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


BACKEND_OPTIONS: dict[str, type[BaseModel]] = {"bagel": BagelOptions}
"""Each backend's own fields (a pydantic model per backend), merged into the schema."""


def _backend_fields() -> dict[str, tuple[Any, Any]]:
    """Backend fields as optional schema fields: unset means the backend's own default."""
    out: dict[str, tuple[Any, Any]] = {}
    for backend, model in BACKEND_OPTIONS.items():
        for name, info in model.model_fields.items():
            extra = {"stage": "edit", "backend": backend, "backend_default": info.default}
            # Typed and parsed by the backend's own model (see ``_backend_options``); Any here.
            out[name] = (Any, Field(None, description=info.description, json_schema_extra=extra))
    return out


RequestFields = create_model("RequestFields", __base__=CoreFields, **_backend_fields())
"""The whole request: core fields plus every backend's own (validated again by that backend's model)."""

FIELD_NAMES = tuple(RequestFields.model_fields)


def field_choices(name: str) -> tuple[str, ...]:
    """The values a ``Literal`` field admits, read from its annotation (one list: the schema's)."""
    annotation = RequestFields.model_fields[name].annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    for arg in args:
        if typing.get_origin(arg) is Literal:
            return tuple(typing.get_args(arg))
    return tuple(typing.get_args(annotation)) if typing.get_origin(annotation) is Literal else ()


WRITERS = field_choices("writer")
SELECTIONS = field_choices("selection")
GATES = field_choices("gate")
LAYOUTS = field_choices("layout")


def field_extra(name: str) -> dict[str, Any]:
    extra = RequestFields.model_fields[name].json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def backend_of(name: str) -> str | None:
    """The backend that declared ``name`` (None: a core field)."""
    return field_extra(name).get("backend")


EDIT_FIELDS = tuple(n for n in FIELD_NAMES if field_extra(n).get("stage") == "edit")
"""Fields that change the thought (and only the thought)."""


def _raise_validation(exc: ValidationError) -> typing.NoReturn:
    err = exc.errors(include_url=False)[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        raise InputError(cause.field, cause.reason) from None
    loc = [str(p) for p in err.get("loc", ())]
    field = loc[0] if loc else "body"
    if len(loc) > 1 and loc[1].isdigit():
        field = f"{field}[{loc[1]}]"
    msg = str(cause) if isinstance(cause, ValueError) else err.get("msg", "is invalid")
    if err.get("type") == "extra_forbidden":
        msg = f"unknown field; known fields: {', '.join(FIELD_NAMES)}"
    elif err.get("type") == "missing":
        msg = "is required"
    elif "input" in err and err.get("type") not in ("value_error",):
        shown = err["input"]
        shown = shown if not isinstance(shown, str) or len(shown) <= 40 else shown[:40] + "…"
        msg = f"{msg[0].lower()}{msg[1:]}, got {shown!r}" if not isinstance(shown, (dict, list)) else msg
    raise InputError(field, msg) from None


def validate_fields(fields: dict[str, Any]) -> BaseModel:
    """Validate user fields (``image`` excluded) into ``RequestFields``; unset (None / empty form) fields
    take their defaults. Raises InputError naming the field."""
    present = {k: v for k, v in fields.items() if v is not None and not (isinstance(v, str) and v == "" and
                                                                          k != "question")}
    try:
        return RequestFields.model_validate(present)
    except ValidationError as exc:
        _raise_validation(exc)


def _backend_options(model: BaseModel) -> dict[str, Any]:
    """The backend fields a request set, each parsed by its backend's model (names the field if bad)."""
    out: dict[str, Any] = {}
    for backend, option_model in BACKEND_OPTIONS.items():
        mine = {k: getattr(model, k) for k in model.model_fields_set if backend_of(k) == backend}
        if not mine:
            continue
        try:
            parsed = option_model.model_validate(mine)
        except ValidationError as exc:
            _raise_validation(exc)
        out.update({k: getattr(parsed, k) for k in mine})
    return out


def validate_settings(fields: dict[str, Any]) -> dict[str, Any]:
    """Partial fields (evaluation settings, model-config defaults): validated, returned as set (parsed).
    A placeholder question stands in for the per-sample one."""
    if fields.get("thought") not in (None, ""):
        raise InputError("thought", "is an image brought with each request, not a setting")
    model = validate_fields({"question": "?", **fields})
    out = {k: getattr(model, k) for k in model.model_fields_set if k not in ("question", "image")}
    return {**out, **_backend_options(model)}


def parse_request(fields: dict[str, Any], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                  image: Image.Image | bytes | None = None) -> G2URequest:
    """Validate user ``fields`` into a G2URequest.

    ``image`` may be given separately (multipart upload, CLI file); otherwise ``fields["image"]`` is
    base64 (optionally a data URL). A request never names a local path or URL to read: only bytes.
    Backend-specific checks (which modes and options the loaded backend reads) are the pipeline's.
    """
    raw_image, raw_thought = fields.get("image"), fields.get("thought")
    model = validate_fields({**fields, "image": None, "thought": None})
    if image is None:
        if raw_image is None or raw_image == "":
            raise InputError("image", "is required")
        image = _image_bytes(raw_image, "image")
    pil = image if isinstance(image, Image.Image) else load_image(image, max_pixels=max_pixels)
    thought = None
    if raw_thought is not None and not (isinstance(raw_thought, str) and raw_thought == ""):
        thought = raw_thought if isinstance(raw_thought, Image.Image) else load_image(
            _image_bytes(raw_thought, "thought"), max_pixels=max_pixels, field="thought")
        if min(thought.size) < MIN_THOUGHT_SIDE:
            raise InputError("thought", f"is {thought.size[0]}x{thought.size[1]}; each side must be at least "
                                        f"{MIN_THOUGHT_SIDE} pixels")
        if model.candidates > 1:
            raise InputError("thought", "a brought thought leaves nothing to choose: drop 'candidates'")

    edit = EditParams(steps=model.steps, text_cfg=model.text_cfg, image_cfg=model.image_cfg, seed=model.seed,
                      size=model.edit_size, area=model.edit_area, negative_prompt=NEGATIVE_PROMPT,
                      options=_backend_options(model))
    answer = AnswerParams(max_new_tokens=model.max_new_tokens, temperature=TEMPERATURE,
                          stage2_max_pixels=model.stage2_max_pixels, stage2_sizing=model.stage2_sizing,
                          return_scores=False)
    return G2URequest(image=pil, question=model.question, options=model.options, prompt_text=model.prompt_text,
                      mode=model.mode,
                      prompt=model.prompt, prompt_name=model.prompt_name, family=model.family, writer=model.writer,
                      edit=edit, answer=answer, order=model.order,
                      layout=model.layout, replace_min_psnr=model.replace_min_psnr,
                      reasoning_tokens=model.reasoning_tokens, timeout_s=model.timeout_s,
                      return_thought=model.return_thought, id=model.id, thought=thought,
                      strategy=Strategy(candidates=model.candidates, candidate_prompts=model.candidate_prompts,
                                        selection=model.selection, gate=model.gate,
                                        gate_threshold=model.gate_threshold))


def _image_bytes(raw: Any, name: str) -> bytes | Image.Image:
    """An image field's bytes: a file upload (bytes) or base64 text (optionally a data URL)."""
    if isinstance(raw, Image.Image):
        return raw
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    if isinstance(raw, str):
        return decode_base64(raw, field=name)
    raise InputError(name, f"must be base64 text or a file upload, got {type(raw).__name__}")


# ---------------------------------------------------------------------------------------- derived views
def field_default(name: str) -> Any:
    info = RequestFields.model_fields[name]
    if info.is_required():
        return None
    return field_extra(name).get("backend_default", info.default)


def edit_params(**given: Any) -> EditParams:
    """``EditParams`` with the schema's defaults under ``given`` (dataclass names; not validated: backend
    tests hand in values the schema would refuse)."""
    defaults = {"steps": field_default("steps"), "text_cfg": field_default("text_cfg"),
                "image_cfg": field_default("image_cfg"), "seed": field_default("seed"),
                "size": field_default("edit_size"), "area": field_default("edit_area"),
                "negative_prompt": NEGATIVE_PROMPT, "options": {}}
    return EditParams(**{**defaults, **given})


def answer_params(**given: Any) -> AnswerParams:
    """``AnswerParams`` with the schema's defaults under ``given`` (greedy: temperature 0)."""
    defaults = {"max_new_tokens": field_default("max_new_tokens"), "temperature": TEMPERATURE,
                "stage2_max_pixels": field_default("stage2_max_pixels"),
                "stage2_sizing": field_default("stage2_sizing"), "return_scores": False}
    return AnswerParams(**{**defaults, **given})


def field_kind(name: str) -> str:
    """The field's value type in words: string, integer, number, boolean, list."""
    backend = backend_of(name)
    annotation = (BACKEND_OPTIONS[backend] if backend else RequestFields).model_fields[name].annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    if typing.get_origin(annotation) is list:
        return "list"
    return "string"  # text, choices, and pairs written as text ("64x48", "0.4,1.0")


def field_table() -> str:
    """The README's REST field table (a test keeps the README and this in agreement)."""
    lines = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name in FIELD_NAMES:
        info = RequestFields.model_fields[name]
        extra = field_extra(name)
        default = "required" if extra.get("required") or info.is_required() else _show(field_default(name))
        meaning = info.description or ""
        if extra.get("backend"):
            meaning = f"{extra['backend']} only: {meaning}"
        lines.append(f"| `{name}` | {field_kind(name)} | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, tuple):
        return "`" + ",".join(str(v) for v in value) + "`"
    return f"`{json.dumps(value) if isinstance(value, bool) else value}`"


def pyfunc_columns() -> dict[str, str]:
    """MLflow column types of every request field (lists and pairs travel as JSON/“a,b” text)."""
    kinds = {"string": "string", "integer": "long", "number": "double", "boolean": "boolean", "list": "string"}
    return {name: kinds[field_kind(name)] for name in FIELD_NAMES}


PER_SAMPLE_FIELDS = ("image", "question", "options", "prompt_text", "mode", "id", "return_thought", "timeout_s",
                     "thought", "stream")
"""Fields an evaluation sets per sample; every other field is an evaluation setting."""
SETTING_FIELDS = tuple(n for n in FIELD_NAMES if n not in PER_SAMPLE_FIELDS)


def add_request_arguments(parser, exclude: tuple[str, ...] = (), required: tuple[str, ...] = (),
                          bool_flags: bool = True) -> None:
    """One ``--flag`` per schema field, with the schema's help text. Values stay text: the schema parses
    them, so the CLI reports errors exactly as REST does. ``bool_flags=False``: booleans take a value
    (``--think true``), as MLproject commands pass them."""
    for name in FIELD_NAMES:
        if name in exclude:
            continue
        info = RequestFields.model_fields[name]
        flag = "--" + name.replace("_", "-")
        default = field_default(name)
        help_text = (info.description or "").replace("%", "%%")
        if backend_of(name):
            help_text = f"[{backend_of(name)}] {help_text}"
        if default is not None:
            help_text += f" (default: {_show(default).strip('`')})"
        if field_kind(name) == "boolean" and bool_flags:
            parser.add_argument(flag, dest=name, action="store_const", const="true", default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, required=name in required, help=help_text)


__all__ = ["BACKEND_OPTIONS", "EDIT_FIELDS", "FAMILIES", "FIELD_NAMES", "GATES", "LAYOUTS", "PER_SAMPLE_FIELDS",
           "SELECTIONS", "SETTING_FIELDS", "WRITERS", "RequestFields", "add_request_arguments", "answer_params",
           "backend_of", "edit_params", "field_choices", "field_table", "parse_request", "pyfunc_columns",
           "validate_fields", "validate_settings"]
