"""Reliability checks against a real TorchServe: sustained load, a worker killed under load, hostile input,
the prompt writer's endpoint down or hanging, and the security settings.

Each check is a function taking a READY ``handler.tsctl.Server`` and returning a JSON-able dict; the tests
(tests/serving/test_reliability.py) call them with short durations and assert on the dicts, ``make reliability``
runs them all at report length and writes outputs/reliability/report.{json,md} (``--mlflow`` logs both).

    python -m load_tests.reliability [--users 4] [--duration 180s] [--mlflow]

Requests here use ``requests`` in threads; the locust load runs as its own process (load_tests/run_loadtest.py).
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests
from PIL import Image

from g2u.testing.fake_http import FakeHTTPServer, hanging_endpoint, probe
from handler import tsctl
from load_tests import hostile_files

HERE = Path(__file__).resolve().parent
MODEL = "g2u"
FAST = {"steps": 2}
SECRET_KEY = "sk-g2u-reliability-secret-0123456789"
"""The writer API key given to the server: it must never show in a response or a log line."""


# ---------------------------------------------------------------- inputs
def image_bytes(size: tuple[int, int] = (96, 64), fmt: str = "PNG", seed: int = 0) -> bytes:
    img = Image.effect_noise(size, 30 + seed).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def bomb_png() -> bytes:
    """A 20000×20000 1-bit PNG: ~50 kB on the wire, 400 MP (1.2 GB as RGB) once decoded."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Hostile:
    """One hostile request and what must come back: a status and the field the error names."""

    name: str
    send: Callable[[Client], requests.Response]
    status: int
    field: str | None


class Client:
    """POSTs to the model with the server's inference key; a refused key (expired or rotated) is re-read
    from key_file.json and the request sent once more."""

    def __init__(self, server: tsctl.Server, timeout: float = 120):
        self.server = server
        self.url = f"{server.url('inference')}/predictions/{server.model_name}"
        self.key = server.keys()["inference"]
        self.timeout = timeout
        self.key_reloads = 0

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def post(self, headers: dict[str, str] | None = None, **kwargs) -> requests.Response:
        for attempt in (0, 1):
            r = requests.post(self.url, headers={**self.auth, **(headers or {})}, timeout=self.timeout, **kwargs)
            if attempt == 0 and tsctl.key_rejected(r):
                fresh = self.server.keys()["inference"]
                if fresh != self.key:
                    self.key, self.key_reloads = fresh, self.key_reloads + 1
                    continue
            return r
        return r

    def json(self, body: dict) -> requests.Response:
        return self.post(json=body)

    def raw(self, data: bytes, content_type: str) -> requests.Response:
        return self.post(headers={"Content-Type": content_type}, data=data)

    def form(self, image: bytes, filename: str = "img.png", content_type: str = "image/png",
             **fields: str) -> requests.Response:
        return self.post(data=fields, files={"image": (filename, image, content_type)})

    def good(self, question: str = "What is shown?", **fields) -> requests.Response:
        return self.json({"image": b64(image_bytes()), "question": question, **FAST, **fields})


@functools.cache
def crafted(name: str) -> bytes:
    """The crafted files of load_tests/hostile_files.py, built once (the TIFF takes about a second)."""
    return {"ztxt": hostile_files.png_ztxt_bomb, "iccp": hostile_files.png_iccp_bomb,
            "tiff": hostile_files.many_page_tiff, "png16": hostile_files.png16}[name]()


