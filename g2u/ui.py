"""``g2u ui``: a small web page against a running endpoint (``make serve``), to see a G→U answer.

In: an image, a question, options, the mode and an edit prompt. Out: the original, the thought, the
answer, the per-stage timings, and whether the model is a demo. The page (``g2u/data/ui/index.html``,
plain HTML and JavaScript) posts JSON to this process, which forwards it to the endpoint with the
inference key — read from TorchServe's ``key_file.json`` at every call (keys rotate) and re-read once when
refused — so the key never reaches the browser and the endpoint needs no CORS. A reply sent as a stream
(``text/event-stream`` or NDJSON: progress events, then the result) is passed through as it arrives and the
page shows each event; a plain JSON reply gets a spinner until it comes.

Why not gradio (BAGEL's own app uses it): it would add a web framework and its front-end bundle to the
install for one form; this page is one file and the standard library's ``http.server``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import requests

DEFAULT_ENDPOINT = "http://127.0.0.1:8080/predictions/g2u"
DEFAULT_PORT = 7860
MAX_BODY = 64 * 2**20
STREAM_TYPES = ("text/event-stream", "application/x-ndjson", "application/jsonl")


def page_html() -> bytes:
    return resources.files("g2u").joinpath("data/ui/index.html").read_bytes()


class Endpoint:
    """Where predictions go, and the key they carry (``token`` fixed, else ``key_file`` read per call)."""

    def __init__(self, url: str, key_file: Path | None = None, token: str | None = None, stream: bool = False,
                 timeout: float = 900):
        self.url, self.key_file, self.token, self.stream, self.timeout = url, key_file, token, stream, timeout

    def key(self) -> str | None:
        if self.token:
            return self.token
        if self.key_file and self.key_file.is_file():
            return json.loads(self.key_file.read_text())["inference"]["key"]
        return None

    def post(self, body: bytes) -> requests.Response:
        for attempt in (0, 1):
            key = self.key()
            headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
            if key:
                headers["Authorization"] = f"Bearer {key}"
            r = requests.post(self.url, data=body, headers=headers, timeout=self.timeout, stream=True)
            refused = r.status_code in (400, 401) and "InvalidKeyException" in r.text
            if not refused or attempt or self.token:
                return r
            r.close()  # a rotated key: key_file.json has the new one
        return r


def make_handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path in ("/", "/index.html"):
                self._send(200, page_html(), "text/html; charset=utf-8")
            elif self.path == "/api/config":
                config = {"endpoint": endpoint.url, "stream": endpoint.stream, "has_key": endpoint.key() is not None}
                self._send(200, json.dumps(config).encode(), "application/json")
            else:
                self._send(404, b'{"error": "not_found"}', "application/json")

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            if self.path != "/api/predict":
                self._send(404, b'{"error": "not_found"}', "application/json")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, b'{"error": "too_large", "field": "image", "reason": "over 64 MiB"}',
                           "application/json")
                return
            body = self.rfile.read(length)
            if endpoint.stream:
                fields = json.loads(body)
                fields["stream"] = True
                body = json.dumps(fields).encode()
            try:
                r = endpoint.post(body)
            except requests.RequestException as exc:
                reason = f"cannot reach {endpoint.url}: {type(exc).__name__} (is `make serve` running?)"
                self._send(502, json.dumps({"error": "endpoint", "reason": reason}).encode(), "application/json")
                return
            content_type = r.headers.get("Content-Type", "application/json")
            if content_type.split(";")[0].strip() not in STREAM_TYPES:
                self._send(r.status_code, r.content, content_type)
                return
            # A stream: pass each chunk through as it arrives (chunked transfer to the page).
            self.send_response(r.status_code)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            try:
                for chunk in r.iter_content(chunk_size=None):
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                r.close()

    return Handler


class UIServer:
    """The page and its proxy on ``host:port`` (port 0: a free one), served from a background thread."""

    def __init__(self, endpoint: Endpoint, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        self.httpd = ThreadingHTTPServer((host, port), make_handler(endpoint))
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self) -> UIServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> UIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def add_command(sub: Any) -> None:
    u = sub.add_parser("ui", help="a web page against a running endpoint: image and question in; "
                                  "original, thought, answer, timings out")
    u.add_argument("--endpoint", default=os.environ.get("G2U_ENDPOINT", DEFAULT_ENDPOINT),
                   help=f"predictions URL (default: $G2U_ENDPOINT or {DEFAULT_ENDPOINT})")
    u.add_argument("--key-file", dest="key_file", type=Path, default=Path("key_file.json"),
                   help="TorchServe's key file, read at every call (default: ./key_file.json)")
    u.add_argument("--token", default=os.environ.get("G2U_TOKEN"), help="a fixed inference key instead")
    u.add_argument("--stream", action="store_true", help="ask the endpoint for streamed progress (stream: true)")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=DEFAULT_PORT)
    u.set_defaults(func=_ui)


def _ui(args: Any) -> int:
    endpoint = Endpoint(args.endpoint, key_file=args.key_file, token=args.token, stream=args.stream)
    server = UIServer(endpoint, args.host, args.port)
    print(f"g2u ui: {server.url}  →  {args.endpoint}"
          + ("" if endpoint.key() else f"  (no key: {args.key_file} not found and no --token)"), flush=True)
    try:
        server.httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    print("g2u ui stopped", file=sys.stderr)
    return 0
