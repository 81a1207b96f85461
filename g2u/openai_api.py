"""OpenAI's chat API in front of the one batch path: what the ``openai`` client (and lmms-eval's or
VLMEvalKit's OpenAI models) send, translated into G→U request fields, and outcomes back into OpenAI's
objects (``ChatCompletion``, ``ChatCompletionChunk``, its error shape).

    POST v1/chat/completions   one user message: one ``image_url`` part (a data URL; the server never
                               fetches a remote one) and text parts (the question); G→U fields as extra
                               body fields, checked by the one schema (``g2u.schema``)
    GET  v1/models             the served model

OpenAI's own fields map onto ours (``max_tokens``/``max_completion_tokens`` → ``max_new_tokens``, ``seed``
→ stage I's seed); the sampling ones this server cannot honour are refused unless at their neutral value
(stage II decodes greedily: ``temperature`` 0 only). Nothing here knows TorchServe (``g2u.routes`` does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from openai.types import CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.completion_usage import CompletionTokensDetails
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from g2u.schema import FIELD_NAMES

CHAT, MODELS = "v1/chat/completions", "v1/models"
ROUTES = (CHAT, MODELS)
OWNER = "g2u-serve"

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error", 504: "timeout"}
"""OpenAI's error ``type`` per HTTP status (anything else ≥ 500: ``server_error``)."""

FROM_MESSAGES = ("image", "question")
"""G→U fields the messages carry: refused as extra body fields."""

NEUTRAL = {"top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "logprobs": False, "n": 1}
"""OpenAI sampling fields accepted only at the value that changes nothing here."""


class OpenAIError(Exception):
    """A request this route refuses, in OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI sends it."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# ---------------------------------------------------------------------------------------- request
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class TextPart(_Strict):
    type: Literal["text"]
    text: str


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None
    """Padding OpenAI adds against side channels; nothing to pad here (accepted, has no effect)."""


class ChatRequest(BaseModel):
    """The OpenAI chat fields this route reads; any other body field must be a G→U field."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = None
    n: int | None = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    user: str | None = None
    """OpenAI's end-user id for abuse monitoring; it changes no output (accepted, not stored)."""


@dataclass
class ChatCall:
    """One chat request, translated: the G→U fields for the batch path and how to answer."""

    fields: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    params: dict[str, str] = field(default_factory=dict)
    """G→U field → the OpenAI parameter it came from (errors name what the client sent)."""

    def param(self, g2u_field: str | None) -> str | None:
        if g2u_field is None:
            return None
        return self.params.get(g2u_field, self.params.get(g2u_field.split("[")[0], g2u_field))


def parse_chat(body: dict[str, Any], served: str) -> ChatCall:
    """Translate an OpenAI chat body into G→U fields (raises OpenAIError naming the parameter)."""
    try:
        req = ChatRequest.model_validate(body)
    except ValidationError as exc:
        err = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))  # the branch that got furthest
        raise OpenAIError(400, f"{_loc(err['loc'])}: {err['msg']}", _loc(err["loc"]), "invalid_value") from None
    if req.model != served:
        raise OpenAIError(404, f"The model {req.model!r} does not exist; this server serves {served!r} "
                               "(GET v1/models)", "model", "model_not_found")
    for name, neutral in NEUTRAL.items():
        value = getattr(req, name)
        if value is not None and value != neutral:
            raise OpenAIError(400, f"{name}: only {neutral} is supported (stage II decodes greedily; "
                                   "candidates and a selection policy are G→U's own fields)", name, "unsupported_value")
    if req.temperature not in (None, 0):
        raise OpenAIError(400, "temperature: only 0 is supported: stage II decodes greedily on this server, so "
                               "answers are reproducible (stage I's randomness is the `seed`)",
                          "temperature", "unsupported_value")
    if req.stop:
        raise OpenAIError(400, "stop: stop sequences are not supported; the answer ends at the model's end "
                               "token or at max_tokens", "stop", "unsupported_value")
    fields, params = _message_fields(req.messages)
    extras = dict(req.model_extra or {})
    for name in extras:
        if name in FROM_MESSAGES:
            raise OpenAIError(400, f"{name}: comes from the messages (an image_url part and text parts), not "
                                   "from a body field", name, "invalid_value")
        if name not in FIELD_NAMES:
            raise OpenAIError(400, f"{name}: unknown parameter: neither an OpenAI chat parameter this server "
                                   f"reads nor a G→U field (known G→U fields: {', '.join(FIELD_NAMES)})",
                              name, "unknown_parameter")
    if "stream" in extras:
        raise OpenAIError(400, "stream: given twice", "stream", "invalid_value")
    budget = [(n, v) for n, v in (("max_tokens", req.max_tokens), ("max_completion_tokens", req.max_completion_tokens),
                                  ("max_new_tokens", extras.get("max_new_tokens"))) if v is not None]
    if len(budget) > 1:
        raise OpenAIError(400, f"{budget[1][0]}: give one answer budget, not {' and '.join(n for n, _ in budget)}",
                          budget[1][0], "invalid_value")
    if budget and budget[0][0] != "max_new_tokens":
        fields["max_new_tokens"] = budget[0][1]
        params["max_new_tokens"] = budget[0][0]
    if req.seed is not None:
        fields["seed"] = req.seed
    fields.update(extras)
    return ChatCall(fields, req.model, bool(req.stream),
                    bool(req.stream_options and req.stream_options.include_usage), params)


