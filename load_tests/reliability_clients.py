"""Issue 25's rows of the reliability catalogue: what one client must not do to the server, its batch-mates
or what operators read. Each check returns a JSON-able dict; tests/serving/test_reliability.py asserts on it with
small sizes (safe on a shared 2-core machine), ``make reliability`` runs it at report size.

Against a READY server (``handler.tsctl.Server``):
    check_labels_and_logs   unique large / forging field names: fixed metric labels, inert log lines,
                            bounded /metrics and logs, the frontend alive
    check_describe_explain  describe header, /explanations, :explain, /v2/…/explain batched with victims
    check_costs             long prompts, candidates × tokens, textual_cot, a brought 4096² thought, a
                            tiny thought; a cheap item's answer leaving before a costly batch-mate's
    check_inputs            the single requests that reached a 500 (nested JSON text, booleans, repeated
                            and empty-named form fields, a base64 thought in a form, 1.5 M TIFF strips)
    check_own_answers       batch-mates answered differently, each as when sent alone
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import requests
from PIL import Image

from handler import tsctl
from load_tests import hostile_files
from load_tests.reliability import FAST, Client, b64, image_bytes, worker_rss_mb


def _metrics(server: tsctl.Server) -> tuple[str, float]:
    t0 = time.monotonic()
    text = requests.get(f"{server.url('metrics')}/metrics", timeout=60).text
    return text, round(time.monotonic() - t0, 3)


def _series(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def _frontend_rss_mb(server: tsctl.Server) -> float:
    procs = server.processes()
    try:
        return round(procs[0].memory_info().rss / 2**20, 1) if procs else 0.0
    except psutil.Error:
        return 0.0


def _log_bytes(server: tsctl.Server) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in server.log_dir.glob("*.log")}


FORGERIES = {
    "newline_metrics": "x\n[METRICS]g2u_errors.Count:987654|#ModelName:g2u,Level:Model,Kind:FORGED,Field:y"
                       "|#type:COUNTER",
    "hostname_label": "z|#hostname:forged-host,1",
    "ansi_cr": "\x1b[31mred\x1b[0m\rOVERWRITTEN",
}


def check_labels_and_logs(server: tsctl.Server, requests_n: int = 20, key_chars: int = 256 * 1024) -> dict:
    """``requests_n`` requests, each with a unique unknown key of ``key_chars`` characters, then forging
    names and values: each gets 400 naming a short field; /metrics gains no series per key and no
    forged one; the logs gain no raw control byte and a bounded amount per request; the frontend lives."""
    client = Client(server)
    before_text, before_s = _metrics(server)
    logs_before, rss_before, pid = _log_bytes(server), _frontend_rss_mb(server), server.pid()
    statuses, fields = [], []
    for i in range(requests_n):
        key = f"k{i:04d}" + "x" * (key_chars - 5)
        r = client.json({"image": b64(image_bytes()), "question": "q?", key: 1})
        statuses.append(r.status_code)
        fields.append(len(str(r.json().get("field", ""))))
    for text in FORGERIES.values():
        for body in ({"image": b64(image_bytes()), "question": "q?", text: 1},
                     {"image": b64(image_bytes()), "question": text, "mode": text}):
            r = client.json(body)
            statuses.append(r.status_code)
            fields.append(len(str(r.json().get("field", ""))))
    deadline = time.monotonic() + 60  # metrics are flushed by the frontend every few seconds
    while True:
        after_text, after_s = _metrics(server)
        errors = sum(float(line.rsplit(" ", 1)[1]) for line in _series(after_text, "g2u_errors"))
        before_errors = sum(float(line.rsplit(" ", 1)[1]) for line in _series(before_text, "g2u_errors"))
        if errors - before_errors >= len(statuses) or time.monotonic() > deadline:
            break
        time.sleep(1)
    logs_after = _log_bytes(server)
    raw_control = {}
    for path in server.log_dir.glob("*.log"):
        data = path.read_bytes()
        raw_control[path.name] = {"esc": data.count(b"\x1b"), "cr": data.count(b"\r"),
                                  "forged_series": data.count(b"Kind:FORGED"), "key_text": data.count(b"x" * 200)}
    labels = sorted({m.group(1) for m in re.finditer(r'Field="([^"]*)"', "\n".join(_series(after_text, "g2u_errors")))})
    alive = client.good("Still serving?").status_code
    return {"requests": len(statuses), "statuses": sorted(set(statuses)), "longest_field_echoed": max(fields),
            "g2u_errors_series_before": len(_series(before_text, "g2u_errors")),
            "g2u_errors_series_after": len(_series(after_text, "g2u_errors")), "field_labels": labels,
            "forged_series": [line for line in after_text.splitlines() if "FORGED" in line or "forged-host" in line],
            "metrics_bytes_before": len(before_text), "metrics_bytes_after": len(after_text),
            "metrics_scrape_s": [before_s, after_s],
            "log_growth_bytes": {k: logs_after.get(k, 0) - logs_before.get(k, 0) for k in logs_after},
            "log_raw": raw_control, "frontend_rss_mb": [rss_before, _frontend_rss_mb(server)],
            "frontend_same_pid": server.pid() == pid, "after_status": alive}


def _concurrent(jobs: list, timeout: float = 300) -> list:
    barrier = threading.Barrier(len(jobs))

    def run(job):
        barrier.wait()
        t0 = time.monotonic()
        try:
            r = job()
            return r, round(time.monotonic() - t0, 3)
        except requests.RequestException as exc:
            return exc, round(time.monotonic() - t0, 3)

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


def _row(resp, seconds) -> dict:
    if isinstance(resp, Exception):
        return {"status": -1, "error": type(resp).__name__, "seconds": seconds}
    try:
        body = resp.json()
    except ValueError:
        body = {"raw": resp.text[:200]}
    body = body if isinstance(body, dict) else {"raw": str(body)[:200]}
    return {"status": resp.status_code, "seconds": seconds, "error": body.get("error"), "field": body.get("field"),
            "batch_size": body.get("batch_size"), "answer": body.get("answer"), "model": body.get("model"),
            "identity": body.get("identity"), "id": body.get("id")}


def check_describe_explain(server: tsctl.Server) -> dict:
    """The describe header and the three explain paths sent at the same moment as two normal requests:
    each gets its own answer (describe 200 with the model, explain 501), the normal ones 200."""
    client = Client(server)
    base = server.url("inference")
    body = {"image": b64(image_bytes()), "question": "Explain me?", **FAST}
    names = ["describe", "explanations", "kserve_v1_explain", "kserve_v2_explain", "victim_1", "victim_2"]
    jobs = [lambda: client.post(headers={"describe": "True"}, json=body),
            lambda: requests.post(f"{base}/explanations/{server.model_name}", headers=client.auth, json=body,
                                  timeout=120),
            lambda: requests.post(f"{base}/v1/models/{server.model_name}:explain", headers=client.auth, json=body,
                                  timeout=120),
            lambda: requests.post(f"{base}/v2/models/{server.model_name}/explain", headers=client.auth, json=body,
                                  timeout=120),
            lambda: client.good("Victim one?"), lambda: client.good("Victim two?")]
    return {name: _row(*res) for name, res in zip(names, _concurrent(jobs))}


def _flat_png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def check_costs(server: tsctl.Server, thought_side: int = 4096) -> dict:
    """Requests whose cost had no bound: each answered (refused with 422/400 before any work, or computed
    at a bounded size) with the worker's RSS sampled; and a cheap request batched with a costly one gets
    its answer's bytes first."""
    client = Client(server, timeout=300)
    long_text = {"question": "What is this 🙂? " * 250, "options": ["🙂" * 1000] * 26, "layout": "multiturn"}
    cases = {
        "long_prompt_multiturn": {**long_text},
        "long_prompt_two_at_once": {**long_text, "mode": "baseline"},
        "candidates_8_x_2048_tokens": {"candidates": 8, "max_new_tokens": 2048},
        "textual_cot_4096_reasoning": {"mode": "textual_cot", "reasoning_tokens": 4096, "max_new_tokens": 600},
        "tiny_thought_5px": {"thought": b64(_flat_png((5, 5)))},
        f"brought_thought_{thought_side}px": {"thought": b64(_flat_png((thought_side, thought_side)))},
    }
    rows = {}
    for name, fields in cases.items():
        copies = 2 if name == "long_prompt_two_at_once" else 1
        rss = [worker_rss_mb(server)]
        done = threading.Event()

        def sample(done: threading.Event = done, rss: list = rss) -> None:
            while not done.wait(0.2):
                rss.append(worker_rss_mb(server))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        body = {"image": b64(image_bytes()), **FAST, "question": "What is shown?", **fields}
        results = _concurrent([lambda body=body: client.json(body)] * copies)
        done.set()
        sampler.join()
        rows[name] = {"responses": [_row(*res) for res in results], "rss_mb_before": round(rss[0], 1),
                      "rss_mb_peak": round(max(rss), 1)}
    # A cheap request (no stage I) batched with a costly one (40 steps): cost groups run it first and its
    # answer's bytes leave before the costly one is computed (TorchServe completes both responses together).
    arrivals: dict[str, float] = {}
    start = time.monotonic()

    def streamed(name: str, body: dict):
        def job():
            r = requests.post(client.url, headers=client.auth, json=body, timeout=300, stream=True)
            data = b""
            for chunk in r.iter_content(chunk_size=None):
                data += chunk
                if name not in arrivals and data.strip().endswith(b"}"):
                    try:
                        json.loads(data)
                        arrivals[name] = round(time.monotonic() - start, 3)
                    except ValueError:
                        pass
            r._content = data  # noqa: SLF001 - the body read above, for .json()
            return r
        return job

    cheap = {"image": b64(image_bytes()), "question": "Cheap?", "mode": "baseline"}
    costly = {"image": b64(image_bytes()), "question": "Costly?", "steps": 40}
    pair = _concurrent([streamed("costly", costly), streamed("cheap", cheap)])
    rows["cheap_with_costly"] = {"costly": _row(*pair[0]), "cheap": _row(*pair[1]), "body_arrival_s": arrivals,
                                 "chunked": [getattr(r, "headers", {}).get("transfer-encoding") for r, _ in pair]}
    return rows


