"""The serving benchmark's load driver: every request is sent exactly once across the clients, the
numbers it reports come from the answers it got, and failed requests are reported, not averaged in."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from handler.bench_overhead import p95, throughput


def _server(status: int):
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Authorization"])
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, seen


def test_throughput_sends_each_request_once_with_the_token():
    srv, seen = _server(200)
    try:
        url = f"http://127.0.0.1:{srv.server_port}/predictions/g2u"
        row = throughput(url, "k3y", b"png", {"question": "q"}, clients=3, requests_total=7)
    finally:
        srv.shutdown()
    assert row["requests"] == 7 and len(seen) == 7
    assert set(seen) == {"Bearer k3y"}
    assert row["req_per_min"] > 0 and row["p95_ms"] >= row["p50_ms"] > 0


def test_failed_requests_are_reported():
    srv, _ = _server(503)
    try:
        url = f"http://127.0.0.1:{srv.server_port}/predictions/g2u"
        with pytest.raises(RuntimeError, match="3 failed requests, first: 503"):
            throughput(url, "k", b"png", {}, clients=2, requests_total=3)
    finally:
        srv.shutdown()


def test_p95_of_a_known_sample():
    assert p95(list(range(1, 21))) == pytest.approx(19.05)
    assert p95([7.0]) == 7.0