def single_request_cases() -> list[Hostile]:
    """Single requests that crashed (500) or stalled the worker once; the TIFF is last: on the old
    code it keeps the worker busy for minutes."""
    for name in ("ztxt", "iccp", "tiff", "png16"):  # built now, not while the requests race
        crafted(name)
    fast = {k: str(v) for k, v in FAST.items()}
    return [
        Hostile("PNG zTXt chunk inflating past PIL's limit",
                lambda c: c.json({"image": b64(crafted("ztxt")), "question": "q?", **FAST}), 400, "image"),
        Hostile("PNG iCCP chunk inflating past PIL's limit",
                lambda c: c.form(crafted("iccp"), question="q?", **fast), 400, "image"),
        Hostile("JSON nested 100 000 levels deep", lambda c: c.raw(hostile_files.deep_json(), "application/json"),
                400, "body"),
        Hostile("5000-digit integer steps", lambda c: c.raw(hostile_files.huge_int_json(5000, "steps"),
                                                             "application/json"), 400, "steps"),
        Hostile("edit_size 2048x2048 with steps 200 (over the work budget / the model's limits)",
                lambda c: c.json({"image": b64(image_bytes()), "question": "q?", "edit_size": "2048x2048",
                                  "steps": 200}), 400, "edit_size"),
        Hostile("steps 1 on Qwen-Image-Edit (NaN latents before)",
                lambda c: c.json({"image": b64(image_bytes()), "question": "q?", "steps": 1}), 400, "steps"),
        Hostile("a valid 8000x20 image", lambda c: c.form(image_bytes(size=(8000, 20)), question="q?", **fast),
                200, None),
        Hostile("a valid 20x8000 image", lambda c: c.form(image_bytes(size=(20, 8000)), question="q?", **fast),
                200, None),
        Hostile("16-bit 39.9 MP PNG", lambda c: c.form(crafted("png16"), question="q?", **fast), 200, None),
        Hostile("TIFF of 150 000 pages", lambda c: c.form(crafted("tiff"), "a.tif", "image/tiff", question="q?",
                                                          **fast), 200, None),
    ]


def _json_case(name: str, field: str, **fields) -> Hostile:
    body = {"image": b64(image_bytes()), "question": "What is shown?", **FAST, **fields}
    return Hostile(name, lambda c: c.json(body), 400, field)


