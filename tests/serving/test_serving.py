"""TorchServe serving, end to end: the real server on loopback (free ports, its own config, model store,
logs and temp dir), the .mar built by handler/archive.py from the demo checkpoint, requests over HTTP.

One server for the whole module (startup costs ~10 s); the last test stops it and checks nothing is
left. A few in-process handler tests cover what HTTP cannot provoke (a model failure inside a batch).
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the handler/ tools are run from the repository root
    sys.path.insert(0, str(ROOT))

from handler import archive, tsctl  # noqa: E402

pytestmark = pytest.mark.e2e  # starts servers / subprocess pipelines: `make test-fast` skips it

MODEL = "g2u"
BATCH_MODEL = "g2u_batch4"
"""The same demo under a batch window far longer than any test: its batch of four closes when the fourth
request arrives (batchSize), so four requests meet in one batch by count, never by how fast they came."""
BATCH_WINDOW_MS = 100_000  # below the client's timeout: a batch that never fills fails, it does not hang
READY_TIMEOUT_S = 180
FAST = {"steps": "2"}  # the demo checkpoint at 2 denoising steps: the tests do not care about quality


def png(size: tuple[int, int] = (96, 64), color: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    img = Image.new("RGB", size, color)
    for x in range(0, size[0], 8):
        img.putpixel((x, size[1] // 2), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class Client:
    """Thin HTTP client holding the server's URLs and keys."""

    def __init__(self, server: tsctl.Server):
        self.server = server
        self.keys = server.keys()
        self.inference = server.url("inference")
        self.management = server.url("management")
        self.metrics = server.url("metrics")

    def auth(self, api: str = "inference") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[api]}"}

    def multipart(self, image: bytes | None, model: str = MODEL, **fields: str) -> requests.Response:
        files = {"image": ("img.png", image, "image/png")} if image is not None else None
        return requests.post(f"{self.inference}/predictions/{model}", headers=self.auth(), data=fields,
                             files=files, timeout=120)

    def json(self, body: dict) -> requests.Response:
        return requests.post(f"{self.inference}/predictions/{MODEL}", headers=self.auth(), json=body, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> tsctl.Server:
    try:
        srv = tsctl.serve_demo(tmp_path_factory.mktemp("torchserve"), model_name=MODEL, ready_timeout=READY_TIMEOUT_S,
                               extra_models={BATCH_MODEL: {"maxBatchDelay": BATCH_WINDOW_MS}})
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield srv
    srv.stop()  # no-op when test_stop_leaves_no_process_or_port already stopped it


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server)


# ---------------------------------------------------------------- configuration
def test_shipped_config_is_locked_down(server):
    props = tsctl.read_properties(server.config)
    for api in ("inference", "management", "metrics"):
        assert props[f"{api}_address"].startswith("http://127.0.0.1:")
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["disable_token_authorization"] == "false"
    assert props["enable_model_api"] == "false"
    assert int(props["max_request_size"]) == 20 * 1024 * 1024
    assert "-Xmx" in props["vmargs"]
    assert props["metrics_mode"] == "prometheus"
    assert Path(props["metrics_config"]).is_file() and Path(props["model_store"]).is_dir()


def test_worker_runs_the_venv_python_and_description(server, client):
    import yaml

    shipped = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())
    desc = requests.get(f"{client.management}/models/{MODEL}", headers=client.auth("management"), timeout=10).json()[0]
    assert desc["batchSize"] == shipped["batchSize"] == 4 and desc["maxBatchDelay"] == shipped["maxBatchDelay"]
    assert [w["status"] for w in desc["workers"]] == ["READY"]
    workers = [p for p in server.processes() if "model_service_worker" in " ".join(p.cmdline())]
    assert len(workers) == 2  # one per served model (MODEL and BATCH_MODEL)
    # TorchServe runs workers with the python it was started with: the venv's, where g2u is installed.
    assert {Path(w.cmdline()[0]).parent for w in workers} == {Path(sys.executable).parent}


