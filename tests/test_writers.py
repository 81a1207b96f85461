"""The prompt writers against a real HTTP server speaking the OpenAI chat-completions protocol on
loopback (the real `openai` client talks to it): success, cache, timeout, trickle, 429 + Retry-After, 5xx,
4xx, malformed output, leaks, no key, connection refused; the exemplar loader and the config; the self
writer on a scripted backend; the writer inside the G→U loop. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from g2u.backends.base import BackendInfo
from g2u.pipeline import G2UPipeline
from g2u.prompts import default_library
from g2u.schema import parse_request
from g2u.writers import WriterConfig, load_exemplars, make_writer
from g2u.writers.openai_writer import retry_after_s
from g2u.writers.reply import MalformedOutput, parse_reply

IMAGE = Image.new("RGB", (64, 48), (120, 30, 200))
GOOD = {"prompt": "Extend the picture to the left so the whole scene is visible.", "family": "extension"}
LIBRARY = default_library()


class FakeOpenAI:
    """Answers POST /v1/chat/completions from a script: each entry is one reply (status, content or error or
    raw body, headers, delay before replying, drip = seconds between body bytes); the last entry repeats.
    Records every request's path, headers and JSON body."""

    def __init__(self):
        self.script: list[dict] = [{"content": json.dumps(GOOD)}]
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms ACK stall

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": body})
                step = outer.script[min(len(outer.requests), len(outer.script)) - 1]
                time.sleep(step.get("delay", 0))
                payload = step.get("raw")
                if payload is None:
                    payload = json.dumps(step["error"] if "error" in step else completion(step["content"]))
                data = payload.encode()
                try:
                    self.send_response(step.get("status", 200))
                    for k, v in step.get("headers", {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if step.get("drip"):
                        for i in range(len(data)):
                            self.wfile.write(data[i:i + 1])
                            self.wfile.flush()
                            time.sleep(step["drip"])
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(content: str) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def error(status: int, headers: dict | None = None) -> dict:
    return {"status": status, "headers": headers or {}, "error": {"error": {"message": f"status {status}"}}}


@pytest.fixture
def server():
    fake = FakeOpenAI()
    yield fake
    fake.close()


def writer(server: FakeOpenAI, **overrides):
    settings = {"base_url": server.base_url, "api_key": "test-key", "timeout_s": 0.5, "max_retries": 2,
                "budget_s": 3.0, **overrides}
    return make_writer("openai", backend=None, library=LIBRARY, config=WriterConfig(**settings))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: nothing listens there


# ---------------------------------------------------------------------------------------------- openai writer
def test_success_sends_image_question_exemplars_and_key_never_options(server):
    out = writer(server).write(IMAGE, "What is left of the tree?", ["a unicycle", "a walrus"], None)
    assert not out.fallback and out.fallback_reason is None and out.writer == "openai"
    assert out.prompt.text == GOOD["prompt"] and out.prompt.family == "extension" and out.prompt.name is None
    assert out.latency_ms > 0
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions" and req["headers"]["authorization"] == "Bearer test-key"
    body = req["body"]
    assert body["model"] == "gpt-4o-mini" and body["response_format"] == {"type": "json_object"}
    messages = body["messages"]
    k = len(load_exemplars().exemplars)
    assert k >= 6 and len(messages) == 1 + 2 * k + 1  # system, K exemplar turns, the request
    assert messages[0]["role"] == "system" and "JSON" in messages[0]["content"]
    shots = messages[1:-1]
    assert [m["role"] for m in shots] == ["user", "assistant"] * k
    assert {json.loads(m["content"])["family"] for m in shots[1::2]} == {"enhancement", "extension"}
    text, image = messages[-1]["content"]
    assert "What is left of the tree?" in text["text"]
    assert "unicycle" not in json.dumps(body) and "walrus" not in json.dumps(body)  # W(I, q): options never sent
    assert image["image_url"]["url"].startswith("data:image/png;base64,")


def test_requested_family_is_sent_and_enforced(server):
    server.script = [{"content": json.dumps({"prompt": "Sharpen the edges.", "family": "enhancement"})}]
    out = writer(server).write(IMAGE, "q?", None, "extension")
    assert "Family: extension" in server.requests[0]["body"]["messages"][-1]["content"][0]["text"]
    assert out.fallback and "'extension' was requested" in out.fallback_reason and out.prompt.family == "extension"


def test_cache_hit_makes_no_request(server):
    w = writer(server)
    first = w.write(IMAGE, "Where is the dog?", None, None)
    second = w.write(IMAGE.copy(), "Where is the dog?", None, None)  # same pixels, another object
    assert len(server.requests) == 1 and second.prompt == first.prompt and not second.fallback
    w.write(IMAGE, "Where is the cat?", None, None)  # another question is another key
    w.write(IMAGE, "Where is the dog?", ["left", "right"], None)  # options are not sent: still a hit
    w.write(Image.new("RGB", (64, 48), (0, 0, 0)), "Where is the dog?", None, None)  # and another image
    assert len(server.requests) == 3


def test_file_cache_survives_a_new_writer(server, tmp_path):
    writer(server, cache_dir=str(tmp_path)).write(IMAGE, "q?", None, None)
    [stored] = tmp_path.glob("*.json")
    assert json.loads(stored.read_text()) == GOOD
    out = writer(server, cache_dir=str(tmp_path)).write(IMAGE, "q?", None, None)
    assert not out.fallback and out.prompt.text == GOOD["prompt"] and len(server.requests) == 1
    stored.write_text("{not json")  # a corrupt entry is ignored, never trusted
    assert not writer(server, cache_dir=str(tmp_path)).write(IMAGE, "q?", None, None).fallback
    assert len(server.requests) == 2


def test_slow_reply_past_the_timeout_falls_back_within_the_budget(server):
    server.script = [{"content": json.dumps(GOOD), "delay": 3.0}]
    start = time.monotonic()
    out = writer(server, timeout_s=0.3, max_retries=5, budget_s=1.0).write(IMAGE, "q?", None, "extension")
    elapsed = time.monotonic() - start
    assert out.fallback and "timeout" in out.fallback_reason
    assert out.prompt.family == "extension" and out.prompt.name  # the library prompt of the family
    assert elapsed < 1.0 + 0.5


def test_trickling_reply_cannot_outlast_the_budget(server):
    # Each byte arrives well inside the read timeout, so only the hard per-attempt deadline stops it.
    server.script = [{"content": json.dumps(GOOD), "drip": 0.05}]
    start = time.monotonic()
    out = writer(server, timeout_s=0.4, max_retries=0, budget_s=0.8).write(IMAGE, "q?", None, None)
    assert out.fallback and "timeout" in out.fallback_reason and time.monotonic() - start < 0.8 + 0.5


def test_429_with_retry_after_is_honoured_then_succeeds(server):
    server.script = [error(429, {"Retry-After": "1"}), {"content": json.dumps(GOOD)}]
    start = time.monotonic()
    out = writer(server, budget_s=5.0).write(IMAGE, "q?", None, None)
    assert not out.fallback and len(server.requests) == 2
    assert time.monotonic() - start >= 0.95


def test_429_with_retry_after_past_the_budget_falls_back_at_once(server):
    server.script = [error(429, {"Retry-After": "30"})]
    start = time.monotonic()
    out = writer(server, budget_s=2.0).write(IMAGE, "q?", None, None)
    assert out.fallback and "429" in out.fallback_reason and "Retry-After 30" in out.fallback_reason
    assert time.monotonic() - start < 1.0 and len(server.requests) == 1


def test_500_is_retried(server):
    server.script = [error(500), {"content": json.dumps(GOOD)}]
    out = writer(server).write(IMAGE, "q?", None, None)
    assert not out.fallback and len(server.requests) == 2


def test_persistent_5xx_falls_back_after_bounded_retries(server):
    server.script = [error(503, {"Retry-After": "0.05"})]
    out = writer(server, max_retries=2).write(IMAGE, "q?", None, None)
    assert out.fallback and "HTTP 503" in out.fallback_reason and "3 attempts" in out.fallback_reason
    assert len(server.requests) == 3


def test_client_errors_are_not_retried(server):
    server.script = [error(401)]
    out = writer(server).write(IMAGE, "q?", None, None)
    assert out.fallback and out.fallback_reason == "HTTP 401" and len(server.requests) == 1


@pytest.mark.parametrize("step, reason", [
    ({"content": "not json at all"}, "no JSON object"),
    ({"content": '{"prompt": "", "family": "extension"}'}, "'prompt'"),
    ({"content": '{"prompt": "Make it brighter.", "family": "surreal"}'}, "'family'"),
    ({"content": '{"prompt": "Make it'}, "no JSON object"),
    ({"content": '["Make it brighter."]'}, "no JSON object"),
    ({"content": json.dumps({"prompt": "x" * 1001, "family": "extension"})}, "at most 1000"),
    ({"raw": '{"id": "x", "choices": []}'}, "choices"),
    ({"raw": "<html>gateway</html>"}, "malformed output"),
])
def test_malformed_output_falls_back_without_retrying(server, step, reason):
    server.script = [step]
    out = writer(server).write(IMAGE, "q?", None, None)
    assert out.fallback and out.fallback_reason.startswith("malformed output") and reason in out.fallback_reason
    assert out.prompt == LIBRARY.resolve(None, None, None) and len(server.requests) == 1


@pytest.mark.parametrize("prompt, options, answer", [
    ("Draw a red car next to the tree.", ["red car", "blue bike"], None),
    ("Highlight option B in the picture.", ["cat", "dog"], None),
    ("Make it clear that the answer is obvious.", None, None),
    ("Make the zebra stand out.", None, "zebra"),
])
def test_leaking_prompt_is_replaced_by_the_library(server, prompt, options, answer):
    server.script = [{"content": json.dumps({"prompt": prompt, "family": "extension"})}]
    out = writer(server).write(IMAGE, "What is shown?", options, None, answer=answer)
    assert out.fallback and out.fallback_reason.startswith("leak:")
    assert out.prompt == LIBRARY.default("extension")  # the written family's library prompt


def test_no_key_falls_back_without_any_request(server):
    out = writer(server, api_key=None).write(IMAGE, "q?", None, "extension")
    assert out.fallback and "no API key" in out.fallback_reason and server.requests == []
    assert out.prompt == LIBRARY.default("extension")


def test_connection_refused_falls_back():
    w = make_writer("openai", backend=None, library=LIBRARY, config=WriterConfig(
        base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key="k", timeout_s=0.5, max_retries=1, budget_s=2.0))
    start = time.monotonic()
    out = w.write(IMAGE, "q?", None, None)
    assert out.fallback and "connection error" in out.fallback_reason and time.monotonic() - start < 2.5


def test_retry_after_header_forms():
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 55 < retry_after_s({"retry-after": time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                            time.gmtime(time.time() + 60))}) <= 60
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None


# ---------------------------------------------------------------------------------------------- shared parts
def test_parse_reply_finds_the_object_and_tolerates_braces_in_strings():
    assert parse_reply('Here: {"prompt": "Fill the {empty} cell.", "family": "extension"} done') == (
        "Fill the {empty} cell.", "extension")
    assert parse_reply('{"prompt": "Sharpen it."}', "enhancement") == ("Sharpen it.", "enhancement")
    with pytest.raises(MalformedOutput, match="family"):
        parse_reply('{"prompt": "Sharpen it."}')
    assert parse_reply("Reply: Brighten the dark corner evenly.", None, plain_ok=True) == (
        "Brighten the dark corner evenly.", "enhancement")


def test_config_from_env_reads_standard_variables_and_names_bad_ones():
    cfg = WriterConfig.from_env({"OPENAI_API_KEY": "sk-secret", "OPENAI_BASE_URL": "http://x/v1",
                                 "G2U_WRITER_MODEL": "m", "G2U_WRITER_TIMEOUT_S": "4", "G2U_WRITER_BUDGET_S": "7.5",
                                 "G2U_WRITER_RETRIES": "1", "G2U_WRITER_EXEMPLARS": "/x.yaml"})
    assert (cfg.api_key, cfg.base_url, cfg.model, cfg.timeout_s, cfg.budget_s, cfg.max_retries, cfg.exemplars) == (
        "sk-secret", "http://x/v1", "m", 4.0, 7.5, 1, "/x.yaml")
    assert "sk-secret" not in repr(cfg)
    defaults = WriterConfig.from_env({})
    assert (defaults.model, defaults.timeout_s, defaults.max_retries, defaults.budget_s, defaults.api_key) == (
        "gpt-4o-mini", 10.0, 2, 20.0, None)
    for name, value in [("G2U_WRITER_TIMEOUT_S", "soon"), ("G2U_WRITER_BUDGET_S", "-1"),
                        ("G2U_WRITER_BUDGET_S", "inf"), ("G2U_WRITER_RETRIES", "1.5"), ("G2U_WRITER_RETRIES", "-2")]:
        with pytest.raises(ValueError, match=name):
            WriterConfig.from_env({name: value})


def test_exemplar_file_is_validated(tmp_path):
    default = load_exemplars()
    assert len(default.exemplars) >= 6 and {e.family for e in default.exemplars} == {"enhancement", "extension"}
    good = {"description": "d", "question": "q?", "prompt": "Sharpen the picture.", "family": "enhancement"}
    cases = [({"exemplars": []}, "non-empty"),
             ({"exemplars": [good, {**good, "family": "surreal"}]}, "entry 1: family"),
             ({"exemplars": [{**good, "question": ""}]}, "entry 0: field 'question'"),
             ({"exemplars": [{**good, "promt": "typo"}]}, "unknown field"),
             ({"exemplars": [{**good, "prompt": "Circle option B."}]}, "answer-like"),
             ({"exemplars": [{**good, "image": "missing.png"}]}, "does not exist")]
    for i, (data, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message) as info:
            load_exemplars(str(path))
        assert str(path) in str(info.value)
    IMAGE.save(tmp_path / "shot.png")
    path = tmp_path / "good.yaml"
    path.write_text(json.dumps({"exemplars": [{**good, "image": "shot.png"}]}))
    assert load_exemplars(str(path)).exemplars[0].image == tmp_path / "shot.png"


def test_exemplar_images_are_sent_as_pictures(server, tmp_path):
    IMAGE.save(tmp_path / "shot.png")
    path = tmp_path / "shots.yaml"
    path.write_text(json.dumps({"exemplars": [{"description": "d", "question": "q?", "prompt": "Sharpen it.",
                                               "family": "enhancement", "image": "shot.png"}]}))
    writer(server, exemplars=str(path)).write(IMAGE, "q?", None, None)
    shot = server.requests[0]["body"]["messages"][1]["content"]
    assert shot[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_unknown_writer_is_rejected():
    with pytest.raises(ValueError, match="unknown writer"):
        make_writer("library", backend=None, library=LIBRARY)


# ---------------------------------------------------------------------------------------------- self writer
class ScriptedBackend:
    """Only what the self writer uses: ``answer``."""

    def __init__(self, reply: str | Exception):
        self.reply = reply
        self.seen = []

    def answer(self, contents, params):
        self.seen.append((contents, params))
        if isinstance(self.reply, Exception):
            raise self.reply
        return [self.reply for _ in contents]


@pytest.mark.parametrize("reply, fallback, reason", [
    ('Sure. {"prompt": "Remove the haze and raise the contrast.", "family": "enhancement"}', False, None),
    ("Zoom in on the sign and sharpen its edges.\nThat should help.", False, None),
    ('{"prompt": "Write the answer B on the image.", "family": "extension"}', True, "leak:"),
    ('{"prompt": "Paint the dog larger.", "family": "extension"}', True, "leak:"),
    ("back<|fim_prefix|>econ inputrop", True, "malformed output"),
    ("con pict D b\ufffd)uske ex\ufffd that texru$po re? Whi\ufffd purple", True, "malformed output"),
    (RuntimeError("CUDA out of memory"), True, "backend error: RuntimeError"),
])
def test_self_writer(reply, fallback, reason):
    backend = ScriptedBackend(reply)
    out = make_writer("self", backend=backend, library=LIBRARY, config=WriterConfig()).write(
        IMAGE, "What is it?", ["cat", "dog"], None)
    assert out.writer == "self" and out.fallback is fallback
    assert (out.fallback_reason or "").startswith(reason or "")
    [(contents, params)] = backend.seen
    assert contents[0][0] is IMAGE and "What is it?" in contents[0][1] and "Examples:" in contents[0][1]
    assert "cat" not in contents[0][1].split("Now the attached image.")[1] and params.max_new_tokens == 96
    if fallback:
        assert out.prompt.name in LIBRARY.prompts


# ---------------------------------------------------------------------------------------------- in the loop
class FakeBackend:
    """The Backend protocol at its smallest: stage I returns the input resized, stage II says 'A'."""

    info = BackendInfo("fake", "none", True, "cpu", "float32")
    size_multiple = 16
    default_edit_area = 32 * 32
    extra_modes = ()

    def __init__(self):
        self.edit_prompts: list[str] = []

    def edit(self, images, prompts, params):
        self.edit_prompts += list(prompts)
        return [img.resize(p.size) for img, p in zip(images, params)]

    def validate_edit(self, params) -> None:
        pass

    def answer(self, contents, params):
        return ["A" for _ in contents]


def test_writer_result_surfaces_through_the_pipeline(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("G2U_WRITER_TIMEOUT_S", "0.5")
    backend = FakeBackend()
    pipe = G2UPipeline(backend)
    [result] = pipe([parse_request({"question": "What is left of the tree?", "writer": "openai"}, image=IMAGE)])
    edit = result.thought.edit
    assert edit.writer == "openai" and edit.prompt == GOOD["prompt"] and edit.family == "extension"
    assert edit.prompt_name is None and edit.writer_fallback is False and edit.writer_fallback_reason is None
    assert backend.edit_prompts == [GOOD["prompt"]] and result.timings_ms["write_prompt"] > 0

    server.script = [{"content": json.dumps({"prompt": "Paint option A bigger.", "family": "extension"})}]
    req = parse_request({"question": "Another question?", "writer": "openai", "options": ["x", "y"]}, image=IMAGE)
    out = pipe([req])[0].to_dict()["edit"]
    assert out["writer"] == "openai" and out["writer_fallback"] is True and out["writer_fallback_reason"].startswith(
        "leak:")
    assert out["prompt"] == LIBRARY.default("extension").text and backend.edit_prompts[-1] == out["prompt"]
