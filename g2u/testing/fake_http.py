"""One scripted HTTP server on loopback for tests, benchmarks and reliability runs: an OpenAI-compatible
chat-completions endpoint (replies, errors, Retry-After, malformed bodies), an endpoint that hangs, a
server that trickles its reply, a probe that only counts hits.

Written on the standard library's ``http.server`` on purpose: the writer tests need faults at the socket
level (a reply delayed past the client's timeout, a body dripped byte by byte, a refused connection
after ``close``) that a mocked transport cannot produce, and the real ``openai`` client must talk to it.
Delays wait on an event that ``close`` sets, so closing never waits for a hanging reply.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(content: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    """A chat-completions response body whose assistant message is ``content``."""
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def error(status: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A script step answering ``status`` with an OpenAI-style error body (and ``headers``, e.g. Retry-After)."""
    return {"status": status, "headers": headers or {}, "error": {"error": {"message": f"status {status}"}}}


class FakeHTTPServer:
    """Answers every GET and POST from ``script``: each entry is one reply, the last one repeats.

    A step may hold ``status`` (default 200), ``content`` (sent as a chat completion), ``error`` (a JSON
    body), ``raw`` (the body as is), ``headers``, ``delay`` (seconds before replying) and ``drip``
    (seconds between body bytes). Every request is recorded in ``requests`` as
    ``{"method", "path", "headers" (lower-case names), "body" (parsed JSON, raw text, or None)}``.
    """

    def __init__(self, script: list[dict[str, Any]] | None = None):
        self.script: list[dict[str, Any]] = script if script is not None else [{"content": "{}"}]
        self.requests: list[dict[str, Any]] = []
        self._closed = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms ACK stall

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                outer._answer(self)

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                outer._answer(self)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        """What an OpenAI client takes as ``base_url``."""
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def hits(self) -> int:
        return len(self.requests)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            self.requests.append({"method": handler.command, "path": handler.path, "body": body,
                                  "headers": {k.lower(): v for k, v in handler.headers.items()}})
            step = self.script[min(len(self.requests), len(self.script)) - 1]
        if step.get("delay") and self._closed.wait(step["delay"]):
            handler.close_connection = True
            return  # closed while hanging: the client sees its connection dropped
        payload = step.get("raw")
        if payload is None:
            payload = json.dumps(step["error"] if "error" in step else completion(step.get("content", "")))
        data = payload.encode() if isinstance(payload, str) else payload
        try:
            handler.send_response(step.get("status", 200))
            headers = step.get("headers", {})
            for k, v in headers.items():
                handler.send_header(k, v)
            if not any(k.lower() == "content-type" for k in headers):  # a step may send e.g. an event stream
                handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if step.get("drip"):
                for i in range(len(data)):
                    handler.wfile.write(data[i:i + 1])
                    handler.wfile.flush()
                    if self._closed.wait(step["drip"]):
                        handler.close_connection = True
                        return
            else:
                handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): expected

    def close(self) -> None:
        """Stop listening (later connections are refused) and release every hanging reply."""
        self._closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeHTTPServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def hanging_endpoint(hang_s: float = 60) -> FakeHTTPServer:
    """An OpenAI-compatible endpoint that answers nothing for ``hang_s`` (then 504); ``close`` makes it a
    refused connection: the prompt writer's 'hanging' and 'down' faults."""
    return FakeHTTPServer([{"status": 504, "raw": "", "delay": hang_s}])


def probe() -> FakeHTTPServer:
    """Answers 404 to everything and counts ``hits``: a server must never fetch a URL a request names."""
    return FakeHTTPServer([{"status": 404, "raw": ""}])