# ---------------------------------------------------------------- requests and responses
def test_multipart_request_response_schema(client):
    r = client.multipart(png(), question="What colour is the picture?", options='["red", "magenta"]',
                         return_thought="true", seed="3", **FAST)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["answer"], str)
    assert body["mode"] == "g2u"
    edit = body["edit"]
    assert edit["steps"] == 2 and edit["seed"] == 3 and edit["text_cfg"] == 4.0 and edit["image_cfg"] == 1.0
    assert edit["family"] in ("enhancement", "extension") and edit["writer"] == "library" and edit["prompt"]
    assert set(body["fidelity"]) >= {"ssim", "psnr"}
    thought = Image.open(io.BytesIO(base64.b64decode(body["thought"])))
    assert thought.format == "PNG" and list(thought.size) == edit["size"]
    timings = body["timings_ms"]
    for stage in ("preprocess", "edit", "understand", "postprocess", "total"):
        assert timings[stage] >= 0, stage
    assert timings["edit"] > 0 and timings["understand"] > 0
    assert body["model"]["demo"] is True and body["model"]["backend"] == "qwen_image_edit"
    assert body["model"]["device"] == "cpu" and body["model"]["dtype"] == "float32"
    assert "/" not in body["model"]["checkpoint"]  # a name, never the checkpoint's path on the server


