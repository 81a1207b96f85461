"""Added latency of each prompt-writer path (success, cache hit, every fallback), against the loopback
OpenAI-compatible fake of g2u.testing.fake_http. Prints numbers; it is not a test.

    python load_tests/bench_writers.py
"""

from __future__ import annotations

import json
import socket
import sys
import time

from PIL import Image

from g2u.prompts import default_library
from g2u.testing.fake_http import FakeHTTPServer
from g2u.writers import WriterConfig, make_writer

IMAGE = Image.new("RGB", (64, 48), (120, 30, 200))
GOOD = {"prompt": "Extend the picture to the left so the whole scene is visible.", "family": "extension"}

SETTINGS = {"api_key": "k", "timeout_s": 1.0, "max_retries": 2, "budget_s": 4.0}


def writer(base_url: str, **overrides):
    return make_writer("openai", None, default_library(), WriterConfig(base_url=base_url, **{**SETTINGS, **overrides}))


def run(label: str, w, question: str = "q?") -> None:
    start = time.perf_counter()
    out = w.write(IMAGE, question, None, None)
    ms = (time.perf_counter() - start) * 1000
    print(f"{label:<44} {ms:8.1f} ms  fallback={out.fallback} {out.fallback_reason or ''}")


def main() -> int:
    srv = FakeHTTPServer([{"content": json.dumps(GOOD)}])
    print(f"timeout {SETTINGS['timeout_s']} s, retries {SETTINGS['max_retries']}, budget {SETTINGS['budget_s']} s")
    scenarios = [
        ("500 then success", [{"status": 500, "error": {}}, {"content": json.dumps(GOOD)}]),
        ("persistent 503", [{"status": 503, "error": {}}]),
        ("429 Retry-After 1 s, then success",
         [{"status": 429, "headers": {"Retry-After": "1"}, "error": {}}, {"content": json.dumps(GOOD)}]),
        ("429 Retry-After 30 s (past the budget)", [{"status": 429, "headers": {"Retry-After": "30"}, "error": {}}]),
        ("hanging endpoint", [{"content": json.dumps(GOOD), "delay": 10}]),
        ("malformed output", [{"content": "oops"}]),
        ("leaking prompt", [{"content": json.dumps({"prompt": "Make option B red.", "family": "extension"})}]),
    ]
    srv.script = [{"content": json.dumps(GOOD)}]
    w = writer(srv.base_url)
    run("success (first call)", w, "q1")
    run("success (another question)", w, "q2")
    run("cache hit", w, "q1")
    run("no API key", writer(srv.base_url, api_key=None))
    for label, script in scenarios:
        srv.requests.clear()
        srv.script = script
        run(label, writer(srv.base_url))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run("connection refused", writer(f"http://127.0.0.1:{port}/v1"))
    srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
