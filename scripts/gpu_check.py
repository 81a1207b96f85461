"""One GPU check, ready for a lent CUDA machine: real-size random weights, `g2u bench --size real` stock
against fast, and the step scheduler against whole-batch serving at two concurrencies; one JSON.

    python scripts/gpu_check.py --out gpu_check.json            # CUDA: real size (~58 GB of bf16 weights)
    python scripts/gpu_check.py --dry --out /tmp/gpu_check.json # CPU: the same flow at the demo's size

Phases (each timed; a phase that would start past ``--budget-s`` is skipped and says so, so the run stays
under 8 minutes on an H100 whatever the first phases cost):

1. build: ``g2u.bench.sizes.build_qwen_image_edit("real")`` directly on the GPU in bf16 (never fp32 on the
   host), once; every later phase reuses it.
2. bench: ``g2u.bench.runner.run_bench`` (what ``g2u bench --size real`` runs) at 512², the schema's 30
   steps, true CFG 4: stock vs fast per stage with paired per-round ratios, their interval and the A/A
   control, drift, decode ms/token, the FLOP ledger against the measured times.
3. scheduler: closed-loop clients at each ``--concurrency`` (default 2 and 8) against (a) whole batches
   (dynamic batching's best case: the waiting requests form one batch, run to the end) and (b)
   ``g2u.scheduler.StepScheduler`` (clients submit as soon as their answer came back); requests/s,
   p50/p95 latency, their ratios, and the largest pixel difference between the two paths' thoughts for
   the same seeds.

What the device machine lacks (it has torch and transformers): this script imports no mlflow and no
TorchServe, but the Qwen-Image-Edit model classes are diffusers', and ``g2u`` imports pydantic, PyYAML,
torchmetrics, diskcache, Pillow and numpy. Carry their wheels and install them without dependencies:

    pip download --no-deps -d shared/wheels diffusers==0.42.1 torchmetrics lightning-utilities diskcache
    # on the device:  pip install --no-deps shared/wheels/*.whl   (``--wheels shared/wheels`` does it)

``--dry`` (tests/bench/test_gpu_check.py) runs every phase on CPU at the demo's size with one round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def install_wheels(folder: str | None) -> list[str]:
    """pip-install carried wheels (no dependencies: the machine's torch stays) when a module is missing."""
    if not folder:
        return []
    wheels = sorted(str(p) for p in Path(folder).glob("*.whl"))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", *wheels], check=True)
    return [Path(w).name for w in wheels]


def environment(device) -> dict[str, Any]:
    import torch
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "device": str(device),
            "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        info["diffusers"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def _p(xs: list[float], q: float) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def scheduler_phase(parts, device, size: tuple[int, int], steps: int, tokens: int, concurrency: list[int],
                    per_client: int) -> dict[str, Any]:
    """Whole batches against the step scheduler, closed-loop clients, same seeds on both."""
    import numpy as np
    import torch

    from g2u.backends.base import BackendInfo
    from g2u.backends.qwen_image_edit import QwenImageEditBackend
    from g2u.batch import RawItem, run_batch
    from g2u.bench.runner import QUESTION, sample_image
    from g2u.bench.sizes import qwen_image_edit_pipeline
    from g2u.devices import dtype_name
    from g2u.fastpath import apply_fast_path
    from g2u.pipeline import G2UPipeline
    from g2u.scheduler import StepScheduler

    pipe = qwen_image_edit_pipeline(parts).to(device)
    info = BackendInfo("qwen_image_edit", "random", True, str(device), dtype_name(pipe.transformer.dtype))
    backend = QwenImageEditBackend(pipe, info, default_edit_area=size[0] * size[1])
    apply_fast_path(backend)
    g2u = G2UPipeline(backend, thought_cache=None)
    image = sample_image(*size)

    def raw(seed: int) -> RawItem:
        return RawItem({"question": QUESTION, "steps": steps, "seed": seed, "edit_size": f"{size[0]}x{size[1]}",
                        "max_new_tokens": tokens}, image)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def batches(c: int) -> tuple[list[float], float, dict[int, Any]]:
        """Each round: the c clients' requests form one batch, run to the end (every client waits for it)."""
        lat, thoughts, seed = [], {}, 0
        start = time.perf_counter()
        for _ in range(per_client):
            t0 = time.perf_counter()
            outs = run_batch(g2u, [raw(seed + k) for k in range(c)])
            sync()
            ms = (time.perf_counter() - t0) * 1000
            for k, o in enumerate(outs):
                assert o.ok, o.error
                lat.append(ms)
                thoughts[seed + k] = np.asarray(o.result.thought.image)
            seed += c
        return lat, time.perf_counter() - start, thoughts

    def stepped(c: int) -> tuple[list[float], float, dict[int, Any]]:
        """c clients, each submitting its next request as soon as its answer came back."""
        sched = StepScheduler(g2u, max_rows=2 * c).start()
        lat, thoughts, lock = [], {}, threading.Lock()

        def client(k: int) -> None:
            for r in range(per_client):
                seed = r * c + k
                t0 = time.perf_counter()
                o = sched.submit(raw(seed)).result(timeout=600)
                ms = (time.perf_counter() - t0) * 1000
                assert o.ok, o.error
                with lock:
                    lat.append(ms)
                    thoughts[seed] = np.asarray(o.result.thought.image)

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(c)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        sched.close()
        return lat, wall, thoughts

    run_batch(g2u, [raw(10_000)])  # warm-up: first-call costs outside the timings
    out: dict[str, Any] = {"edit_size": list(size), "steps": steps, "tokens": tokens, "per_client": per_client,
                           "levels": []}
    for c in concurrency:
        row: dict[str, Any] = {"clients": c}
        results = {}
        for name, fn in (("batch", batches), ("step", stepped)):
            lat, wall, thoughts = fn(c)
            results[name] = thoughts
            row[name] = {"requests": len(lat), "req_per_s": len(lat) / wall, "p50_ms": _p(lat, 50),
                         "p95_ms": _p(lat, 95)}
        row["ratio_step_over_batch"] = {k: row["step"][k] / row["batch"][k] for k in ("req_per_s", "p50_ms", "p95_ms")}
        row["thought_max_abs_diff"] = int(max(np.abs(results["batch"][s].astype(int) - results["step"][s]).max()
                                              for s in results["batch"]))
        out["levels"].append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--dry", action="store_true", help="CPU, the demo's size, one round of everything")
    p.add_argument("--wheels", help="folder of wheels to pip-install --no-deps first (see the docstring)")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip a phase that would start after this")
    p.add_argument("--bench-reps", type=int, default=2)
    p.add_argument("--sched-steps", type=int, default=10, help="denoising steps of the scheduler phase")
    p.add_argument("--concurrency", default="2,8")
    p.add_argument("--per-client", type=int, default=2, help="requests each client sends per level")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    report: dict[str, Any] = {"wheels": install_wheels(args.wheels), "dry": args.dry, "phases_s": {},
                              "skipped": []}

    import torch

    from g2u.bench.runner import BenchConfig, run_bench
    from g2u.bench.sizes import build_qwen_image_edit
    from g2u.devices import resolve_dtype

    if not args.dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry for the CPU check", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry else "cuda")
    size_name = "tiny" if args.dry else "real"
    dtype = resolve_dtype(None, device)
    report["environment"] = environment(device)

    def phase(name: str, fn):
        elapsed = time.perf_counter() - t_start
        if elapsed >= args.budget_s:
            report["skipped"].append(f"{name}: {elapsed:.0f} s spent, over the {args.budget_s:.0f} s budget")
            Path(args.out).write_text(json.dumps(report, indent=2, default=str))
            return None
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a failed phase is reported, the next still runs
            report.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            return None
        finally:
            report["phases_s"][name] = round(time.perf_counter() - t0, 1)
            Path(args.out).write_text(json.dumps(report, indent=2, default=str))

    parts = phase("build", lambda: build_qwen_image_edit(size_name, 0, device=device, dtype=dtype))
    if parts is None:
        return 1
    bench_cfg = BenchConfig(size=size_name, device=str(device), reps=1 if args.dry else args.bench_reps,
                            warmup=0 if args.dry else 1, flops=True)
    report["bench"] = phase("bench", lambda: run_bench(bench_cfg, parts=parts))
    levels = [int(c) for c in args.concurrency.split(",") if c]
    edit = (64, 64) if args.dry else (512, 512)
    report["scheduler"] = phase("scheduler", lambda: scheduler_phase(
        parts, device, edit, 2 if args.dry else args.sched_steps, 4 if args.dry else 32,
        [1, 2] if args.dry else levels, 1 if args.dry else args.per_client))
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    if device.type == "cuda":
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: report[k] for k in ("phases_s", "skipped", "total_s")} | {"errors": report.get("errors")}))
    return 0 if not report.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
