"""The prompt writers against a real HTTP server speaking the OpenAI chat-completions protocol on
loopback (the real `openai` client talks to it): success, cache, timeout, trickle, 429 + Retry-After, 5xx,
4xx, malformed output, leaks, no key, connection refused; the exemplar loader and the config; the self
writer on a scripted backend; the writer inside the G→U loop. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time

import pytest
from PIL import Image

from g2u.backends.base import BackendBase, BackendInfo
from g2u.pipeline import G2UPipeline
from g2u.prompts import default_library
from g2u.schema import parse_request
from g2u.testing.fake_http import FakeHTTPServer, error
from g2u.types import Answer
from g2u.writers import WriterConfig, load_exemplars, make_writer
from g2u.writers.openai_writer import BACKOFF_S, OpenAIWriter, retry_after_s
from g2u.writers.reply import MalformedOutput, parse_reply

IMAGE = Image.new("RGB", (64, 48), (120, 30, 200))
GOOD = {"prompt": "Extend the picture to the left so the whole scene is visible.", "family": "extension"}
LIBRARY = default_library()


@pytest.fixture
def server():
    with FakeHTTPServer([{"content": json.dumps(GOOD)}]) as fake:
        yield fake


def recording_writer(server: FakeHTTPServer, **overrides) -> tuple[OpenAIWriter, list[float]]:
    """An openai writer whose waits between attempts (back-off, Retry-After) are recorded, not slept."""
    waits: list[float] = []
    settings = {"base_url": server.base_url, "api_key": "test-key", "timeout_s": 0.5, "max_retries": 2,
                "budget_s": 3.0, **overrides}
    return OpenAIWriter(LIBRARY, WriterConfig(**settings), sleep=waits.append), waits


def writer(server: FakeHTTPServer, **overrides) -> OpenAIWriter:
    return recording_writer(server, **overrides)[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: nothing listens there


# ---------------------------------------------------------------------------------------------- openai writer
def test_success_sends_image_question_exemplars_and_key_never_options(server):
    w = make_writer("openai", backend=None, library=LIBRARY,
                    config=WriterConfig(base_url=server.base_url, api_key="test-key"))
    out = w.write(IMAGE, "What is left of the tree?", ["a unicycle", "a walrus"], None)
    assert not out.fallback and out.fallback_reason is None and out.writer == "openai"
    assert out.prompt.text == GOOD["prompt"] and out.prompt.family == "extension" and out.prompt.name is None
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
    server.script = [{"content": json.dumps(GOOD), "delay": 60}]  # released when the server closes
    start = time.monotonic()
    out = writer(server, timeout_s=0.3, max_retries=5, budget_s=1.0).write(IMAGE, "q?", None, "extension")
    assert out.fallback and "timeout" in out.fallback_reason
    assert out.prompt.family == "extension" and out.prompt.name  # the library prompt of the family
    # The budget, not max_retries, ends it: 1.0 s of 0.3 s attempts starts at most 4 of the 6 allowed.
    assert 1 <= len(server.requests) <= 4
    assert time.monotonic() - start < 30  # hang guard only: the writer never waited for the 60 s reply


def test_trickling_reply_cannot_outlast_the_budget(server):
    # Each byte arrives well inside the read timeout, so only the hard per-attempt deadline stops it.
    server.script = [{"content": json.dumps(GOOD), "drip": 0.05}]  # the whole body would take ~15 s
    start = time.monotonic()
    out = writer(server, timeout_s=0.4, max_retries=0, budget_s=0.8).write(IMAGE, "q?", None, None)
    assert out.fallback and "timeout" in out.fallback_reason and len(server.requests) == 1
    assert time.monotonic() - start < 10  # hang guard only: the writer did not read the trickle to its end


def test_429_with_retry_after_is_honoured_then_succeeds(server):
    server.script = [error(429, {"Retry-After": "1"}), {"content": json.dumps(GOOD)}]
    w, waits = recording_writer(server, budget_s=30.0)
    out = w.write(IMAGE, "q?", None, None)
    assert not out.fallback and len(server.requests) == 2
    assert waits == [pytest.approx(1.0, abs=0.01)]  # the server's wait, not our own back-off


def test_429_with_retry_after_past_the_budget_falls_back_at_once(server):
    server.script = [error(429, {"Retry-After": "30"})]
    w, waits = recording_writer(server, budget_s=2.0)
    out = w.write(IMAGE, "q?", None, None)
    assert out.fallback and "429" in out.fallback_reason and "Retry-After 30" in out.fallback_reason
    assert waits == [] and len(server.requests) == 1  # no wait that could not end inside the budget


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


def test_connection_refused_is_retried_after_a_back_off_then_falls_back():
    waits: list[float] = []
    w = OpenAIWriter(LIBRARY, WriterConfig(base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key="k",
                                           timeout_s=0.5, max_retries=1, budget_s=30.0), sleep=waits.append)
    out = w.write(IMAGE, "q?", None, None)
    assert out.fallback and "connection error" in out.fallback_reason and "after 2 attempts" in out.fallback_reason
    assert len(waits) == 1 and BACKOFF_S <= waits[0] <= BACKOFF_S * 1.25  # one jittered back-off between


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
        return [Answer(self.reply) for _ in contents]


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
class FakeBackend(BackendBase):
    """The Backend protocol at its smallest: stage I returns the input resized, stage II says 'A'."""

    info = BackendInfo("fake", "none", True, "cpu", "float32")
    size_multiple = 16
    default_edit_area = 32 * 32

    def __init__(self):
        self.edit_prompts: list[str] = []

    def edit_group(self, images, prompts, params):
        self.edit_prompts += list(prompts)
        return [img.resize(p.size) for img, p in zip(images, params)]

    def validate_edit(self, params) -> None:
        pass

    def answer(self, contents, params):
        return [Answer("A") for _ in contents]


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
