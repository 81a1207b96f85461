"""Server-sent events of one streamed request: ``g2u.progress`` events in, SSE text out, as they happen.

Two dialects over the same events:

    rest     named events, JSON data (docs/openai-api.md, Streaming):
               event: prompt    {"prompt", "prompt_name", "family", "writer", "candidate"}
               event: step      {"stage": "edit", "step": k, "total": n}
               event: thought   {"preview": base64 PNG (at most 64 px a side), "size", "measures"[, "cached"]}
               event: gate      the confidence gate's decision (requests with ``gate: confidence``)
               event: reasoning {"text"}   a ``textual_cot`` reasoning pass, as decoded
               event: delta     {"text"}   the answer, as decoded
               event: result    the REST response body, exactly as without ``stream``
               event: error     the REST error body plus its ``status``
    openai   ``chat.completion.chunk`` objects (the ``openai`` client's ``Stream``): progress in the chunk's
             ``g2u`` extension with an empty delta, the answer as ``delta.content``, reasoning as
             ``delta.reasoning_content``; the last chunk has the ``finish_reason`` and the ``g2u`` result
             (edit, measures, timings); a usage chunk when ``stream_options.include_usage``; errors as
             ``{"error": {...}}`` (the client raises ``APIError``)

Both end with ``data: [DONE]``. The answer's deltas are what the model decoded, with leading and trailing
whitespace held back (the result's answer is stripped), so their concatenation is the answer; should the
final answer differ from what was sent (a batch retried item by item after a failure, a candidate chosen),
the rest cannot be taken back and the final event carries the answer in full.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from g2u import openai_api
from g2u.images import png_bytes
from g2u.progress import Event

logger = logging.getLogger(__name__)

PREVIEW_SIDE = 64
DONE = "data: [DONE]\n\n"


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event (JSON data on one line)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


def preview(image: Image.Image, side: int = PREVIEW_SIDE) -> str:
    """A small PNG of ``image`` (at most ``side`` pixels a side), base64."""
    small = image.copy()
    small.thumbnail((side, side))
    return base64.b64encode(png_bytes(small)).decode("ascii")


class ProgressStream:
    """The listener of one request: turns its events into SSE text handed to ``send`` (None: nothing is
    sent while it runs — a plain OpenAI request that only counts its tokens)."""

    def __init__(self, dialect: str, send: Callable[[str], None] | None, *, request_id: str = "",
                 model: str = "", include_usage: bool = False):
        assert dialect in ("rest", "openai")
        self.dialect, self.send = dialect, send
        self.request_id, self.model, self.include_usage = request_id, model, include_usage
        self.created = int(time.time())
        self.usage = openai_api.Usage()
        self.started = False
        self._raw = ""  # the answer as decoded
        self.sent = ""  # the part of it sent (whitespace held back)

    # ------------------------------------------------------------------ while the model runs
    def __call__(self, event: Event) -> None:
        if event.kind == "usage":
            self.usage.add(event.data)
        elif event.kind == "tokens" and event.data["phase"] == "answer":
            self._raw += event.data["text"]
            safe = self._raw.strip()
            if safe.startswith(self.sent) and len(safe) > len(self.sent):
                new, self.sent = safe[len(self.sent):], safe
                self._delta(new)
        elif event.kind == "tokens" and event.data["phase"] == "reasoning":
            self._emit("reasoning", {"text": event.data["text"]}, delta={"reasoning_content": event.data["text"]})
        elif event.kind in ("prompt", "step"):
            self._emit(event.kind, event.data)

    def thought(self, image: Image.Image, measures: dict | None, cached: bool | None = None) -> None:
        """Stage I made the request's thought: a small preview of it (``cached`` only where the server
        reports thought-cache hits)."""
        data = {"preview": preview(image), "size": list(image.size), "measures": measures}
        if cached is not None:
            data["cached"] = cached
        self._emit("thought", data)

    def gate(self, decision: dict[str, Any]) -> None:
        self._emit("gate", decision)

    def _delta(self, text: str) -> None:
        if self.dialect == "rest":
            self._send(sse({"text": text}, "delta"))
        else:
            self._send(sse(self._chunk(delta={"content": text})))

    def _emit(self, kind: str, data: dict[str, Any], delta: dict[str, Any] | None = None) -> None:
        if self.dialect == "rest":
            self._send(sse(data, kind))
        else:
            self._send(sse(self._chunk(delta=delta or {}, g2u=None if delta else {"event": kind, **data})))

    def _chunk(self, **kwargs: Any) -> dict[str, Any]:
        return openai_api.chunk(self.request_id, self.model, self.created, **kwargs)

    def _send(self, text: str) -> None:
        if self.send is None:
            return
        if not self.started and self.dialect == "openai":  # OpenAI's first chunk names the role
            self.started = True
            self.send(sse(self._chunk(delta={"role": "assistant", "content": ""})))
        self.started = True
        self.send(text)

    # ------------------------------------------------------------------ the end
    def finish(self, status: int, body: dict[str, Any]) -> str:
        """The rest of the stream for the request's outcome: the answer not sent yet, the result (or the
        error), ``[DONE]``."""
        if status != 200:
            if self.dialect == "rest":
                return sse({**body, "status": status}, "error") + DONE
            return sse(body) + DONE  # the caller made it OpenAI's error shape
        answer = str(body.get("answer", ""))
        tail = ""
        if answer.startswith(self.sent):
            rest = answer[len(self.sent):]
        else:
            logger.warning("request %s: the streamed answer %r is not a prefix of the final one %r",
                           self.request_id, self.sent, answer)
            rest = ""
        if self.dialect == "rest":
            if rest:
                tail += sse({"text": rest}, "delta")
            return tail + sse(body, "result") + DONE
        if not self.started:
            tail += sse(self._chunk(delta={"role": "assistant", "content": ""}))
        if rest:
            tail += sse(self._chunk(delta={"content": rest}))
        tail += sse(self._chunk(delta={}, finish_reason=self.usage.finish_reason(),
                                g2u={"event": "result", "answer": answer, **openai_api.extension(body)}))
        if self.include_usage:
            tail += sse(self._chunk(usage=self.usage, choices=False))
        return tail + DONE


__all__ = ["DONE", "ProgressStream", "preview", "sse"]
