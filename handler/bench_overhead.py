"""Serving overhead per mode: REST p50 latency through TorchServe minus in-process p50 latency.

    python -m handler.bench_overhead [--reps 10] [--steps 30] [--max-batch-delay MS]

In-process is what `g2u predict` does after loading the model (the batch path: parse, check, imagine,
understand) on the same demo checkpoint; REST is one multipart POST at a time to a TorchServe started
here on free loopback ports. The difference is the serving cost: HTTP, the frontend's queue and batch
wait (a lone request waits maxBatchDelay for batch-mates), the worker socket, preprocess and postprocess.
Prints numbers; it is not a test.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from handler import archive, tsctl

MODES = ("baseline", "g2u", "replace", "textual_cot")


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


def measure(checkpoint: Path, url: str, key_file: Path, image: bytes, fields: dict[str, str],
            reps: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per mode, (in-process ms, REST ms); the two alternate rep by rep so that load from anything
    else on the machine hits both alike."""
    from g2u.batch import RawItem, run_batch
    from g2u.pipeline import G2UPipeline

    pipe = G2UPipeline.from_checkpoint(str(checkpoint))
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {tsctl.read_keys(key_file)['inference']}"
    out: dict[str, tuple[list[float], list[float]]] = {}
    for mode in MODES:
        local, rest = [], []
        for rep in range(reps + 1):  # the first of each is a warm-up
            start = time.perf_counter()
            [outcome] = run_batch(pipe, [RawItem({**fields, "mode": mode}, image)])
            assert outcome.ok, outcome.error
            local_ms = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            r = session.post(url, data={**fields, "mode": mode}, files={"image": ("sample.png", image, "image/png")},
                             timeout=600)
            if tsctl.key_rejected(r):  # the key expired or was rotated: re-read key_file.json, send again
                session.headers["Authorization"] = f"Bearer {tsctl.read_keys(key_file)['inference']}"
                r = session.post(url, data={**fields, "mode": mode},
                                 files={"image": ("sample.png", image, "image/png")}, timeout=600)
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
    p.add_argument("--steps", type=int, default=30, help="denoising steps (the paper's 30 by default)")
    p.add_argument("--max-batch-delay", type=int, help="override the shipped maxBatchDelay (ms)")
    args = p.parse_args(argv)
    image = sample_png()
    fields = {"question": "Which shape is red?", "steps": str(args.steps), "seed": "0"}

    with tempfile.TemporaryDirectory(prefix="g2u-bench-") as tmp:
        home = Path(tmp)
        srv = tsctl.serve_demo(home, overrides={"maxBatchDelay": args.max_batch_delay}, ready_timeout=300)
        checkpoint = home / "demo" / archive.DEFAULT_DEMO
        try:
            desc = srv.wait_ready(10)
            url = f"{srv.url('inference')}/predictions/g2u"
            results = measure(checkpoint, url, srv.key_file, image, fields, args.reps)
        finally:
            srv.stop()

    print(f"demo checkpoint {archive.DEFAULT_DEMO}, {args.steps} steps, {args.reps} reps per mode, "
          f"batchSize {desc['batchSize']}, maxBatchDelay {desc['maxBatchDelay']} ms, {os.cpu_count()} CPUs")
    print(f"{'mode':<12} {'in-process p50 ms':>18} {'REST p50 ms':>12} {'overhead ms':>12}")
    for mode in MODES:
        a, b = p50(results[mode][0]), p50(results[mode][1])
        print(f"{mode:<12} {a:>18.1f} {b:>12.1f} {b - a:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