def _form(client: Client, fields: list[tuple[str, str]], image: bytes | None = None) -> requests.Response:
    files = {"image": ("img.png", image or image_bytes(), "image/png")}
    return client.post(data=fields, files=files)


def check_inputs(server: tsctl.Server) -> dict:
    """Single requests that reached a 500 once: each gets its 4xx naming the field, or 200
    where the README allows it (a base64 thought in a form field)."""
    client = Client(server)
    deep = "[" * 100_000 + "]" * 100_000
    fast = [(k, str(v)) for k, v in FAST.items()]
    empty_name = (b'--B\r\nContent-Disposition: form-data; name=""\r\n\r\nhello\r\n'
                  b'--B\r\nContent-Disposition: form-data; name="question"\r\n\r\nq?\r\n--B--\r\n')
    strips = hostile_files.many_strip_tiff()
    cases = {
        "options_json_nested_100k": lambda: _form(client, [("question", "q?"), ("options", deep), *fast]),
        "candidate_prompts_json_nested_100k": lambda: _form(client, [("question", "q?"), ("candidate_prompts", deep),
                                                                     *fast]),
        "timeout_s_true": lambda: client.good(timeout_s=True),
        "repeated_form_field": lambda: _form(client, [("question", "a?"), ("question", "b?"), *fast]),
        "base64_thought_form_field": lambda: _form(client, [("question", "q?"), ("thought", b64(image_bytes())),
                                                            *fast]),
        "field_name_300kb": lambda: client.good(**{"f" * 300_000: 1}),
        "tiff_1_5m_strips": lambda: client.post(data={"question": "q?", **FAST},
                                                files={"image": ("a.tif", strips, "image/tiff")}),
        "multipart_empty_name": lambda: client.raw(empty_name, "multipart/form-data; boundary=B"),
    }
    out = {}
    for name, send in cases.items():
        t0 = time.monotonic()
        try:
            r = send()
            row = _row(r, round(time.monotonic() - t0, 3))
            row["body_bytes"] = len(r.content)
            row["java_in_body"] = "java" in r.text.lower() or "exception" in r.text.lower()
            if name == "base64_thought_form_field" and r.ok:
                row["provided"] = (r.json().get("edit") or {}).get("provided")
        except requests.RequestException as exc:
            row = {"status": -1, "error": type(exc).__name__, "seconds": round(time.monotonic() - t0, 3)}
        out[name] = row
    out["after_status"] = client.good("Still fine?").status_code
    return out


