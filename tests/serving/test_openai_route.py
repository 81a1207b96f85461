"""The OpenAI-compatible route and streamed responses, in process: the translation of OpenAI chat bodies,
the progress hooks (``g2u.progress``), and the handler answering mixed batches (REST, REST streamed, chat,
chat streamed, models) with TorchServe's own Context, its intermediate-response encoder writing to a
socket stand-in. The same route through a real TorchServe and the official ``openai`` client:
tests/serving/test_serving.py (e2e)."""

from __future__ import annotations

import base64
import io
import json
import struct
import sys
from pathlib import Path

import pytest
from PIL import Image

from g2u import openai_api, progress
from g2u.openai_api import OpenAIError, parse_chat
from g2u.streaming import ProgressStream

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("ts")


def data_url(size=(96, 64), color=(200, 40, 90)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def chat_body(question="What is in the picture?", url=None, **extra) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": url or data_url()}}, {"type": "text", "text": question}]
    return {"model": "g2u", "messages": [{"role": "user", "content": parts}], **extra}


# ---------------------------------------------------------------- translation
def test_chat_fields_map_onto_the_schema():
    call = parse_chat(chat_body(max_tokens=7, seed=3, steps=2, options=["a", "b"], mode="replace",
                                stream=True, stream_options={"include_usage": True}, temperature=0, n=1), "g2u")
    assert call.fields["question"] == "What is in the picture?" and call.fields["image"].startswith("data:image/png")
    assert {k: call.fields[k] for k in ("max_new_tokens", "seed", "steps", "options", "mode")} == {
        "max_new_tokens": 7, "seed": 3, "steps": 2, "options": ["a", "b"], "mode": "replace"}
    assert call.stream and call.include_usage and "stream" not in call.fields
    assert call.param("max_new_tokens") == "max_tokens"
    assert call.param("image") == "messages[0].content[0].image_url.url"
    assert parse_chat(chat_body(max_completion_tokens=9), "g2u").fields["max_new_tokens"] == 9
    text_only_parts = chat_body()
    text_only_parts["messages"][0]["content"].insert(0, {"type": "text", "text": "Look."})
    assert parse_chat(text_only_parts, "g2u").fields["question"] == "Look.\nWhat is in the picture?"


@pytest.mark.parametrize("body, status, param, words", [
    (chat_body(url="https://example.com/cat.png"), 400, "messages[0].content[0].image_url.url", "never fetches https"),
    (chat_body(url="/etc/passwd"), 400, "messages[0].content[0].image_url.url", "only data URLs"),
    (chat_body(temperature=0.7), 400, "temperature", "greedily"),
    (chat_body(n=2), 400, "n", "only 1"),
    (chat_body(top_p=0.5), 400, "top_p", "only 1.0"),
    (chat_body(stop=["\n"]), 400, "stop", "not supported"),
    (chat_body(stepz=3), 400, "stepz", "unknown parameter"),
    ({**chat_body(), "question": "again"}, 400, "question", "comes from the messages"),
    (chat_body(max_tokens=4, max_new_tokens=5), 400, "max_new_tokens", "one answer budget"),
    (chat_body(max_tokens=0), 400, "max_tokens", "greater than or equal to 1"),
    ({**chat_body(), "model": "gpt-4o"}, 404, "model", "does not exist"),
    ({"model": "g2u", "messages": [{"role": "system", "content": "Be nice."}, *chat_body()["messages"]]}, 400,
     "messages[0].role", "system messages are not read"),
    ({"model": "g2u", "messages": [{"role": "user", "content": "no image"}]}, 400, "messages[0].content",
     "exactly one image_url"),
    ({"model": "g2u", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     "messages[0].content[0].image_url.url", "Field required"),
], ids=lambda v: v if isinstance(v, (str, int)) else None)
def test_bad_chat_bodies_are_refused_in_openai_shape(body, status, param, words):
    with pytest.raises(OpenAIError) as info:
        parse_chat(body, "g2u")
    err = info.value
    assert (err.status, err.param) == (status, param)
    shaped = err.body()["error"]
    assert set(shaped) == {"message", "type", "param", "code"} and words in shaped["message"]
    assert shaped["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_completion_is_an_openai_chat_completion():
    from openai.types.chat import ChatCompletion

    usage = openai_api.Usage()
    usage.add({"phase": "answer", "prompt_tokens": 50, "completion_tokens": 6, "stopped": False})
    usage.add({"phase": "gate", "prompt_tokens": 40, "completion_tokens": 2, "stopped": True})
    usage.add({"phase": "answer", "prompt_tokens": 50, "completion_tokens": 3, "stopped": True, "streamed": False})
    body = {"answer": "a cat", "mode": "g2u", "edit": {"steps": 2}, "measures": {"ssim": 0.5},
            "fidelity": {"ssim": 0.5}, "timings_ms": {"total": 1.0}}
    reply = ChatCompletion.model_validate(openai_api.completion("r1", "g2u", body, usage))
    assert reply.choices[0].message.content == "a cat" and reply.choices[0].finish_reason == "length"
    # every decode counts; the finish reason is the request's own answer's, not a candidate's
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (140, 11, 151)
    assert reply.g2u == {"mode": "g2u", "edit": {"steps": 2}, "measures": {"ssim": 0.5}, "timings_ms": {"total": 1.0}}


# ---------------------------------------------------------------- progress hooks
def test_tokens_reach_only_their_rows_listener_and_hold_incomplete_characters():
    heard: dict[str, list] = {"a": [], "b": []}
    plans = [object(), object(), object()]
    table = {0: "h", 1: "é", 2: "!"}  # token 1 is "é", sent in two halves (bytes of one character)
    halves = {10: b"\xc3", 11: b"\xa9"}

    def decode(ids):
        raw = b"".join(halves.get(i, table.get(i, "?").encode()) for i in ids)
        return raw.decode("utf-8", errors="replace")

    with progress.listening([(plans[0], heard["a"].append), (plans[2], heard["b"].append)]):
        with progress.rows(plans, "answer", stream=[True, True, False]):
            stream = progress.token_stream(decode, stop_ids=[99])
            stream.prompt([5, 6, 7])
            for tokens in ([0, 0, 2], [10, 99, 2], [11, 0, 99], [99, 0, 0]):
                stream.put(tokens)
            stream.end()
    texts = [e.data["text"] for e in heard["a"] if e.kind == "tokens"]
    assert texts == ["h", "é"]  # the half character is held back until it is whole
    assert [e.data for e in heard["a"] if e.kind == "usage"] == [
        {"phase": "answer", "prompt_tokens": 5, "completion_tokens": 3, "stopped": True, "streamed": True}]
    assert not [e for e in heard["b"] if e.kind == "tokens"]  # a row not streamed: counted only
    assert [e.data["completion_tokens"] for e in heard["b"] if e.kind == "usage"] == [2]


def test_steps_of_a_group_reach_its_requests_once_each():
    heard: list = []
    a, b = object(), object()
    with progress.listening([(a, heard.append)]):
        with progress.rows([a, a, b], "edit"):  # two candidate rows of one request, one of another
            progress.step(1, 4)
            with progress.subset([2]):  # a group holding only b's row
                progress.step(1, 4)
    assert [e.data for e in heard] == [{"stage": "edit", "step": 1, "total": 4}]


def test_without_a_listener_nothing_is_hooked(demo_root):
    """Plain requests pay nothing: no streamer in ``generate``, no callbacks."""
    from transformers import AutoTokenizer

    from g2u.backends.qwen_vl import answer_generate_kwargs
    from g2u.schema import answer_params

    tokenizer = AutoTokenizer.from_pretrained(demo_root / "qwen_image_edit" / "tokenizer")

    class Model:
        generation_config = type("C", (), {"pad_token_id": 0})()

    assert "streamer" not in answer_generate_kwargs(Model(), tokenizer, answer_params())
    assert progress.token_stream(str, []) is None and progress.diffusers_callback(3) is None
    with progress.listening([(object(), print)]), progress.rows([object()], "answer"):  # someone else's plan
        assert "streamer" not in answer_generate_kwargs(Model(), tokenizer, answer_params())


# ---------------------------------------------------------------- the handler, in process
class FakeSocket:
    """Where TorchServe's worker writes its responses: records the intermediate ones."""

    def __init__(self):
        self.frames: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.frames.append(bytes(data))


def decode_frame(frame: bytes) -> list[dict]:
    """TorchServe's predict-response frame (ts/protocol/otf_message_handler.create_predict_response)."""
    pos = 0

    def integer() -> int:
        nonlocal pos
        (value,) = struct.unpack("!i", frame[pos:pos + 4])
        pos += 4
        return value

    def text() -> bytes:
        nonlocal pos
        n = integer()
        pos += n
        return frame[pos - n:pos]

    integer(), text()  # code, message
    out = []
    while True:
        n = integer()
        if n == -1:
            return out
        pos += n
        rid = frame[pos - n:pos].decode()
        ctype, status, _phrase = text().decode(), integer(), text()
        headers = {text().decode(): text().decode() for _ in range(integer())}
        out.append({"id": rid, "content_type": ctype, "status": status, "headers": headers, "body": text().decode()})


def sse_events(text: str) -> list[tuple[str | None, str]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines.get("event"), lines["data"]))
    return events


@pytest.fixture(scope="module")
def handler(demo_root):
    import yaml
    from ts.context import Context
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    sys.path.insert(0, str(ROOT / "handler"))
    try:
        from g2u_handler import G2UHandler
    finally:
        sys.path.remove(str(ROOT / "handler"))
    cfg = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())
    cfg["handler"]["checkpoint"] = str(demo_root / "qwen_image_edit")
    metrics = MetricsCacheYamlImpl(str(ROOT / "handler" / "metrics.yaml"))
    metrics.initialize_cache()
    context = Context("g2u", str(ROOT), {}, 4, None, "0.12.0", metrics=metrics, model_yaml_config=cfg)
    h = G2UHandler()
    h.initialize(context)
    return h, context


def run(handler, rows: list[tuple[str, dict]], grpc: bool = False):
    """Handle one batch of (url_path, row); returns per request (status, content type, its whole body: the
    parts sent while the batch ran, then the final one) and the parts as TorchServe encodes them."""
    from ts.context import RequestProcessor

    h, context = handler
    # TorchServe's REST frontend sends every request an ``explain`` header (gRPC sends none)
    context.request_processor = [RequestProcessor({} if grpc else {"url_path": path, "explain": "False"})
                                 for path, _ in rows]
    context.request_ids = {i: f"req-{i}" for i in range(len(rows))}
    context.metrics.set_request_ids(context.request_ids)
    context.cl_socket = FakeSocket()
    out = h.handle([row for _, row in rows], context)
    sent = [p for f in context.cl_socket.frames for p in decode_frame(f)]
    finals = [(context.get_response_status(i)[0], context.get_response_content_type(i),
               "".join(p["body"] for p in sent if p["id"] == f"req-{i}") + body) for i, body in enumerate(out)]
    return finals, sent


CHAT = "v1/chat/completions"
FAST = {"steps": 2, "max_tokens": 6}


def test_a_mixed_batch_streams_only_its_streamed_requests_and_streaming_changes_no_answer(handler):
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    url = data_url()
    rest = {"image": url, "question": "What is in the picture?", "steps": 2, "max_new_tokens": 6}
    rows = [(CHAT, {"body": chat_body(url=url, **FAST)}),
            (CHAT, {"body": chat_body(url=url, stream=True, stream_options={"include_usage": True}, **FAST)}),
            ("", {"body": {**rest, "stream": True}}),
            ("", {"body": rest}),
            ("v1/models", {"body": b""})]
    finals, sent = run(handler, rows)
    assert [(s, c.split(";")[0]) for s, c, _ in finals] == [(200, "application/json"), (200, "text/event-stream"),
                                                              (200, "text/event-stream"), (200, "application/json"),
                                                              (200, "application/json")]
    # Only the two streamed requests sent events while the model worked (v1/models, answered without the
    # model, left early as one JSON part), each part as TorchServe's stream protocol needs.
    streamed = {p["id"] for p in sent if p["content_type"].startswith("text/event-stream")}
    assert streamed == {"req-1", "req-2"} and {p["id"] for p in sent} - streamed == {"req-4"}
    assert all(p["headers"]["ts_stream_next"] == "true" for p in sent)
    assert all(p["headers"]["X-Accel-Buffering"] == "no" for p in sent if p["id"] in streamed)
    assert sum(p["id"] == "req-1" for p in sent) >= 4  # role, prompt, steps, thought, tokens: as they happen

    plain = ChatCompletion.model_validate(json.loads(finals[0][2]))
    answer = json.loads(finals[3][2])["answer"]
    assert plain.choices[0].message.content == answer  # the chat route is the REST path, translated
    assert plain.usage.completion_tokens == 6 and plain.usage.prompt_tokens > 0
    assert plain.choices[0].finish_reason == "length"  # the demo's random weights never say stop in 6 tokens
    assert plain.g2u["edit"]["steps"] == 2 and "measures" in plain.g2u and "answer" not in plain.g2u

    # The streamed chat: role first, progress in g2u, the deltas add up to the same answer, usage at the end.
    stream_text = finals[1][2]
    events = sse_events(stream_text)
    assert events[-1] == (None, "[DONE]")
    chunks = [ChatCompletionChunk.model_validate(json.loads(d)) for _, d in events[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    progress_events = [c.g2u["event"] for c in chunks if getattr(c, "g2u", None)]
    assert progress_events[:4] == ["prompt", "step", "step", "thought"] and progress_events[-1] == "result"
    assert [c.g2u["step"] for c in chunks if getattr(c, "g2u", None) and c.g2u["event"] == "step"] == [1, 2]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage

    # The streamed REST request: named events, the result body as without stream.
    rest_events = sse_events(finals[2][2])
    names = [e for e, _ in rest_events]
    assert names[:4] == ["prompt", "step", "step", "thought"] and names[-2:] == ["result", None]
    assert "".join(json.loads(d)["text"] for e, d in rest_events if e == "delta") == answer
    result = json.loads(rest_events[-2][1])
    assert result["answer"] == answer and result["edit"] == json.loads(finals[3][2])["edit"]
    preview = json.loads(next(d for e, d in rest_events if e == "thought"))
    thumb = Image.open(io.BytesIO(base64.b64decode(preview["preview"])))
    assert max(thumb.size) <= 64 and preview["size"] == list(result["edit"]["size"])

    models = json.loads(finals[4][2])
    assert [m["id"] for m in models["data"]] == ["g2u"] and models["object"] == "list"


def test_errors_before_and_after_the_stream_started(handler):
    rows = [(CHAT, {"body": chat_body(stream=True, steps=0)}),  # refused by the schema: nothing was sent yet
            (CHAT, {"body": chat_body(stream=True, steps=2, timeout_s=1e-6)}),  # its deadline passes mid-stream
            ("", {"body": {"image": data_url(), "question": "q?", "steps": 2, "stream": True, "timeout_s": 1e-6}}),
            (CHAT, {"body": chat_body(max_tokens=5000)}),  # over the schema's bound: named as the client sent it
            ("v1/completions", {"body": {"prompt": "hi"}}),
            (CHAT, {"body": b"not json"})]
    finals, sent = run(handler, rows)
    status = [s for s, _, _ in finals]
    assert status == [400, 200, 200, 400, 404, 400]
    first = json.loads(finals[0][2])["error"]
    assert first["param"] == "steps" and first["type"] == "invalid_request_error"
    late = sse_events(finals[1][2])
    error = json.loads(late[-2][1])["error"]
    assert error["type"] == "timeout" and "deadline" in error["message"] and late[-1][1] == "[DONE]"
    rest_late = sse_events(finals[2][2])
    assert rest_late[-2][0] == "error" and json.loads(rest_late[-2][1])["status"] == 504
    assert json.loads(finals[3][2])["error"]["param"] == "max_tokens"
    assert json.loads(finals[4][2])["error"]["code"] == "unknown_url"
    assert json.loads(finals[5][2])["error"]["param"] == "body"


def test_a_stream_asked_over_grpc_is_refused_naming_the_field(handler):
    """gRPC's unary call ends on the first part, so a stream there would cut the answer off."""
    finals, sent = run(handler, [("", {"body": {"image": data_url(), "question": "q?", "stream": True}})], grpc=True)
    [(status, ctype, body)] = finals
    assert (status, ctype, json.loads(body)["field"]) == (400, "application/json", "stream") and not sent


def test_progress_stream_dialects_end_with_done():
    sent: list[str] = []
    stream = ProgressStream("rest", sent.append)
    stream(progress.Event("tokens", {"phase": "answer", "text": " a"}))
    stream(progress.Event("tokens", {"phase": "answer", "text": " cat "}))
    tail = stream.finish(200, {"answer": "a cat"})
    assert "".join(sent) == 'event: delta\ndata: {"text":"a"}\n\nevent: delta\ndata: {"text":" cat"}\n\n'
    assert tail.endswith("data: [DONE]\n\n") and "event: result" in tail and "event: delta" not in tail


@pytest.mark.parametrize("demo", ["bagel", "decoupled"])  # qwen_image_edit: the handler tests above
def test_each_backend_reports_its_steps_and_tokens(demo_root, rgb_image, demo):
    """Every backend's step loop and decode loop feed the listener: a step per denoising evaluation
    (BAGEL's sampler in g2u, the stock diffusers pipeline's callback) and token deltas that add up to the
    answer (BAGEL's decode loop, transformers' generate streamer)."""
    from g2u.batch import Batch, RawItem
    from g2u.pipeline import G2UPipeline

    pipe = G2UPipeline.from_checkpoint(str(demo_root / demo))
    heard: list = []
    batch = Batch(pipe)
    steps = 2
    batch.parse([RawItem({"question": "What is it?", "steps": steps, "max_new_tokens": 4, "edit_area": 128 * 128},
                         rgb_image)])
    with progress.listening([(batch.items[0].plan, heard.append)]):
        batch.edit()
        batch.understand()
    [mine] = batch.outcomes()
    assert mine.ok, mine.error
    totals = {e.data["total"] for e in heard if e.kind == "step"}
    counted = [e.data["step"] for e in heard if e.kind == "step"]
    assert len(totals) == 1 and counted == list(range(1, totals.pop() + 1)) and len(counted) >= steps - 1
    streamed = "".join(e.data["text"] for e in heard if e.kind == "tokens").strip()
    assert streamed == mine.result.answer
    [usage] = [e.data for e in heard if e.kind == "usage"]
    assert usage["phase"] == "answer" and 0 < usage["completion_tokens"] <= 4 and usage["prompt_tokens"] > 0
    assert [e.data["candidate"] for e in heard if e.kind == "prompt"] == [0]


def test_under_the_step_scheduler_plain_rest_is_answered_and_streams_and_chat_are_refused_by_name(demo_root):
    """``handler.scheduler: step`` (asyncCommunication) answers plain REST through the step scheduler;
    streams and the OpenAI route run on the batch path only, so there they get a 400 naming the field,
    and ``v1/models`` is still answered without the model."""
    import asyncio

    import yaml
    from ts.context import Context, RequestProcessor
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    sys.path.insert(0, str(ROOT / "handler"))
    try:
        from g2u_handler import G2UHandler
    finally:
        sys.path.remove(str(ROOT / "handler"))
    cfg = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())
    cfg.update(asyncCommunication=True, batchSize=1)
    cfg["handler"]["checkpoint"] = str(demo_root / "qwen_image_edit")
    metrics = MetricsCacheYamlImpl(str(ROOT / "handler" / "metrics.yaml"))
    metrics.initialize_cache()
    context = Context("g2u", str(ROOT), {}, 1, None, "0.12.0", metrics=metrics, model_yaml_config=cfg)
    h = G2UHandler()
    h.initialize(context)
    assert h.scheduler is not None
    rest = {"image": data_url(), "question": "What is in the picture?", "steps": 2, "max_new_tokens": 6}
    try:
        answers = []
        for path, row in [("", {"body": rest}), ("", {"body": {**rest, "stream": True}}),
                          (CHAT, {"body": chat_body(url=data_url(), **FAST)}), ("v1/models", {"body": b""})]:
            context.request_processor = [RequestProcessor({"url_path": path, "explain": "False"})]
            context.request_ids = {0: "req-0"}
            context.metrics.set_request_ids(context.request_ids)
            context.cl_socket = FakeSocket()
            [body] = asyncio.run(h.handle([row], context))
            answers.append((context.get_response_status(0)[0], json.loads(body)))
    finally:
        h.scheduler.close()
    (ok, plain), (stream_code, stream), (chat_code, chat), (models_code, models) = answers
    assert ok == 200 and plain["answer"] and plain["edit"]["steps"] == 2
    assert (stream_code, stream["field"]) == (400, "stream") and "scheduler" in stream["reason"]
    assert (chat_code, chat["field"]) == (400, "url_path")
    assert models_code == 200 and models["data"][0]["id"]
