"""The HTTP faces of the one batch path in TorchServe, beside the plain REST JSON one: the OpenAI routes
(``g2u.openai_api``) and streamed responses (``g2u.streaming``), chosen per request. (``g2u.serving``
holds the rest of what the handler needs: cost groups, early answers, describe/explain.)

TorchServe 0.12 hands the handler the URL past ``/predictions/{model}/{version}/`` as the ``url_path``
request header (empty for ``/predictions/{model}``). Each request of a batch becomes an ``Exchange``:

    rest          url_path empty, no ``stream``: the handler's REST path, untouched
    rest_stream   url_path empty, ``stream: true``: the same request, answered as server-sent events
    chat          ``v1/chat/completions``: translated to G→U fields, answered as a ChatCompletion (or chunks)
    models        ``v1/models``: answered without the model
    refused       an unknown path: its 404, in OpenAI's shape, without the model

Every exchange that reaches the model puts exactly one item in the batch. Streaming uses
``ts.handler_utils.utils.send_intermediate_predict_response`` with a sub-map of the request ids, so one
request of a batch streams while its batch-mates wait; the first chunk fixes the HTTP status (200) and
headers, so an error after it is an event in the stream. Only REST requests stream (they carry the
frontend's ``explain`` header): gRPC's unary ``Predictions`` completes on the first part
(``g2u.serving.send_early``), so ``stream`` over gRPC is refused naming the field.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from g2u import openai_api, progress
from g2u.batch import Batch, Outcome, RawItem
from g2u.bodies import check_body, parse_json_body
from g2u.errors import InputError
from g2u.schema import validate_settings
from g2u.serving import is_rest
from g2u.streaming import ProgressStream

SSE_TYPE = "text/event-stream; charset=utf-8"
JSON_TYPE = "application/json"
STREAM_HEADERS = {"X-Accel-Buffering": "no"}
"""Sent with a stream's first chunk: a proxy (nginx) must not buffer it."""


@dataclass
class Reply:
    """The final response of one request: body, status, content type."""

    body: str
    status: int
    content_type: str


class Exchange:
    """One request and how it is answered."""

    def __init__(self, kind: str, *, raw: RawItem | None = None, stream: ProgressStream | None = None,
                 call: openai_api.ChatCall | None = None, refusal: openai_api.OpenAIError | None = None,
                 reply: Reply | None = None, request_id: str = "", parse_error: BaseException | None = None):
        self.kind, self.raw, self.stream, self.call = kind, raw, stream, call
        self.refusal, self.reply, self.request_id, self.parse_error = refusal, reply, request_id, parse_error

    @property
    def handled(self) -> bool:
        """Answered here rather than by the handler's plain REST path."""
        return self.kind != "rest"

    def add_to(self, batch: Batch) -> None:
        """Put this request's one item in the batch."""
        if self.reply is not None:  # answered without the model: an item no stage touches, no error counted
            batch.items.append(Outcome(status=self.reply.status, error={"answered": self.kind}))
        elif self.refusal is not None:  # counted as the request's invalid input, then answered in OpenAI's shape
            batch.reject(InputError(self.refusal.param or "body", self.refusal.message, self.refusal.status))
        elif self.parse_error is not None:
            batch.reject(self.parse_error)
        else:
            batch.parse([self.raw])

    def finish(self, item: Outcome, body: dict[str, Any]) -> Reply:
        """The final response, from the item's outcome and the REST body the handler made of it."""
        if self.reply is not None:
            return self.reply
        status = item.status if not item.ok else 200
        if self.kind == "rest_stream":
            if self.stream is None or (not self.stream.started and status != 200):  # nothing sent: plain JSON
                return Reply(_json(body), status, JSON_TYPE)
            return Reply(self.stream.finish(status, body), 200, SSE_TYPE)
        # chat
        error = None
        if self.refusal is not None:
            status, error = self.refusal.status, self.refusal.body()
        elif status != 200:
            error = chat_error(status, body, self.call)
        if self.call is not None and self.call.stream and (self.stream.started or error is None):
            return Reply(self.stream.finish(status, error or body), 200, SSE_TYPE)
        if error is not None:
            return Reply(_json(error), status, JSON_TYPE)
        usage = self.stream.usage if self.stream is not None else openai_api.Usage()
        return Reply(_json(openai_api.completion(self.request_id, self.call.model, body, usage)), 200, JSON_TYPE)


def chat_error(status: int, body: dict[str, Any], call: openai_api.ChatCall | None) -> dict[str, Any]:
    """A batch-path error body (``error``, ``field``, ``reason``) in OpenAI's shape, naming the OpenAI
    parameter the field came from."""
    field = body.get("field")
    param = call.param(field) if call is not None else field
    reason = body.get("reason", "failed")
    return openai_api.error_body(status, f"{param}: {reason}" if param else str(reason), param, body.get("error"))


