"""The prompt writers against a real HTTP server speaking the OpenAI chat-completions protocol on
loopback (the real `openai` client talks to it): success, cache, timeout, 429 + Retry-After, 5xx,
malformed output, leaks, no key, connection refused; the self writer; the writer inside the G→U loop."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from g2u.pipeline import G2UPipeline
from g2u.prompts import default_library
from g2u.requests import parse_request
from g2u.writers import WriterConfig, make_writer
from g2u.writers.base import load_exemplars

IMAGE = Image.new("RGB", (64, 48), (120, 30, 200))
GOOD = {"prompt": "Extend the picture to the left so the whole scene is visible.", "family": "extension"}


class FakeOpenAI:
    """Answers POST /v1/chat/completions from a script: each entry is one reply (status, body, headers,
    delay); the last entry repeats. Records every request's headers and JSON body."""

    def __init__(self):
        self.script: list[dict] = []
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": body})
                step = outer.script[min(len(outer.requests), len(outer.script)) - 1]
                time.sleep(step.get("delay", 0))
                payload = step.get("raw")
                if payload is None:
                    payload = json.dumps(step["error"] if "error" in step else completion(step["content"]))
                try:
                    self.send_response(step.get("status", 200))
                    for k, v in step.get("headers", {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload.encode())))
                    self.end_headers()
                    self.wfile.write(payload.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(content: str) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


@pytest.fixture
def server():
    fake = FakeOpenAI()
    yield fake
    fake.close()


def writer(server: FakeOpenAI, **overrides):
    settings = {"base_url": server.base_url, "api_key": "test-key", "timeout_s": 0.5, "max_retries": 2,
                "budget_s": 3.0, **overrides}
    return make_writer("openai", backend=None, library=default_library(), config=WriterConfig(**settings))


def test_success_sends_image_question_exemplars_and_key(server):
    server.script = [{"content": json.dumps(GOOD)}]
    out = writer(server).write(IMAGE, "What is left of the tree?", ["a car", "a dog"], None)
    assert not out.fallback and out.fallback_reason is None and out.writer == "openai"
    assert out.prompt.text == GOOD["prompt"] and out.prompt.family == "extension"
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions" and req["headers"]["authorization"] == "Bearer test-key"
    body = req["body"]
    assert body["model"] == "gpt-4o-mini" and body["response_format"] == {"type": "json_object"}
    k = len(load_exemplars().exemplars)
    assert len(body["messages"]) == 1 + 2 * k + 1  # system, K exemplar turns, the request
    last = body["messages"][-1]["content"]
    assert "What is left of the tree?" in last[0]["text"]
    assert last[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "a car" not in json.dumps(body)  # options are never sent to the writer


def test_cache_hit_makes_no_request(server):
    server.script = [{"content": json.dumps(GOOD)}]
    w = writer(server)
    first = w.write(IMAGE, "Where is the dog?", None, None)
    second = w.write(IMAGE, "Where is the dog?", None, None)
    assert len(server.requests) == 1 and second.prompt == first.prompt and not second.fallback
    w.write(IMAGE, "Where is the cat?", None, None)  # another question is another key
    assert len(server.requests) == 2


def test_slow_reply_past_the_timeout_falls_back_within_the_budget(server):
    server.script = [{"content": json.dumps(GOOD), "delay": 2.0}]
    start = time.monotonic()
    out = writer(server, timeout_s=0.3, max_retries=1, budget_s=1.0).write(IMAGE, "q?", None, "extension")
    elapsed = time.monotonic() - start
    assert out.fallback and "timeout" in out.fallback_reason
    assert out.prompt.family == "extension" and out.prompt.name  # the library prompt of the family
    assert elapsed < 1.0 + 0.5


def test_429_with_retry_after_is_honoured_then_succeeds(server):
    server.script = [{"status": 429, "headers": {"Retry-After": "1"}, "error": {"error": {"message": "slow down"}}},
                     {"content": json.dumps(GOOD)}]
    start = time.monotonic()
    out = writer(server, budget_s=5.0).write(IMAGE, "q?", None, None)
    assert not out.fallback and len(server.requests) == 2
    assert time.monotonic() - start >= 1.0


def test_429_with_retry_after_past_the_budget_falls_back_at_once(server):
    server.script = [{"status": 429, "headers": {"Retry-After": "30"}, "error": {"error": {"message": "later"}}}]
    start = time.monotonic()
    out = writer(server, budget_s=2.0).write(IMAGE, "q?", None, None)
    assert out.fallback and "429" in out.fallback_reason and "Retry-After 30" in out.fallback_reason
    assert time.monotonic() - start < 1.0 and len(server.requests) == 1


def test_500_is_retried(server):
    server.script = [{"status": 500, "error": {"error": {"message": "boom"}}}, {"content": json.dumps(GOOD)}]
    out = writer(server).write(IMAGE, "q?", None, None)
    assert not out.fallback and len(server.requests) == 2


def test_persistent_500_falls_back_after_bounded_retries(server):
    server.script = [{"status": 503, "error": {"error": {"message": "down"}}}]
    out = writer(server, max_retries=2).write(IMAGE, "q?", None, None)
    assert out.fallback and "HTTP 503" in out.fallback_reason and len(server.requests) == 3


@pytest.mark.parametrize("content, reason", [
    ("not json at all", "no JSON object"),
    ('{"prompt": "", "family": "extension"}', "'prompt'"),
    ('{"prompt": "Make it brighter.", "family": "surreal"}', "'family'"),
    ('{"prompt": "Make it', "no JSON object"),
])
def test_malformed_output_falls_back(server, content, reason):
    server.script = [{"content": content}]
    out = writer(server, max_retries=2).write(IMAGE, "q?", None, None)
    assert out.fallback and out.fallback_reason.startswith("malformed output") and reason in out.fallback_reason
    assert len(server.requests) == 1  # temperature 0: asking again would get the same reply


@pytest.mark.parametrize("prompt, options, answer", [
    ("Draw a red car next to the tree.", ["red car", "blue bike"], None),
    ("Highlight option B in the picture.", ["cat", "dog"], None),
    ("Make the zebra stand out.", None, "zebra"),
])
def test_leaking_prompt_is_replaced_by_the_library(server, prompt, options, answer):
    server.script = [{"content": json.dumps({"prompt": prompt, "family": "enhancement"})}]
    out = writer(server).write(IMAGE, "What is shown?", options, None, answer=answer)
    assert out.fallback and out.fallback_reason.startswith("leak:")
    assert out.prompt.text != prompt and out.prompt.family == "enhancement"


def test_no_key_falls_back_without_any_request(server):
    out = writer(server, api_key=None).write(IMAGE, "q?", None, "extension")
    assert out.fallback and "no API key" in out.fallback_reason and server.requests == []


def test_connection_refused_falls_back(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    w = make_writer("openai", backend=None, library=default_library(), config=WriterConfig(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="k", timeout_s=0.5, max_retries=1, budget_s=2.0))
    start = time.monotonic()
    out = w.write(IMAGE, "q?", None, None)
    assert out.fallback and "connection error" in out.fallback_reason and time.monotonic() - start < 2.5


def test_config_from_env_reads_standard_variables_and_names_bad_ones():
    cfg = WriterConfig.from_env({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://x/v1", "G2U_WRITER_MODEL": "m",
                                 "G2U_WRITER_BUDGET_S": "7.5", "G2U_WRITER_RETRIES": "1"})
    assert (cfg.api_key, cfg.base_url, cfg.model, cfg.budget_s, cfg.max_retries) == ("k", "http://x/v1", "m", 7.5, 1)
    with pytest.raises(ValueError, match="G2U_WRITER_TIMEOUT_S"):
        WriterConfig.from_env({"G2U_WRITER_TIMEOUT_S": "soon"})
    with pytest.raises(ValueError, match="G2U_WRITER_BUDGET_S"):
        WriterConfig.from_env({"G2U_WRITER_BUDGET_S": "-1"})


class ScriptedBackend:
    """Only what the self writer uses: ``answer``."""

    def __init__(self, reply: str):
        self.reply = reply
        self.seen = []

    def answer(self, contents, params):
        self.seen.append((contents, params))
        return [self.reply for _ in contents]


@pytest.mark.parametrize("reply, fallback, reason", [
    ('Sure. {"prompt": "Remove the haze and raise the contrast.", "family": "enhancement"}', False, None),
    ('{"prompt": "Write the answer B on the image.", "family": "extension"}', True, "leak:"),
    ("back<|fim_prefix|>econ inputrop", True, "malformed output"),
])
def test_self_writer(reply, fallback, reason):
    backend = ScriptedBackend(reply)
    out = make_writer("self", backend=backend, library=default_library()).write(IMAGE, "What is it?", None, None)
    assert out.writer == "self" and out.fallback is fallback
    assert (out.fallback_reason or "").startswith(reason or "")
    [(contents, params)] = backend.seen
    assert contents[0][0] is IMAGE and "What is it?" in contents[0][1] and "Examples:" in contents[0][1]
    assert params.max_new_tokens >= 64


def test_writer_result_surfaces_through_the_pipeline(server, demo_root, monkeypatch):
    server.script = [{"content": json.dumps(GOOD)}]
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    pipe = G2UPipeline.from_checkpoint(str(demo_root / "qwen_image_edit"))
    req = parse_request({"question": "What is left of the tree?", "writer": "openai", "steps": 2}, image=IMAGE)
    [result] = pipe([req])
    edit = result.thought.edit
    assert edit.writer == "openai" and edit.prompt == GOOD["prompt"] and edit.family == "extension"
    assert edit.writer_fallback is False
    server.script = [{"content": json.dumps({"prompt": "Paint option A bigger.", "family": "extension"})}]
    req = parse_request({"question": "Another question?", "writer": "openai", "steps": 2,
                         "options": ["x", "y"]}, image=IMAGE)
    [result] = pipe([req])
    assert result.thought.edit.writer_fallback is True and "leak" in result.thought.edit.writer_fallback_reason