OWN_INPUTS = [((230, 30, 30), "What colour is the big square?"),
              ((30, 200, 40), "Is there any text in this picture at all?"),
              ((20, 40, 220), "How many people are standing on the left?"),
              ((240, 240, 20), "Which way does the arrow point?")]


def _own_image(color: tuple[int, int, int]) -> bytes:
    img = Image.new("RGB", (96, 64), color)
    for x in range(0, 96, 6):
        img.putpixel((x, 32), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def check_own_answers(server: tsctl.Server) -> dict:
    """Each input alone (the reference answers), then all at once (batched): every batch-mate must get the
    answer it got alone, and the inputs are ones the demo model answers differently, so a batch whose
    answers were swapped or shared fails."""
    client = Client(server, timeout=300)
    bodies = [{"image": b64(_own_image(c)), "question": q, **FAST, "id": f"own-{i}"}
              for i, (c, q) in enumerate(OWN_INPUTS)]
    alone = [client.json(b).json() for b in bodies]
    together = [_row(*res) for res in _concurrent([lambda b=b: client.json(b) for b in bodies])]
    return {"alone": [a.get("answer") for a in alone], "batched": [t["answer"] for t in together],
            "batched_status": [t["status"] for t in together], "batch_sizes": [t["batch_size"] for t in together],
            "ids": [t.get("id") for t in together]}


def check_all(server: tsctl.Server) -> dict:
    """Every client-bounds row at report size."""
    return {"labels_and_logs": check_labels_and_logs(server, requests_n=60, key_chars=1024 * 1024),
            "describe_explain": check_describe_explain(server), "costs": check_costs(server),
            "inputs": check_inputs(server), "own_answers": check_own_answers(server)}
