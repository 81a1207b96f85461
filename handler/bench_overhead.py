"""Serving overhead per mode: REST p50 latency through TorchServe minus in-process p50 latency.

    python -m handler.bench_overhead [--reps 10] [--steps N] [--max-batch-delay MS[,MS...]]
                                     [--concurrency 1,2,4 --requests 12] [--modes g2u]

In-process is what `g2u predict` does after loading the model (the batch path: parse, check, imagine,
understand) on the same demo checkpoint; REST is one multipart POST at a time to a TorchServe started
here on free loopback ports; the two alternate rep by rep and the overhead's 95% interval is a paired
bootstrap over the reps (``g2u.bench.stats.paired_difference``). The difference is the serving cost:
HTTP, the frontend's queue and batch wait (a lone request waits maxBatchDelay for batch-mates), the worker
socket, preprocess and postprocess.
With ``--concurrency``, each level keeps that many clients posting back to back and reports throughput
(requests/min) and p50/p95 latency: batches form under load when requests queue while the worker is busy.
Several ``--max-batch-delay`` values are each measured on a fresh server. Prints numbers; not a test.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from g2u.modes import modes_for
from g2u.schema import field_default
from handler import archive, tsctl

MODES = modes_for(archive.DEFAULT_DEMO)
"""Every mode the served demo checkpoint offers (g2u.modes)."""


def sample_png() -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (256, 192), (235, 235, 240))
    draw = ImageDraw.Draw(img)
    draw.ellipse((40, 50, 110, 120), fill=(200, 30, 30))
    draw.rectangle((140, 60, 210, 130), fill=(30, 60, 200))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def throughput(url: str, key: str, image: bytes, fields: dict[str, str], clients: int,
               requests_total: int) -> dict[str, float]:
    """``clients`` threads post back to back until ``requests_total`` answers came back; requests/min over
    the whole wall time, p50/p95 of the per-request latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [requests_total]
    errors: list[str] = []

    def client() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            start = time.perf_counter()
            r = session.post(url, data=fields, files={"image": ("sample.png", image, "image/png")}, timeout=600)
            ms = (time.perf_counter() - start) * 1000
            with lock:
                if r.ok:
                    latencies.append(ms)
                else:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    return {"clients": clients, "requests": len(latencies), "req_per_min": 60 * len(latencies) / wall,
            "p50_ms": p50(latencies), "p95_ms": p95(latencies)}


def measure(checkpoint: Path, url: str, key: str, image: bytes, fields: dict[str, str],
            reps: int, modes: tuple[str, ...] = MODES) -> dict[str, tuple[list[float], list[float]]]:
    """Per mode, (in-process ms, REST ms); the two alternate rep by rep so that load from anything
    else on the machine hits both alike."""
    from g2u.batch import RawItem, run_batch
    from g2u.pipeline import G2UPipeline

    pipe = G2UPipeline.from_checkpoint(str(checkpoint))
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    out: dict[str, tuple[list[float], list[float]]] = {}
    for mode in modes:
        local, rest = [], []
        for rep in range(reps + 1):  # the first of each is a warm-up
            start = time.perf_counter()
            [outcome] = run_batch(pipe, [RawItem({**fields, "mode": mode}, image)])
            assert outcome.ok, outcome.error
            local_ms = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            r = session.post(url, data={**fields, "mode": mode}, files={"image": ("sample.png", image, "image/png")},
                             timeout=600)
            rest_ms = (time.perf_counter() - start) * 1000
            r.raise_for_status()
            if rep:
                local.append(local_ms)
                rest.append(rest_ms)
        out[mode] = (local, rest)
    return out


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--steps", type=int, default=field_default("steps"),
                   help="denoising steps (default: the schema's, the paper's %(default)s)")
    p.add_argument("--max-batch-delay", default="",
                   help="maxBatchDelay in ms, comma-separated to compare (default: the shipped one)")
    p.add_argument("--modes", default=",".join(MODES), help="modes for the overhead table")
    p.add_argument("--concurrency", default="", help="e.g. 1,2,4: throughput with that many clients")
    p.add_argument("--requests", type=int, default=12, help="requests per concurrency level")
    p.add_argument("--scheduler", choices=["batch", "step"], default="batch",
                   help="batch: dynamic batching; step: the step scheduler (asyncCommunication, batchSize 1)")
    args = p.parse_args(argv)
    image = sample_png()
    fields = {"question": "Which shape is red?", "steps": str(args.steps), "seed": "0"}
    modes = tuple(m for m in args.modes.split(",") if m)
    delays = [int(d) for d in args.max_batch_delay.split(",") if d] or [None]
    levels = [int(c) for c in args.concurrency.split(",") if c]

    for delay in delays:
        with tempfile.TemporaryDirectory(prefix="g2u-bench-") as tmp:
            home = Path(tmp)
            kind = ({"asyncCommunication": True, "batchSize": 1} if args.scheduler == "step"
                    else {"asyncCommunication": False})
            srv = tsctl.serve_demo(home, overrides={"maxBatchDelay": delay, **kind}, ready_timeout=300)
            checkpoint = home / "demo" / archive.DEFAULT_DEMO
            try:
                desc = srv.wait_ready(10)
                url = f"{srv.url('inference')}/predictions/g2u"
                key = srv.keys()["inference"]
                results = measure(checkpoint, url, key, image, fields, args.reps, modes) if args.reps else {}
                loads = [throughput(url, key, image, {**fields, "mode": "g2u"}, c, args.requests) for c in levels]
            finally:
                srv.stop()

        print(f"demo checkpoint {archive.DEFAULT_DEMO}, {args.steps} steps, {args.reps} reps per mode, "
              f"batchSize {desc['batchSize']}, maxBatchDelay {desc['maxBatchDelay']} ms, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        if results:
            from g2u.bench.stats import paired_difference

            print(f"{'mode':<12} {'in-process p50 ms':>18} {'REST p50 ms':>12} {'overhead ms':>12} "
                  f"{'95% interval':>18} {'pairs':>6}")
            for mode in modes:
                a, b = p50(results[mode][0]), p50(results[mode][1])
                d = paired_difference(*results[mode])
                span = f"[{d['low']:.1f}, {d['high']:.1f}]"
                print(f"{mode:<12} {a:>18.1f} {b:>12.1f} {b - a:>12.1f} {span:>18} {d['pairs']:>6}")
        if loads:
            print(f"{'clients':>8} {'requests':>9} {'req/min':>9} {'p50 ms':>9} {'p95 ms':>9}")
            for row in loads:
                print(f"{row['clients']:>8} {row['requests']:>9} {row['req_per_min']:>9.1f} {row['p50_ms']:>9.1f} "
                      f"{row['p95_ms']:>9.1f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
