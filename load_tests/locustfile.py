"""Locust users for a deployed g2u endpoint: realistic G→U traffic plus a share of bad requests.

Configured by environment variables (so the headless runner, CI and a person at the web UI agree):
  G2U_TOKEN / G2U_KEY_FILE   inference token, or TorchServe's key_file.json to read it from
  G2U_MODEL                  model name in /predictions/NAME (default g2u)
  G2U_MODE_MIX               weights per mode, e.g. "g2u:4,baseline:2,replace:1,textual_cot:1"
  G2U_BAD_SHARE              share of deliberately bad requests that must get a 4xx (default 0.05)
  G2U_IMAGE_DIR              folder of images to send (default ../shared/data when present, else generated)
  G2U_STEPS                  edit steps per request (default: the server's)
  G2U_ROUTE_MIX              weights per route, e.g. "rest:2,rest_stream:1,chat:1,chat_stream:1": the REST body,
                             the REST body with `stream: true` (server-sent events), the OpenAI chat route, the
                             chat route streamed; each user takes them in weighted round robin
  G2U_SLOW_READ_S            a streamed response's reader sleeps this long between events (default 0): a slow
                             reader holds no worker (TorchServe's frontend buffers what the client has not read)
  G2U_MAX_REQUESTS           stop once this many requests have completed (default: run until --run-time);
                             tests use it so a run is bounded by work done, not by the clock
  G2U_FINAL_STATS_CSV        write the final request stats there at exit (locust's --csv files are a snapshot
                             taken every second, so they can miss the last requests of a run)
  G2U_ARRIVAL_RATE           requests/s over all users as Poisson arrivals (each user paces exponential gaps
                             between its request starts; unset: 0.2-1 s think time after each answer)
  G2U_ARRIVAL_SEED           seed of those arrivals (default 0): runs with one seed offer the same gaps
  G2U_TIMINGS_CSV            write one row per answered request there at exit: client latency and the
                             server's own timings (queue = latency - the server's compute time)
Run it through `make loadtest` / load_tests/run_loadtest.py, which adds thresholds and reports.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import random
import time
from pathlib import Path

import gevent
from locust import HttpUser, between, events, task
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV
from PIL import Image

from g2u.modes import MODES as MODE_TABLE
from g2u.modes import needs_thought
from g2u.types import FAMILIES

MODEL = os.environ.get("G2U_MODEL", "g2u")
BAD_SHARE = float(os.environ.get("G2U_BAD_SHARE", "0.05"))
STEPS = os.environ.get("G2U_STEPS")
MAX_REQUESTS = int(os.environ.get("G2U_MAX_REQUESTS") or 0)
SLOW_READ_S = float(os.environ.get("G2U_SLOW_READ_S") or 0)
ROUTES = ("rest", "rest_stream", "chat", "chat_stream")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ARRIVAL_RATE = float(os.environ.get("G2U_ARRIVAL_RATE") or 0)
ARRIVAL_SEED = int(os.environ.get("G2U_ARRIVAL_SEED") or 0)
_USERS_SEEN = [0]
TIMINGS: list[dict] = []


def poisson_arrivals(total_rate: float):
    """A locust ``wait_time`` making the users' request starts one Poisson stream of ``total_rate``/s:
    each of the N users paces exponential gaps of mean N/``total_rate`` between its own starts (counted
    from its previous scheduled start, not from the answer), so arrivals stay open-loop while the users
    outnumber the requests in flight; a user behind its schedule starts at once."""

    def wait_time(user) -> float:
        runner = user.environment.runner
        users = max(1, runner.user_count if runner is not None else 1)
        now = time.monotonic()
        if not hasattr(user, "_arrivals"):  # one seeded stream per user: two runs see the same arrivals
            _USERS_SEEN[0] += 1
            user._arrivals = random.Random(ARRIVAL_SEED * 100_003 + _USERS_SEEN[0])
        start = max(getattr(user, "_next_start", now), now - 60)  # never a catch-up burst after a stall
        user._next_start = start + user._arrivals.expovariate(total_rate / users)
        return max(0.0, user._next_start - now)

    return wait_time


def server_ms(body: dict) -> float:
    """The server's compute time of one answer: parsing, the request's stages, the response."""
    t = body.get("timings_ms") or {}
    return float(t.get("preprocess", 0)) + float(t.get("total", 0)) + float(t.get("postprocess", 0))


def _mode_mix() -> tuple[list[str], list[float]]:
    spec = os.environ.get("G2U_MODE_MIX", "g2u:4,baseline:2,replace:1,textual_cot:1")
    modes, weights = [], []
    for part in spec.split(","):
        name, _, weight = part.partition(":")
        if name.strip() not in MODE_TABLE:
            raise ValueError(f"G2U_MODE_MIX: unknown mode {name.strip()!r}; choose from {', '.join(MODE_TABLE)}")
        modes.append(name.strip())
        weights.append(float(weight or 1))
    return modes, weights


def _route_mix() -> list[str]:
    """The routes in weighted round-robin order (integer weights)."""
    out = []
    for part in os.environ.get("G2U_ROUTE_MIX", "rest:2,rest_stream:1,chat:1,chat_stream:1").split(","):
        name, _, weight = part.partition(":")
        if name.strip() not in ROUTES:
            raise ValueError(f"G2U_ROUTE_MIX: unknown route {name!r}; known: {', '.join(ROUTES)}")
        out += [name.strip()] * int(weight or 1)
    return out


def _token() -> str | None:
    if os.environ.get("G2U_TOKEN"):
        return os.environ["G2U_TOKEN"]
    key_file = os.environ.get("G2U_KEY_FILE")
    if key_file and Path(key_file).is_file():
        return json.loads(Path(key_file).read_text())["inference"]["key"]
    return None


def _key_rejected(resp) -> bool:
    """TorchServe's answer to an expired or rotated key (same test as handler.tsctl.key_rejected)."""
    return resp.status_code in (400, 401) and "InvalidKeyException" in (resp.text or "")