def hostile_cases() -> list[Hostile]:
    png = image_bytes()
    jpeg = image_bytes(fmt="JPEG")
    return [
        Hostile("decompression bomb", lambda c: c.json({"image": b64(bomb_png()), "question": "q?"}), 413, "image"),
        Hostile("body over the size limit", lambda c: c.raw(b"\0" * (21 * 1024 * 1024), "application/octet-stream"),
                413, None),
        Hostile("truncated PNG", lambda c: c.form(png[: len(png) // 2], question="q?"), 400, "image"),
        Hostile("truncated JPEG", lambda c: c.form(jpeg[: len(jpeg) // 2], "a.jpg", "image/jpeg", question="q?"),
                400, "image"),
        Hostile("wrong content type (text body)", lambda c: c.raw(b"question=what", "text/plain"), 400, "body"),
        Hostile("wrong content type (HTML as the image)",
                lambda c: c.form(b"<html><body>hi</body></html>", "a.html", "text/html", question="q?"), 400, "image"),
        Hostile("invalid base64", lambda c: c.json({"image": "%%%not base64%%%", "question": "q?"}), 400, "image"),
        _json_case("question of wrong type", "question", question=["a", "list"]),
        _json_case("steps of wrong type", "steps", steps={"n": 3}),
        _json_case("options of wrong type", "options", options="A or B"),
        _json_case("option of wrong type", "options", options=[1, {"x": 2}]),
        _json_case("return_thought of wrong type", "return_thought", return_thought="maybe"),
        _json_case("control characters in the question", "question", question="what\x00is\x07this?"),
        Hostile("NaN text_cfg", lambda c: c.raw(
            f'{{"image": "{b64(png)}", "question": "q?", "text_cfg": NaN}}'.encode(), "application/json"),
            400, "text_cfg"),
        _json_case("huge steps", "steps", steps=10**12),
        _json_case("negative seed", "seed", seed=-1),
        _json_case("negative edit size", "edit_size", edit_size="-64x64"),
        _json_case("huge max_new_tokens", "max_new_tokens", max_new_tokens=10**9),
        _json_case("a local path as the image", "image", image="/etc/passwd"),
        _json_case("a file URL as the image", "image", image="file:///etc/passwd"),
        _json_case("a server-side field", "checkpoint", checkpoint="/etc"),
        Hostile("base64 image as a multipart text field",
                lambda c: c.post(data={"question": "q?", **{k: str(v) for k, v in FAST.items()}},
                                 files={"image": (None, b64(png))}), 200, None),
        *single_request_cases(),
    ]


# ---------------------------------------------------------------- checks
def worker_processes(server: tsctl.Server) -> list[psutil.Process]:
    """The server's Python workers (a dying one, a zombie until reaped, is skipped)."""
    out = []
    for proc in server.processes():
        try:
            if "model_service_worker" in " ".join(proc.cmdline()):
                out.append(proc)
        except psutil.Error:
            pass
    return out


def worker_rss_mb(server: tsctl.Server) -> float:
    total = 0.0
    for proc in worker_processes(server):
        try:
            total += proc.memory_info().rss / 2**20
        except psutil.Error:
            pass
    return total


def wait_worker_ready(server: tsctl.Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            server.wait_ready(5)
            return
        except TimeoutError:
            continue
    raise TimeoutError("the worker did not come back READY")


def check_hostile(server: tsctl.Server) -> dict:
    """Every hostile request gets its expected status naming the field; two good requests sent at the same
    moment (so they share batches with the hostile ones) still succeed; the worker is never restarted."""
    client = Client(server)
    pids = {p.pid for p in worker_processes(server)}
    cases = hostile_cases()
    barrier = threading.Barrier(len(cases) + 2)

    def send(job: Hostile | None) -> requests.Response:
        barrier.wait()
        return client.good("Am I unaffected?") if job is None else job.send(client)

    with ThreadPoolExecutor(len(cases) + 2) as pool:
        responses = list(pool.map(send, [*cases, None, None]))
    rows = []
    for case, resp in zip(cases, responses):
        try:
            body = resp.json()
        except ValueError:
            body = {"raw": resp.text[:200]}
        named = body.get("field") if isinstance(body, dict) else None
        ok = resp.status_code == case.status and (case.field is None or named == case.field
                                                  or str(named).startswith(f"{case.field}["))
        rows.append({"case": case.name, "status": resp.status_code, "expected": case.status, "field": named,
                     "expected_field": case.field, "ok": ok, "reason": body.get("reason") or body.get("message")})
    unicode = client.good("Qu'est-ce que c'est ? 这是什么？ 🙂 — ¿qué es?")
    mates = [r.status_code for r in responses[len(cases):]]
    return {"cases": rows, "all_ok": all(r["ok"] for r in rows), "batch_mates": mates,
            "unicode_question_status": unicode.status_code,
            "worker_restarted": {p.pid for p in worker_processes(server)} != pids}


def check_hostile_latency(server: tsctl.Server, cases: list[Hostile], copies: dict[str, int] | None = None,
                          cap_s: float = 120) -> dict:
    """For each hostile case in turn: send it (``copies[name]`` at once, default 1) and, while it is in
    flight, normal requests back to back; report the worst latency a normal request saw, the hostile
    statuses and the worker's peak RSS. A normal request still unanswered after ``cap_s`` counts as
    timed out and ends the run (the worker is stuck: later cases would only measure the same stall)."""
    client = Client(server, timeout=cap_s)
    baseline = []
    for i in range(3):
        t0 = time.monotonic()
        baseline.append((client.good(f"baseline {i}?").status_code, time.monotonic() - t0))
    rows = []
    for case in cases:
        n = (copies or {}).get(case.name, 1)
        done = threading.Event()
        hostile: list[int] = []
        rss: list[float] = [worker_rss_mb(server)]

        def attack(case: Hostile = case, n: int = n, done: threading.Event = done,
                   hostile: list[int] = hostile) -> None:
            def one(_: int) -> int:
                try:
                    return case.send(client).status_code
                except requests.RequestException:
                    return -1
            with ThreadPoolExecutor(n) as pool:
                hostile.extend(pool.map(one, range(n)))
            done.set()

        def sample(done: threading.Event = done, rss: list[float] = rss) -> None:
            while not done.wait(0.2):
                rss.append(worker_rss_mb(server))

        start = time.monotonic()
        threads = [threading.Thread(target=attack, daemon=True), threading.Thread(target=sample, daemon=True)]
        for t in threads:
            t.start()
        normal: list[tuple[int, float]] = []
        while not done.is_set():
            t0 = time.monotonic()
            try:
                status = client.good("Am I delayed?").status_code
            except requests.RequestException:
                status = -1
            normal.append((status, round(time.monotonic() - t0, 3)))
            if status == -1 or time.monotonic() - start > cap_s:
                break
        stuck = not done.wait(0 if normal and normal[-1][0] == -1 else cap_s)
        rows.append({"case": case.name, "copies": n, "hostile_statuses": hostile or ["no answer"],
                     "expected": case.status, "hostile_seconds": round(time.monotonic() - start, 2),
                     "normal": normal, "worst_normal_s": max((s for _, s in normal), default=None),
                     "normal_failed": sum(1 for st, _ in normal if st != 200),
                     "worker_rss_mb_before": round(rss[0], 1), "worker_rss_mb_peak": round(max(rss), 1),
                     "stuck": stuck})
        if stuck or (normal and normal[-1][0] == -1):
            break
    return {"baseline_s": [round(s, 3) for _, s in baseline], "baseline_statuses": [st for st, _ in baseline],
            "cases": rows, "cap_s": cap_s}


def check_sustained(server: tsctl.Server, users: int, duration: str, out: Path, max_requests: int = 0,
                    bad_share: float = 0.1, max_p95_ms: float = 30000) -> dict:
    """Locust (its own process) for ``duration``, or until ``max_requests`` completed (``duration`` then only
    bounds a hang), while the worker's RSS is sampled every second. ``bad_share`` of the requests are bad
    input that must get a 4xx; ``exit_code`` is 1 when a failure happened or p95 exceeds ``max_p95_ms``."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((round(time.monotonic() - start, 1), round(worker_rss_mb(server), 1)))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    env = {**os.environ, "G2U_STEPS": str(FAST["steps"]), "G2U_BAD_SHARE": str(bad_share)}
    cmd = [sys.executable, str(HERE / "run_loadtest.py"), "--host", server.url("inference"), "--users", str(users),
           "--spawn-rate", str(users), "--duration", duration, "--key-file", str(server.key_file),
           "--out", str(out), "--max-failure-ratio", "0", "--max-p95-ms", str(max_p95_ms),
           "--requests", str(max_requests)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    stop.set()
    sampler.join()
    stats_file = out / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    agg = stats.get("aggregated", {})
    rss = [mb for _, mb in samples]
    # Growth from the first sample after warm-up (10% of the run) to the last: the first requests allocate
    # caches (tokenizer, attention buffers) that are not a leak.
    warm = rss[max(1, len(rss) // 10)] if len(rss) > 1 else (rss[0] if rss else 0.0)
    return {"users": users, "duration": duration, "max_requests": max_requests, "exit_code": proc.returncode,
            "requests": agg.get("requests", 0),
            "failures": agg.get("failures", -1), "rps": agg.get("rps"), "p50_ms": agg.get("p50_ms"),
            "p95_ms": agg.get("p95_ms"), "per_endpoint": stats.get("endpoints", {}),
            "rss_mb_start": rss[0] if rss else None, "rss_mb_after_warmup": warm,
            "rss_mb_end": rss[-1] if rss else None, "rss_mb_max": max(rss) if rss else None,
            "rss_growth_mb": round(rss[-1] - warm, 1) if rss else None, "rss_samples": samples,
            "locust_tail": (proc.stdout + proc.stderr)[-2000:] if proc.returncode else ""}


def check_worker_kill(server: tsctl.Server, clients: int = 2, after_requests: int = 4, settle: int = 5,
                      request_timeout: float = 60) -> dict:
    """Kill the worker (SIGKILL) once ``after_requests`` requests succeeded while ``clients`` threads send
    requests back to back; TorchServe starts a new one. The recovery window runs from the kill to the first
    success of a request sent after it. In-flight requests normally get TorchServe's 507 "Worker died.";
    now and then one is never answered (the frontend loses it) and only the client's timeout ends it:
    those count as ``hung``."""
    client = Client(server, timeout=request_timeout)
    old = {p.pid for p in worker_processes(server)}
    log: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def loop(i: int) -> None:
        n = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                status = client.good(f"load {i}-{n}?").status_code
            except requests.RequestException:
                status = -1
            log.append((t0, time.monotonic(), status))
            n += 1

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    warm_deadline = time.monotonic() + 300  # bounds a hang only
    while sum(1 for _, _, s in log if s == 200) < after_requests and time.monotonic() < warm_deadline:
        stop.wait(0.1)
    killed_at = time.monotonic()
    for proc in worker_processes(server):
        proc.kill()
    deadline = killed_at + 180
    while time.monotonic() < deadline and not any(s == 200 and t0 > killed_at for t0, _, s in log):
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=300)
    recovered = [end for t0, end, s in log if s == 200 and t0 > killed_at]
    failures = [(round(t0 - killed_at, 2), s) for t0, _, s in log if s != 200]
    after = [client.good(f"after recovery {i}?").status_code for i in range(settle)]
    new = {p.pid for p in worker_processes(server)}
    return {"requests_before_kill": sum(1 for t0, _, _ in log if t0 < killed_at),
            "failed_requests": len(failures), "failures": failures, "hung": sum(1 for _, s in failures if s == -1),
            "recovery_window_s": round(min(recovered) - killed_at, 2) if recovered else None,
            "new_worker": bool(new) and not (new & old), "after_recovery": after}


def writer_env(endpoint: FakeHTTPServer, budget_s: float) -> dict[str, str]:
    """The server's environment for the openai writer: the fake endpoint, a secret key, a short budget."""
    return {"OPENAI_BASE_URL": endpoint.base_url, "OPENAI_API_KEY": SECRET_KEY,
            "G2U_WRITER_TIMEOUT_S": str(budget_s / 2), "G2U_WRITER_BUDGET_S": str(budget_s)}


def check_writer_faults(server: tsctl.Server, endpoint: FakeHTTPServer, budget_s: float) -> dict:
    """With the writer's endpoint hanging (``g2u.testing.fake_http.hanging_endpoint``), then down, answers
    still arrive with the library fallback."""
    client = Client(server)
    out = {}
    for phase in ("hanging", "down"):
        if phase == "down":
            endpoint.close()
        t0 = time.monotonic()
        r = client.good(f"Which way does the arrow point ({phase})?", writer="openai", family="extension")
        body = r.json()
        edit = body.get("edit") or {}
        out[phase] = {"status": r.status_code, "seconds": round(time.monotonic() - t0, 2),
                      "write_prompt_ms": body.get("timings_ms", {}).get("write_prompt"),
                      "writer": edit.get("writer"), "fallback": edit.get("writer_fallback"),
                      "reason": edit.get("writer_fallback_reason"), "prompt_name": edit.get("prompt_name"),
                      "response_has_key": SECRET_KEY in r.text}
    out["endpoint_requests"] = endpoint.hits
    out["key_sent_to_endpoint"] = any(SECRET_KEY in r["headers"].get("authorization", "") for r in endpoint.requests)
    return out


def check_security(server: tsctl.Server) -> dict:
    """Token required, loopback only, model API off, no path/URL fetching, no key in the logs."""
    client = Client(server)
    inference, management = server.url("inference"), server.url("management")
    no_token = requests.post(client.url, json={"question": "q?"}, timeout=30).status_code
    wrong = requests.post(client.url, json={"question": "q?"}, headers={"Authorization": "Bearer nope"},
                          timeout=30).status_code
    register = requests.post(f"{management}/models", params={"url": "https://example.com/x.mar"},
                             headers={"Authorization": f"Bearer {server.keys()['management']}"}, timeout=30)
    listening = set()
    for proc in server.processes():
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.add(f"{conn.laddr.ip}:{conn.laddr.port}")
        except psutil.Error:
            pass
    with probe() as target:
        url_status = client.json({"image": f"{target.url}/x.png", "question": "q?"}).status_code
        fields_status = client.json({"image": b64(image_bytes()), "question": "q?", "url": target.url}).status_code
    leaked = [str(p) for p in server.log_dir.rglob("*") if p.is_file() and SECRET_KEY in p.read_text(errors="ignore")]
    return {"no_token_status": no_token, "wrong_token_status": wrong, "register_model_status": register.status_code,
            "listening": sorted(listening),
            "all_loopback": bool(listening) and all(_loopback(a) for a in listening),
            "url_as_image_status": url_status, "url_field_status": fields_status, "probe_hits": target.hits,
            "key_in_logs": leaked, "inference_address": inference}


def _loopback(address: str) -> bool:
    """Java reports IPv4 sockets as IPv4-mapped IPv6 (``::ffff:127.0.0.1``)."""
    host = address.rsplit(":", 1)[0].removeprefix("::ffff:")
    return host in ("127.0.0.1", "::1")


# ---------------------------------------------------------------- the report
def markdown(report: dict) -> str:
    s, k, h, w, sec = (report[x] for x in ("sustained", "worker_kill", "hostile", "writer", "security"))
    lines = [
        "# g2u-serve reliability report", "",
        f"Demo checkpoint on CPU, {report['cpus']} cores, edit steps {FAST['steps']}.", "",
        "## Sustained load (locust)", "",
        f"{s['users']} users for {s['duration']}: {s['requests']} requests, {s['failures']} failures, "
        f"{s['rps']:.2f} req/s, p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms.",
        f"Worker RSS: {s['rss_mb_start']} MB at start, {s['rss_mb_after_warmup']} MB after warm-up, "
        f"{s['rss_mb_end']} MB at the end (growth {s['rss_growth_mb']} MB, max {s['rss_mb_max']} MB).", "",
        "| endpoint | requests | failures | req/s | p50 ms | p95 ms |", "|---|---|---|---|---|---|",
        *(f"| {name} | {e['requests']} | {e['failures']} | {e['rps']:.2f} | {e['p50_ms']} | {e['p95_ms']} |"
          for name, e in s["per_endpoint"].items()), "",
        "## Worker killed under load", "",
        f"Recovery window {k['recovery_window_s']} s (kill → first success of a request sent after it); "
        f"{k['failed_requests']} failed requests; new worker: {k['new_worker']}; after recovery: "
        f"{k['after_recovery']}.", "",
        "## Hostile input", "", "| case | status | field |", "|---|---|---|",
        *(f"| {r['case']} | {r['status']} (want {r['expected']}) | {r['field']} |" for r in h["cases"]), "",
        f"Batch-mates: {h['batch_mates']}; unicode question: {h['unicode_question_status']}; "
        f"worker restarted: {h['worker_restarted']}.", "",
        "## A normal request while a hostile one is in flight", "",
        f"Baseline (nothing hostile): {report['hostile_latency']['baseline_s']} s.", "",
        "| hostile input | copies | its statuses | worst normal latency s | normal failed | worker RSS MB peak |",
        "|---|---|---|---|---|---|",
        *(f"| {r['case']} | {r['copies']} | {r['hostile_statuses']} | {r['worst_normal_s']} | {r['normal_failed']} | "
          f"{r['worker_rss_mb_before']} → {r['worker_rss_mb_peak']} |" for r in report["hostile_latency"]["cases"]),
        "",
        "## Prompt-writer endpoint faults", "",
        *(f"- {phase}: HTTP {w[phase]['status']} in {w[phase]['seconds']} s, fallback {w[phase]['fallback']} "
          f"({w[phase]['reason']})" for phase in ("hanging", "down")), "",
        "## Security", "",
        f"- no token → {sec['no_token_status']}, wrong token → {sec['wrong_token_status']}",
        f"- listening: {', '.join(sec['listening'])} (loopback only: {sec['all_loopback']})",
        f"- model registration → {sec['register_model_status']}",
        f"- URL as image → {sec['url_as_image_status']}, URL field → {sec['url_field_status']}, "
        f"probe hits {sec['probe_hits']}",
        f"- API key in logs: {sec['key_in_logs'] or 'none'}; in responses: "
        f"{w['hanging']['response_has_key'] or w['down']['response_has_key']}",
    ]
    return "\n".join(lines) + "\n"


def markdown_clients(report: dict) -> list[str]:
    """The client-bounds rows of the report (``load_tests/reliability_clients.py``)."""
    if not report:
        return []
    lab, de, costs, inputs, own = (report[k] for k in ("labels_and_logs", "describe_explain", "costs", "inputs",
                                                       "own_answers"))
    lines = ["## What one client cannot do", "",
             f"- {lab['requests']} requests with unique large / forging field names → statuses {lab['statuses']}, "
             f"longest field echoed {lab['longest_field_echoed']} chars; g2u_errors series "
             f"{lab['g2u_errors_series_before']} → {lab['g2u_errors_series_after']}; forged series "
             f"{len(lab['forged_series'])}; /metrics {lab['metrics_bytes_before']} → {lab['metrics_bytes_after']} "
             f"bytes; logs grew {sum(lab['log_growth_bytes'].values())} bytes; frontend RSS "
             f"{lab['frontend_rss_mb']} MB, same pid {lab['frontend_same_pid']}",
             "- describe / explain batched with victims: " + ", ".join(f"{k} {v['status']}" for k, v in de.items()),
             "", "| cost case | statuses | seconds | worker RSS MB |", "|---|---|---|---|"]
    for name, row in costs.items():
        if name == "cheap_with_costly":
            continue
        lines.append(f"| {name} | {[r['status'] for r in row['responses']]} | "
                     f"{[r['seconds'] for r in row['responses']]} | {row['rss_mb_before']} → {row['rss_mb_peak']} |")
    pair = costs["cheap_with_costly"]
    lines += ["", f"- cheap batched with costly: body arrival {pair['body_arrival_s']} s, batch sizes "
                  f"{pair['cheap']['batch_size']}/{pair['costly']['batch_size']}",
              "", "| input | status | field | seconds |", "|---|---|---|---|",
              *(f"| {k} | {v['status']} | {v.get('field')} | {v.get('seconds')} |" for k, v in inputs.items()
                if isinstance(v, dict)),
              "", f"- own answers: alone == batched: {own['alone'] == own['batched']}, "
                  f"batch sizes {own['batch_sizes']}",
              ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--duration", default="180s")
    p.add_argument("--writer-budget", type=float, default=4.0)
    p.add_argument("--out", type=Path, default=Path("outputs/reliability"))
    p.add_argument("--mlflow", action="store_true")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from load_tests import reliability_clients

    endpoint = hanging_endpoint()
    with tempfile.TemporaryDirectory(prefix="g2u-reliability-") as tmp:
        server = tsctl.serve_demo(Path(tmp), extra_env=writer_env(endpoint, args.writer_budget))
        try:
            report = {"cpus": os.cpu_count(),
                      "hostile": check_hostile(server),
                      "hostile_latency": check_hostile_latency(server, single_request_cases(),
                                                               {"TIFF of 150 000 pages": 3}),
                      "sustained": check_sustained(server, args.users, args.duration, args.out / "locust"),
                      "writer": check_writer_faults(server, endpoint, args.writer_budget),
                      "security": check_security(server),
                      "clients": reliability_clients.check_all(server),
                      "worker_kill": check_worker_kill(server)}
        finally:
            server.stop()
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    text = markdown(report) + "\n".join(markdown_clients(report.get("clients", {})))
    (args.out / "report.md").write_text(text)
    print(text)
    if args.mlflow:
        import mlflow

        from mlflow_project.common import setup_tracking

        setup_tracking()
        with mlflow.start_run(run_name="reliability"):
            s, k = report["sustained"], report["worker_kill"]
            mlflow.log_metrics({k2: float(v) for k2, v in {
                "sustained.requests": s["requests"], "sustained.failures": s["failures"], "sustained.rps": s["rps"],
                "sustained.p95_ms": s["p95_ms"], "rss_growth_mb": s["rss_growth_mb"],
                "worker_kill.recovery_window_s": k["recovery_window_s"],
                "worker_kill.failed_requests": k["failed_requests"]}.items() if v is not None})
            mlflow.log_artifact(str(args.out / "report.json"))
            mlflow.log_artifact(str(args.out / "report.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