def open_exchange(context: Any, idx: int, row: dict[str, Any], split: Callable[[dict], tuple[dict, Any]],
                  model_name: str, defaults: dict[str, Any] | None = None) -> Exchange:
    """The exchange of request ``idx`` of the batch (``split``: the handler's REST row reader)."""
    url_path = (_header(context, idx, "url_path") or "").strip("/")
    request_id = _request_id(context, idx)
    if not url_path:
        if not _wants_stream(row, defaults or {}):
            return Exchange("rest")
        if not is_rest(context, idx):
            refused = InputError("stream", "streams over HTTP only: a gRPC request is answered in one response; "
                                           "send it without stream")
            return Exchange("rest_stream", parse_error=refused, request_id=request_id)
        stream = ProgressStream("rest", torchserve_sender(context, idx), request_id=request_id)
        try:
            fields, image = split(row)
        except Exception as exc:  # noqa: BLE001 - an unreadable body is this item's 4xx, as on the REST path
            return Exchange("rest_stream", stream=stream, parse_error=exc, request_id=request_id)
        fields.pop("stream", None)
        return Exchange("rest_stream", raw=RawItem(fields, image), stream=stream, request_id=request_id)
    if url_path == openai_api.MODELS:
        body = openai_api.models(model_name, int(_LOADED_AT))
        return Exchange("models", reply=Reply(_json(body), 200, JSON_TYPE))
    if url_path != openai_api.CHAT:
        message = (f"Unknown path {url_path!r}: this server serves POST {openai_api.CHAT} and GET "
                   f"{openai_api.MODELS} (after /predictions/{model_name}/VERSION/)")
        return Exchange("refused", reply=Reply(_json(openai_api.error_body(404, message, None, "unknown_url")),
                                               404, JSON_TYPE))
    try:
        call = openai_api.parse_chat(_json_body(row), model_name)
    except openai_api.OpenAIError as exc:
        return Exchange("chat", refusal=exc, request_id=request_id)
    send = torchserve_sender(context, idx) if call.stream else None
    stream = ProgressStream("openai", send, request_id=request_id, model=call.model,
                            include_usage=call.include_usage)
    return Exchange("chat", raw=RawItem(call.fields), stream=stream, call=call, request_id=request_id)


@contextmanager
def listening(items: Sequence[Outcome], exchanges: Sequence[Exchange | None]) -> Iterator[None]:
    """The stages run in the block report to the listening requests among ``items`` (``g2u.progress``);
    ``exchanges``: each item's exchange, in the same order."""
    listeners = [(item.plan, ex.stream) for item, ex in zip(items, exchanges)
                 if ex is not None and ex.stream is not None and item.plan is not None]
    if not listeners:
        yield
        return
    with progress.listening(listeners):
        yield


def thoughts_made(items: Sequence[Outcome], exchanges: Sequence[Exchange | None], report_hits: bool = False) -> None:
    """After stage I: each streamed request sees a preview of its thought (or its gate's decision).
    ``report_hits``: whether a thought may say it came from the shared cache (``g2u.serving.CachePrivacy``)."""
    for item, ex in zip(items, exchanges):
        if ex is None or ex.stream is None or ex.stream.send is None or not item.ok or item.plan is None:
            continue
        if item.plan.gated is not None:
            ex.stream.gate(item.plan.gated.to_dict())
        if item.thought is not None:
            cached = bool(item.thought.edit.cached) if report_hits else None
            ex.stream.thought(item.thought.image, item.thought.measures, cached)


def torchserve_sender(context: Any, idx: int) -> Callable[[str], None]:
    """Send one chunk of request ``idx``'s response now (TorchServe's intermediate predict response)."""

    def send(text: str) -> None:
        from ts.handler_utils.utils import send_intermediate_predict_response

        context.set_response_content_type(idx, SSE_TYPE)
        for key, value in STREAM_HEADERS.items():
            context.set_response_header(idx, key, value)
        send_intermediate_predict_response({idx: text}, {idx: context.request_ids[idx]},
                                           "Intermediate Prediction success", 200, context)

    return send


# ---------------------------------------------------------------------------------------- helpers
_LOADED_AT = time.time()


def _wants_stream(row: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether a REST request asks for a stream (its own ``stream`` field, else the server's default);
    a malformed value is left to the batch path, which refuses it naming the field."""
    body = row.get("body", row.get("data")) if set(row) in ({"body"}, {"data"}) else row
    if isinstance(body, (bytes, bytearray)):
        if b'"stream"' not in body:
            body = {}
        else:
            try:
                body = parse_json_body(body)
            except InputError:
                return False
    value = body.get("stream") if isinstance(body, dict) else None
    if value is None:
        value = defaults.get("stream")
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if value in (None, ""):
        return False
    try:
        return bool(validate_settings({"stream": value}).get("stream"))
    except InputError:
        return False


def _json_body(row: dict[str, Any]) -> dict[str, Any]:
    """A chat request's JSON object (bounded like the REST body: depth, number sizes)."""
    body = row.get("body", row.get("data"))
    try:
        if isinstance(body, (bytes, bytearray)):
            if not body:
                raise InputError("body", "is empty; POST a JSON chat completion request")
            return parse_json_body(body)
        if isinstance(body, dict):
            return check_body(body)
    except InputError as exc:
        raise openai_api.OpenAIError(exc.status, f"{exc.field}: {exc.reason}", exc.field, "invalid_body") from None
    raise openai_api.OpenAIError(400, "body: must be a JSON object (Content-Type: application/json)", "body",
                                 "invalid_body")


def _header(context: Any, idx: int, name: str) -> str | None:
    try:
        return context.get_request_header(idx, name)
    except (AttributeError, IndexError, TypeError):  # a context without request processors (tests)
        return None


def _request_id(context: Any, idx: int) -> str:
    ids = getattr(context, "request_ids", None) or {}
    return str(ids.get(idx, idx))


def _json(body: Any) -> str:
    import json

    return json.dumps(body, ensure_ascii=False)


__all__ = ["Exchange", "Reply", "chat_error", "listening", "open_exchange", "thoughts_made", "torchserve_sender"]