def _load_images() -> list[tuple[str, bytes, str]]:
    """(filename, bytes, content type) of several sizes and formats."""
    folder = Path(os.environ.get("G2U_IMAGE_DIR", SHARED))
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:40]
    out = []
    for path in files:
        kind = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        out.append((path.name, path.read_bytes(), kind))
    if not out:  # no data here: generate PNG and JPEG images of several sizes
        rng = random.Random(0)
        for i, (w, h) in enumerate([(64, 48), (320, 240), (640, 480), (512, 512), (1024, 256)]):
            img = Image.effect_noise((w, h), 40 + i * 10).convert("RGB")
            img.paste((rng.randrange(256), 80, 160), (w // 4, h // 4, w // 2, h // 2))
            buf = io.BytesIO()
            fmt = "PNG" if i % 2 == 0 else "JPEG"
            img.save(buf, format=fmt)
            out.append((f"gen{i}.{fmt.lower()}", buf.getvalue(), f"image/{fmt.lower()}"))
    return out


IMAGES = _load_images()
MODES, WEIGHTS = _mode_mix()
ROUTE_CYCLE = _route_mix()
QUESTIONS = [
    ("Which option completes the pattern?", ["A", "B", "C"]),
    ("What colour is the largest object?", ["red", "green", "blue", "yellow"]),
    ("Is there a square in the image?", None),
    ("How many shapes are there?", None),
]
BAD_REQUESTS = [
    ("empty question", lambda img: {"image": img, "question": ""}),
    ("unknown mode", lambda img: {"image": img, "question": "q?", "mode": "dream"}),
    ("steps out of range", lambda img: {"image": img, "question": "q?", "steps": 100000}),
    ("invalid base64", lambda img: {"image": "@@not-base64@@", "question": "q?"}),
    ("not an image", lambda img: {"image": base64.b64encode(b"hello").decode(), "question": "q?"}),
    ("wrong type", lambda img: {"image": img, "question": ["a", "list"]}),
    ("nan cfg", lambda img: {"image": img, "question": "q?", "text_cfg": "nan"}),
]


@events.init.add_listener
def _write_final_stats_at_exit(environment, **_kwargs) -> None:
    """Locust's own CSV rows, written once more from the final stats when the run ends."""
    path = os.environ.get("G2U_FINAL_STATS_CSV")
    if not path:
        return

    def on_quit(**_quit) -> None:
        with open(path, "w", newline="") as f:
            StatsCSV(environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(f))

    environment.events.quit.add_listener(on_quit)


@events.init.add_listener
def _write_timings_at_exit(environment, **_kwargs) -> None:
    path = os.environ.get("G2U_TIMINGS_CSV")
    if not path:
        return

    def on_quit(**_quit) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["start", "latency_ms", "server_ms", "queue_ms", "in_worker_queue_ms",
                                                   "batch_size"])
            writer.writeheader()
            writer.writerows(TIMINGS)

    environment.events.quit.add_listener(on_quit)


@events.init.add_listener
def _stop_after_max_requests(environment, **_kwargs) -> None:
    """With G2U_MAX_REQUESTS set, quit the run (as --run-time would) once that many requests completed."""
    if not MAX_REQUESTS:
        return
    done = {"n": 0}

    def on_request(**_request) -> None:
        done["n"] += 1
        if done["n"] == MAX_REQUESTS and environment.runner is not None:
            gevent.spawn(environment.runner.quit)  # not from this user's greenlet: quit() stops the users

    environment.events.request.add_listener(on_request)


class G2UUser(HttpUser):
    wait_time = poisson_arrivals(ARRIVAL_RATE) if ARRIVAL_RATE > 0 else between(0.2, 1.0)

    def on_start(self) -> None:
        self._reload_token()
        self._route = random.randrange(len(ROUTE_CYCLE))  # each user starts the round robin somewhere else
        if ARRIVAL_RATE > 0:  # the first start too is a Poisson arrival, not a burst at spawn
            gevent.sleep(self.wait_time())

    def _reload_token(self) -> bool:
        """(Re)read the key: at start, and when TorchServe refuses it (expired or rotated). True if it changed."""
        token = _token()
        new = f"Bearer {token}" if token else None
        changed = new is not None and self.client.headers.get("Authorization") != new
        if new:
            self.client.headers["Authorization"] = new
        return changed

    def _post(self, check, path: str = f"/predictions/{MODEL}", **kwargs) -> None:
        """POST a prediction; a refused key (rotated under load) is re-read from the key file and the
        request sent once more instead of counting as a failure."""
        for attempt in (0, 1):
            with self.client.post(path, catch_response=True, **kwargs) as resp:
                if attempt == 0 and _key_rejected(resp) and self._reload_token():
                    resp.success()
                    continue
                check(resp)
                return

    def _fields(self) -> dict:
        question, options = random.choice(QUESTIONS)
        mode = random.choices(MODES, WEIGHTS)[0]
        fields: dict = {"question": question, "mode": mode}
        if options:
            fields["options"] = options
        if needs_thought(mode):  # a mode with a thought gets a prompt family
            fields["family"] = random.choice(FAMILIES)
        if STEPS:
            fields["steps"] = int(STEPS)
        return fields

    @task(10)
    def predict(self) -> None:
        if random.random() < BAD_SHARE:
            return self.bad_request()
        name, data, kind = random.choice(IMAGES)
        fields = self._fields()
        label = f"{fields['mode']}"
        route = ROUTE_CYCLE[self._route % len(ROUTE_CYCLE)]
        self._route += 1
        if route == "rest_stream":
            payload = {**fields, "image": base64.b64encode(data).decode(), "stream": True}
            return self._stream(json=payload, name=f"stream {label}", dialect="rest")
        if route in ("chat", "chat_stream"):
            return self._chat(fields, data, kind, label, stream=route == "chat_stream")
        if random.random() < 0.5:  # multipart upload
            form = {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in fields.items()}
            self._post(self._check_ok, files={"image": (name, data, kind)}, data=form, name=f"multipart {label}")
        else:
            payload = {**fields, "image": base64.b64encode(data).decode()}
            self._post(self._check_ok, json=payload, name=f"json {label}")

    def _chat(self, fields: dict, data: bytes, kind: str, label: str, stream: bool) -> None:
        """The OpenAI-compatible route: the image as a data URL, G→U fields as extra body fields."""
        url = f"data:{kind};base64,{base64.b64encode(data).decode()}"
        extra = {k: v for k, v in fields.items() if k != "question"}
        body = {"model": MODEL, "max_tokens": 16, **extra,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                          {"type": "text", "text": fields["question"]}]}]}
        path = f"/predictions/{MODEL}/1.0/v1/chat/completions"
        if stream:
            return self._stream(path=path, json={**body, "stream": True}, name=f"chat stream {label}",
                                dialect="openai")
        self._post(self._check_chat, path=path, json=body, name=f"chat {label}")

    def _stream(self, dialect: str, name: str, path: str = f"/predictions/{MODEL}", **kwargs) -> None:
        """A streamed request: locust times it to its first event (``stream=True``); the whole stream, read
        to ``[DONE]`` (slowly with G2U_SLOW_READ_S), is reported as ``SSE <name>``."""
        start = time.perf_counter()
        failure = None
        events = 0

        def check(resp) -> None:
            nonlocal failure, events
            if resp.status_code != 200 or not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                failure = f"HTTP {resp.status_code} {resp.headers.get('Content-Type')}: {resp.text[:200]}"
                resp.failure(failure)
                return
            resp.success()  # the first event arrived; the rest is checked as it is read
            last, ended, event = None, False, None
            for line in resp.iter_lines(decode_unicode=True):
                if SLOW_READ_S:
                    gevent.sleep(SLOW_READ_S)
                if line.startswith("event: "):
                    event = line[7:]
                if not line.startswith("data: "):
                    continue
                events += 1
                data = line[6:]
                if data == "[DONE]":
                    ended = True
                    break
                if event == "error" or data.startswith('{"error"'):
                    failure = f"error event: {data[:200]}"
                last, event = data, None
            if not ended:
                failure = failure or "the stream ended without [DONE]"
            elif failure is None and dialect == "rest" and '"answer"' not in (last or ""):
                failure = "the last event before [DONE] is not the result"
            elif failure is None and dialect == "openai" and '"finish_reason":"' not in (last or "").replace(" ", ""):
                failure = "no chunk with a finish_reason before [DONE]"

        self._post(check, path=path, stream=True, name=name, **kwargs)
        self.environment.events.request.fire(
            request_type="SSE", name=name, response_time=(time.perf_counter() - start) * 1000, response_length=events,
            exception=RuntimeError(failure) if failure else None, context={})

    @staticmethod
    def _check_chat(resp) -> None:
        if resp.status_code != 200:
            resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return
        try:
            body = resp.json()
            answer = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            resp.failure(f"not a chat completion: {resp.text[:200]}")
            return
        if not isinstance(answer, str) or "g2u" not in body or "usage" not in body:
            resp.failure("chat completion lacks its answer, usage or g2u extension")
        else:
            resp.success()

    def bad_request(self) -> None:
        kind, make = random.choice(BAD_REQUESTS)
        img = base64.b64encode(random.choice(IMAGES)[1]).decode()

        def check(resp) -> None:
            if 400 <= resp.status_code < 500 and not _key_rejected(resp):
                resp.success()
            else:
                resp.failure(f"{kind}: expected 4xx, got {resp.status_code}")

        self._post(check, json=make(img), name="bad input (expect 4xx)")

    @staticmethod
    def _check_ok(resp) -> None:
        if resp.status_code != 200:
            resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return
        try:
            body = resp.json()
        except ValueError:
            resp.failure("response is not JSON")
            return
        if "answer" not in body or "timings_ms" not in body:
            resp.failure(f"response lacks answer/timings_ms: {sorted(body)[:8]}")
        else:
            resp.success()
            meta = getattr(resp, "request_meta", None)
            latency = meta["response_time"] if meta else resp.elapsed.total_seconds() * 1000
            served = server_ms(body)
            TIMINGS.append({"start": round(time.time(), 3), "latency_ms": round(latency, 2),
                            "server_ms": round(served, 2), "queue_ms": round(latency - served, 2),
                            "in_worker_queue_ms": body["timings_ms"].get("queue", ""),
                            "batch_size": body.get("batch_size", "")})