def test_json_request_base64_image(client):
    image = base64.b64encode(png(color=(20, 120, 220))).decode()
    r = client.json({"image": image, "question": "Is there a line?", "prompt_name": "sharpen_details",
                     "steps": 2, "return_thought": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["edit"]["prompt_name"] == "sharpen_details" and "thought" not in body
    assert body["model"]["demo"] is True

    r = client.json({"image": "data:image/png;base64," + image, "question": "Is there a line?", "mode": "baseline"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "baseline" and body["edit"] is None and body["fidelity"] is None
    assert "edit" not in body["timings_ms"] and body["timings_ms"]["understand"] > 0


def test_four_concurrent_requests_batched_one_bad(client):
    """Four requests meet in one batch (BATCH_MODEL closes it on the fourth); the bad one gets its own 400
    and the others their answers."""

    def send(i: int) -> requests.Response:
        fields = {"question": f"Question {i}?", **FAST}
        if i == 2:
            fields["steps"] = "0"
        return client.multipart(png(color=(40 * i, 100, 50)), model=BATCH_MODEL, **fields)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(send, range(4)))
    codes = [r.status_code for r in responses]
    assert codes == [200, 200, 400, 200], [r.text for r in responses]
    bad = responses[2].json()
    assert bad["error"] == "invalid_input" and bad["field"] == "steps"
    for i in (0, 1, 3):
        assert responses[i].json()["batch_size"] == 4  # they were served in one batch with the bad one


def _truncated_png() -> bytes:
    data = png((64, 64))
    return data[: len(data) // 2]


def _many_pixels_png() -> bytes:
    """7000 x 6000 = 42 MP (over the 40 MP limit) yet a few kB on the wire."""
    buf = io.BytesIO()
    Image.new("1", (7000, 6000)).save(buf, format="PNG")
    return buf.getvalue()


BAD_INPUTS = {
    "unreadable_image": (b"definitely not an image", {}, 400, "image"),
    "truncated_image": (_truncated_png, {}, 400, "image"),
    "too_many_pixels": (_many_pixels_png, {}, 413, "image"),
    "missing_image": (None, {}, 400, "image"),
    "empty_question": (png, {"question": "   "}, 400, "question"),
    "overlong_question": (png, {"question": "why " * 1001}, 400, "question"),
    "unknown_mode": (png, {"mode": "dream"}, 400, "mode"),
    "unknown_prompt_name": (png, {"prompt_name": "no_such_prompt"}, 400, "prompt_name"),
    "unknown_family": (png, {"family": "surreal"}, 400, "family"),
    "steps_out_of_range": (png, {"steps": "500"}, 400, "steps"),
    "steps_not_a_number": (png, {"steps": "many"}, 400, "steps"),
    "text_cfg_out_of_range": (png, {"text_cfg": "0.5"}, 400, "text_cfg"),
    "image_cfg_out_of_range": (png, {"image_cfg": "31"}, 400, "image_cfg"),
    "edit_size_too_large": (png, {"edit_size": "4096x4096"}, 400, "edit_size"),
    "edit_size_not_a_multiple": (png, {"edit_size": "33x33"}, 400, "edit_size"),
    "bad_options": (png, {"options": "[1, 2"}, 400, "options"),
    "unknown_field": (png, {"colour": "red"}, 400, "colour"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_its_4xx_naming_the_field(client, case):
    image, fields, status, field = BAD_INPUTS[case]
    if callable(image):
        image = image()
    fields = {"question": "What is shown?", **FAST, **fields}
    r = client.multipart(image, **fields)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == "invalid_input" and body["field"] == field and body["reason"]


def test_bad_json_bodies(client):
    url = f"{client.inference}/predictions/{MODEL}"
    r = requests.post(url, headers={**client.auth(), "Content-Type": "application/json"}, data=b"{not json",
                      timeout=60)
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = client.json({"image": "!!!not base64!!!", "question": "What?"})
    assert r.status_code == 400 and r.json()["field"] == "image"


def test_payload_over_max_request_size_is_413(client):
    r = client.multipart(b"\0" * (21 * 1024 * 1024), question="What?")
    assert r.status_code == 413


def test_worker_survives_bad_inputs(client):
    r = client.multipart(png(), question="Still alive?", **FAST)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}], ids=["no_token", "wrong_token"])
def test_token_required(client, headers):
    r = requests.post(f"{client.inference}/predictions/{MODEL}", headers=headers,
                      files={"image": ("a.png", png())}, data={"question": "What?"}, timeout=30)
    assert r.status_code in (400, 401, 403) and "Token Authorization failed" in r.text
    r = requests.get(f"{client.management}/models/{MODEL}", headers=headers, timeout=30)
    assert r.status_code in (400, 401, 403) and "Token Authorization failed" in r.text
    # an inference key does not open the management API
    r = requests.get(f"{client.management}/models/{MODEL}", headers=client.auth("inference"), timeout=30)
    assert r.status_code in (400, 401, 403)


def test_model_api_is_off(client):
    r = requests.post(f"{client.management}/models", params={"url": f"{MODEL}.mar"},
                      headers=client.auth("management"), timeout=30)
    assert r.status_code == 405


def _metric_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _batches_by_size(text: str) -> dict[str, float]:
    """{Size: batches} from the g2u_batches counter (requests served = sum of Size × batches)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("g2u_batches{") and f'ModelName="{MODEL}"' in line:
            out[re.search(r'Size="(\d+)"', line).group(1)] = float(line.rsplit(" ", 1)[1])
    return out


def test_custom_metrics_on_metrics_endpoint(client):
    assert client.multipart(png(), question="metrics?", **FAST).status_code == 200
    assert client.multipart(png(), question="metrics?", text_cfg="99").status_code == 400
    deadline = time.monotonic() + 120  # a hang bound: the loop ends as soon as the metrics show
    while True:
        text = requests.get(f"{client.metrics}/metrics", timeout=10).text
        found = {stage: _metric_value(text, "g2u_stage_latency_seconds_count", ModelName=MODEL, Stage=stage)
                 for stage in ("preprocess", "edit", "understand", "postprocess")}
        batches = sum(int(size) * count for size, count in _batches_by_size(text).items())
        errors = _metric_value(text, "g2u_errors", ModelName=MODEL, Kind="invalid_input", Field="text_cfg")
        if (all(v and v > 0 for v in found.values()) and batches and errors) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(v and v > 0 for v in found.values()), found
    assert "# TYPE g2u_stage_latency_seconds histogram" in text
    assert "# TYPE g2u_batches counter" in text
    assert batches and batches >= 4
    assert errors and errors >= 1
    steps_errors = _metric_value(text, "g2u_errors", ModelName=MODEL, Kind="invalid_input", Field="steps")
    assert steps_errors and steps_errors >= 1


# ---------------------------------------------------------------- in-process: failures inside a batch
@pytest.fixture(scope="module")
def handler_in_process(server):
    """The handler class outside TorchServe, with TorchServe's own Context and metrics cache."""
    from ts.context import Context
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    sys.path.insert(0, str(ROOT / "handler"))
    try:
        from g2u_handler import G2UHandler
    finally:
        sys.path.remove(str(ROOT / "handler"))
    import yaml

    cfg = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())
    cfg["handler"]["checkpoint"] = str(server.home / "demo" / archive.DEFAULT_DEMO)
    metrics = MetricsCacheYamlImpl(str(ROOT / "handler" / "metrics.yaml"))
    metrics.initialize_cache()
    context = Context(MODEL, str(server.home), {}, 4, None, "0.12.0", metrics=metrics, model_yaml_config=cfg)
    handler = G2UHandler()
    handler.initialize(context)
    return handler, context


def _run(handler_and_context, rows: list[dict]) -> list[tuple[int, dict]]:
    from ts.context import RequestProcessor

    handler, context = handler_and_context
    context.request_processor = [RequestProcessor({}) for _ in rows]
    context.request_ids = {i: f"req-{i}" for i in range(len(rows))}
    context.metrics.set_request_ids(context.request_ids)
    out = handler.handle(rows, context)
    return [(context.get_response_status(i)[0] or 200, json.loads(body)) for i, body in enumerate(out)]


def test_model_failure_is_5xx_and_isolated_from_batch_mates(handler_in_process, monkeypatch):
    handler, _ = handler_in_process
    backend = handler.pipeline.backend
    real_edit = backend.edit

    def flaky_edit(images, prompts, params):
        if any(img.size == (77, 55) for img in images):
            raise RuntimeError("simulated device failure")
        return real_edit(images, prompts, params)

    monkeypatch.setattr(backend, "edit", flaky_edit)
    rows = [{"image": png(), "question": "a?", "steps": "2"}, {"image": png((77, 55)), "question": "b?", "steps": "2"},
            {"body": {"image": base64.b64encode(png()).decode(), "question": "c?", "steps": 2}}]
    results = _run(handler_in_process, rows)
    assert [code for code, _ in results] == [200, 500, 200]
    assert results[1][1]["error"] == "model_error" and "simulated device failure" in results[1][1]["reason"]
    assert all(isinstance(results[i][1]["answer"], str) and results[i][1]["edit"] for i in (0, 2))

    monkeypatch.setattr(backend, "edit", real_edit)
    [(code, body)] = _run(handler_in_process, [{"image": png((77, 55)), "question": "b?", "steps": "2"}])
    assert code == 200 and body["model"]["demo"] is True


def test_handler_defaults_apply_under_request_fields(handler_in_process, monkeypatch):
    handler, _ = handler_in_process
    assert handler.defaults == {}  # the shipped config: unset fields take the schema's (the paper's) defaults
    [(code, body)] = _run(handler_in_process, [{"image": png(), "question": "d?", "steps": "", "mode": "replace"}])
    assert code == 200 and body["edit"]["steps"] == 30 and body["mode"] == "replace"
    monkeypatch.setattr(handler, "defaults", {"steps": 3, "mode": "g2u"})  # a deployment's own defaults
    rows = [{"image": png(), "question": "d?", "steps": ""}, {"image": png(), "question": "e?", "steps": "2"}]
    (code_a, a), (code_b, b) = _run(handler_in_process, rows)
    assert (code_a, a["edit"]["steps"], code_b, b["edit"]["steps"]) == (200, 3, 200, 2)


# ---------------------------------------------------------------- OpenAI-compatible route, streams
def _openai(client: Client, key: str | None = None):
    from openai import OpenAI

    return OpenAI(base_url=f"{client.inference}/predictions/{MODEL}/1.0/v1", api_key=key or client.keys["inference"],
                  max_retries=0, timeout=120)


def _chat_messages(image: bytes, question: str = "What is in the picture?") -> list[dict]:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def test_openai_client_and_rest_streams_while_a_reader_that_does_not_read_holds_no_worker(client):
    """The official client through TorchServe — the model list, a plain completion with the thought, the same
    request streamed (progress, then the answer token by token) — answered while a streamed REST request
    whose client reads nothing is pending: the frontend buffers its events, the worker goes on."""
    import socket
    from urllib.parse import urlparse

    image = png(color=(30, 120, 60))
    fields = {"image": base64.b64encode(png((512, 512))).decode(), "question": "What is in the picture?",
              "steps": 2, "max_new_tokens": 6, "stream": True, "return_thought": True}
    body = json.dumps(fields).encode()  # the demo's thought of random pixels as PNG: over the 4 KiB buffer
    url = urlparse(client.inference)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((url.hostname, url.port))
    slow.sendall(f"POST /predictions/{MODEL} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
                 f"Authorization: Bearer {client.keys['inference']}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body)
    try:
        oa = _openai(client)  # answered one after another while the slow client has read nothing
        assert [m.id for m in oa.models.list()] == [MODEL]
        plain = oa.chat.completions.create(model=MODEL, messages=_chat_messages(image), max_tokens=6, seed=0,
                                           extra_body={"steps": 2, "return_thought": True, "mode": "g2u"})
        chunks = list(oa.chat.completions.create(model=MODEL, messages=_chat_messages(image), max_tokens=6, seed=0,
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_body={"steps": 2}))
        data = b""
        slow.settimeout(60)
        while not data.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"):
            part = slow.recv(65536)
            assert part, "connection closed before the end of the stream"
            data += part
    finally:
        slow.close()
    assert plain.model == MODEL and plain.usage.completion_tokens == 6 and plain.usage.total_tokens > 6
    thought = Image.open(io.BytesIO(base64.b64decode(plain.g2u["thought"])))
    assert list(thought.size) == plain.g2u["edit"]["size"] and plain.g2u["edit"]["steps"] == 2
    events = [c.g2u["event"] for c in chunks if getattr(c, "g2u", None)]
    assert events[:4] == ["prompt", "step", "step", "thought"] and events[-1] == "result"
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 1 and "".join(deltas) == plain.choices[0].message.content  # token by token, same answer
    assert chunks[-1].usage == plain.usage

    head, _, chunked = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert b"content-type: text/event-stream" in head.lower()
    assert b"ts_stream_next: true" in head.lower()  # TorchServe's internal header reaches the client (docs)
    text = re.sub(rb"\r\n[0-9a-f]+\r\n", b"", b"\r\n" + chunked).decode()  # HTTP chunks joined
    rest = [(m.group(1), m.group(2)) for m in re.finditer(r"(?:event: (\w+)\n)?data: (.*)\n\n", text)]
    names = [e for e, _ in rest]
    assert names[:4] == ["prompt", "step", "step", "thought"] and names[-2:] == ["result", None]
    result = json.loads(rest[-2][1])
    assert "".join(json.loads(d)["text"] for e, d in rest if e == "delta") == result["answer"]
    assert len(result["thought"]) > 4096  # more than the client's receive buffer was left unread meanwhile


def test_openai_and_stream_errors_reach_the_client_in_its_shape(client):
    import openai

    oa = _openai(client)
    with pytest.raises(openai.BadRequestError) as info:
        remote = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
        oa.chat.completions.create(model=MODEL, max_tokens=4,
                                   messages=[{"role": "user", "content": [remote, {"type": "text", "text": "?"}]}])
    assert info.value.body["param"] == "messages[0].content[0].image_url.url" and "never fetches" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        oa.chat.completions.create(model=MODEL, messages=_chat_messages(png()), extra_body={"steps": 0})
    assert info.value.body["param"] == "steps"
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="gpt-4o", messages=_chat_messages(png()))
    with pytest.raises(openai.APIError, match="deadline") as late:  # the stream had started: an error event
        for _ in oa.chat.completions.create(model=MODEL, messages=_chat_messages(png()), stream=True,
                                            extra_body={"steps": 200, "timeout_s": 0.05}):
            pass
    assert not isinstance(late.value, openai.APIStatusError)  # the status (200) was fixed by the first chunk
    with pytest.raises(openai.APIStatusError) as info:  # the inference key is the api_key
        _openai(client, key="wrong-key").models.list()
    assert info.value.status_code in (400, 401, 403) and "Token Authorization failed" in info.value.response.text
    form = client.multipart(png(), question="Bad?", steps="0", stream="true")  # refused before any event
    assert form.status_code == 400 and form.json()["field"] == "steps"
    assert form.headers["content-type"].startswith("application/json")


def test_the_openai_snippet_make_serve_prints_works_as_printed(server, client, tmp_path):
    import subprocess

    from handler.serve import openai_example

    image = tmp_path / "sample.png"
    image.write_bytes(png())
    snippet = openai_example(image, client.inference, key_file=server.key_file)
    proc = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "answer: " in proc.stdout and "usage: CompletionUsage(" in proc.stdout
    assert "step 1/4  step 2/4  step 3/4  step 4/4" in proc.stdout


# ---------------------------------------------------------------- shutdown (keep last)
def test_stop_leaves_no_process_or_port(server):
    procs = server.processes()
    assert len(procs) >= 2  # the frontend and its worker
    ports = server.ports
    server.stop()
    assert not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not [p for p in ports if tsctl.port_in_use(p)]
    assert server.pid() is None


def test_a_model_that_fails_to_load_is_reported_not_waited_on_forever(tmp_path):
    """initialize() raising leaves /ping Healthy; the READY wait must fail fast with the model log's tail."""
    with pytest.raises(RuntimeError) as info:
        tsctl.serve_demo(tmp_path, model_name=MODEL, extra_env={"G2U_WRITER_BUDGET_S": "soon"}, ready_timeout=600)
    # The cause, read from the model log: the wait ended on the failed load, not on the (long) READY bound.
    assert "G2U_WRITER_BUDGET_S must be a number" in str(info.value)
    assert "worker died" in str(info.value)  # detected from the dying worker, not waited out
    assert not list(tmp_path.glob("logs/tmp/.model_server.pid"))  # stopped again