def _message_fields(messages: list[Message]) -> tuple[dict[str, Any], dict[str, str]]:
    """The question and the image of the one user message."""
    for i, msg in enumerate(messages):
        if msg.role != "user":
            raise OpenAIError(400, f"messages[{i}]: a G→U request is one user message (an image and its "
                                   f"question); {msg.role} messages are not read, so they are refused",
                              f"messages[{i}].role", "invalid_value")
    if len(messages) != 1:
        raise OpenAIError(400, "messages: send exactly one user message (an image and its question); "
                               f"got {len(messages)}", "messages", "invalid_value")
    content = messages[0].content
    parts: list[Any] = [TextPart(type="text", text=content)] if isinstance(content, str) else list(content or [])
    texts = [p.text for p in parts if isinstance(p, TextPart)]
    images = [(j, p) for j, p in enumerate(parts) if isinstance(p, ImagePart)]
    if len(images) != 1:
        raise OpenAIError(400, f"messages[0].content: needs exactly one image_url part (the image the question "
                               f"is about), got {len(images)}", "messages[0].content", "invalid_value")
    j, image = images[0]
    where = f"messages[0].content[{j}].image_url"
    url = image.image_url.url
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url[:12] else "a path"
        raise OpenAIError(400, f"{where}.url: only data URLs are accepted (data:image/png;base64,...); this "
                               f"server never fetches {scheme} URLs", f"{where}.url", "invalid_image_url")
    if image.image_url.detail not in (None, "auto"):
        raise OpenAIError(400, f"{where}.detail: only 'auto'; the stage-II image size is the "
                               "`stage2_max_pixels` field", f"{where}.detail", "unsupported_value")
    question = "\n".join(t for t in texts if t.strip())
    return {"image": url, "question": question}, {"image": f"{where}.url", "question": "messages[0].content"}


# ---------------------------------------------------------------------------------------- response
@dataclass
class Usage:
    """Token counts of one request, summed over its stage-II decodes as the model ran them (``g2u.progress``
    usage events): the answer, the gate's baseline, the candidates' answers, a reasoning pass."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    answer_tokens: int | None = None
    answer_stopped: bool | None = None
    seen: bool = False

    def add(self, data: dict[str, Any]) -> None:
        self.seen = True
        self.prompt_tokens += int(data["prompt_tokens"])
        self.completion_tokens += int(data["completion_tokens"])
        if data["phase"] == "reasoning":
            self.reasoning_tokens += int(data["completion_tokens"])
        if data["phase"] == "answer" and data.get("streamed", True):  # the request's own answer
            self.answer_tokens, self.answer_stopped = int(data["completion_tokens"]), bool(data["stopped"])

    def openai(self) -> CompletionUsage | None:
        if not self.seen:
            return None
        details = CompletionTokensDetails(reasoning_tokens=self.reasoning_tokens) if self.reasoning_tokens else None
        return CompletionUsage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                               total_tokens=self.prompt_tokens + self.completion_tokens,
                               completion_tokens_details=details)

    def finish_reason(self) -> Literal["stop", "length"]:
        """``length`` when the request's own answer ran out of ``max_tokens`` before its end token."""
        return "length" if self.answer_stopped is False else "stop"


def extension(body: dict[str, Any]) -> dict[str, Any]:
    """The ``g2u`` object of a reply: the REST result without its answer (and without old key aliases)."""
    from g2u.results import DEPRECATED_KEYS

    return {k: v for k, v in body.items() if k != "answer" and k not in DEPRECATED_KEYS}


def completion(request_id: str, model: str, body: dict[str, Any], usage: Usage,
               created: int | None = None) -> dict[str, Any]:
    """A ``ChatCompletion`` for a G→U result body."""
    reply = ChatCompletion(
        id=f"chatcmpl-{request_id}", object="chat.completion", created=created or int(time.time()), model=model,
        choices=[Choice(index=0, finish_reason=usage.finish_reason(), logprobs=None,
                        message=ChatCompletionMessage(role="assistant", content=body.get("answer", "")))],
        usage=usage.openai(), g2u=extension(body))
    return reply.model_dump(mode="json", exclude_unset=True)


def chunk(request_id: str, model: str, created: int, *, delta: dict[str, Any] | None = None,
          finish_reason: str | None = None, g2u: dict[str, Any] | None = None, usage: Usage | None = None,
          choices: bool = True) -> dict[str, Any]:
    """One ``ChatCompletionChunk``: a delta (``{}`` for a progress event, which rides in ``g2u``), the
    final one with its ``finish_reason``, or (``choices=False``) the usage chunk of ``include_usage``."""
    extra = {"g2u": g2u} if g2u is not None else {}
    out = ChatCompletionChunk(
        id=f"chatcmpl-{request_id}", object="chat.completion.chunk", created=created, model=model,
        choices=[ChunkChoice(index=0, delta=ChoiceDelta(**(delta or {})), finish_reason=finish_reason)]
        if choices else [], usage=usage.openai() if usage is not None else None, **extra)
    dumped = out.model_dump(mode="json", exclude_unset=True)
    if choices:
        dumped["choices"][0].setdefault("finish_reason", None)
    return dumped


def models(served: str, created: int) -> dict[str, Any]:
    """The ``GET v1/models`` list: the one model served."""
    return {"object": "list",
            "data": [Model(id=served, object="model", created=created, owned_by=OWNER).model_dump(mode="json")]}


def _loc(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as OpenAI names parameters: ``messages[0].content[1].image_url.url``
    (pydantic's union branches and part tags left out)."""
    out, tag_next = "", False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if part == "str" or "[" in str(part):
            tag_next = "tagged-union" in str(part)
            continue
        if tag_next and out.endswith("]"):  # the part's tag (``image_url``, ``text``) before its fields
            tag_next = False
            continue
        out += ("." if out else "") + str(part)
    return out or "body"


__all__ = ["CHAT", "MODELS", "ROUTES", "ChatCall", "OpenAIError", "Usage", "chunk", "completion",
           "error_body", "extension", "models", "parse_chat"]
