"""Dynamic batching against the step scheduler under Poisson load, back to back on one machine.

    python load_tests/compare_schedulers.py [--rates 0.15,0.4,1.0] [--duration 90] [--steps 10] [--mlflow]
    mlflow run . -e loadtest_schedulers

Both schedulers (``batch``: TorchServe's dynamic batching, the shipped batchSize/maxBatchDelay;
``step``: ``g2u.scheduler`` under asyncCommunication) get a demo TorchServe here on free ports, warmed
up; then, rate by rate and one scheduler after the other, locust (its own process: gevent never shares one
with mlflow) offers Poisson arrivals at
each rate for ``--duration`` seconds (load_tests/locustfile.py, ``G2U_ARRIVAL_RATE``; g2u mode, good
requests only, one picture so every request has the same working size). Per scheduler and rate: answers/s,
p50/p95 latency, p50/p95 queue time (latency − the server's compute time: time spent waiting, for a batch
or in the worker's admission queue, plus HTTP), and the step/batch ratios of each, with the machine's load
average (other tenants share its cores) sampled before and after each run. Writes ``results.json``; with
``--mlflow`` logs it as one run (params, metrics ``{kind}.{rate}.{name}`` and ``ratio.{rate}.{name}``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

KINDS = {
    "batch": {"asyncCommunication": False, "batchSize": 4, "maxBatchDelay": 5},
    "step": {"asyncCommunication": True, "batchSize": 1},
}
RATIOS = ("throughput_rps", "p50_ms", "p95_ms", "queue_p50_ms", "queue_p95_ms")


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def sample_image(folder: Path) -> None:
    """One picture (256×192): every request then has the same working size, as under a real client's
    traffic of one camera; mixed sizes only split both schedulers' batches alike."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (256, 192), (235, 235, 240))
    draw = ImageDraw.Draw(img)
    draw.ellipse((40, 50, 110, 120), fill=(200, 30, 30))
    draw.rectangle((140, 60, 210, 130), fill=(30, 60, 200))
    folder.mkdir(parents=True, exist_ok=True)
    img.save(folder / "sample.png")


def warm_up(srv, image_dir: Path, steps: str, n: int = 6) -> None:
    """A few concurrent requests first, so first-call costs (allocator, kernels) fall outside the runs."""
    import threading

    import requests

    url, key = f"{srv.url('inference')}/predictions/g2u", srv.keys()["inference"]
    data = (image_dir / "sample.png").read_bytes()

    def post() -> None:
        requests.post(url, data={"question": "Which shape is red?", "steps": steps},
                      files={"image": ("sample.png", data, "image/png")},
                      headers={"Authorization": f"Bearer {key}"}, timeout=600)

    for _ in range(2):
        threads = [threading.Thread(target=post) for _ in range(n // 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def run_locust(srv, rate: float, duration: int, users: int, image_dir: Path, steps: str, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    timings = out / "timings.csv"
    timings.unlink(missing_ok=True)
    env = {**os.environ, "G2U_ARRIVAL_RATE": str(rate), "G2U_TIMINGS_CSV": str(timings), "G2U_MODE_MIX": "g2u:1",
           "G2U_BAD_SHARE": "0", "G2U_IMAGE_DIR": str(image_dir), "G2U_STEPS": steps,
           "G2U_TOKEN": srv.keys()["inference"], "PYTHONPATH": str(ROOT),
           "G2U_FINAL_STATS_CSV": str(out / "locust_final_stats.csv")}
    locust = Path(sys.executable).parent / "locust"
    cmd = [str(locust if locust.exists() else "locust"), "-f", str(HERE / "locustfile.py"), "--headless",
           "--host", srv.url("inference"), "-u", str(users), "-r", str(users), "--run-time", f"{duration}s",
           "--stop-timeout", "120", "--only-summary", "--exit-code-on-error", "0"]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not timings.is_file():
        raise RuntimeError(f"locust failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rows = list(csv.DictReader(timings.open()))
    from load_tests.run_loadtest import read_stats

    failures = read_stats(out / "locust").get("aggregated", {}).get("failures", -1)
    lat = [float(r["latency_ms"]) for r in rows]
    queue = [float(r["queue_ms"]) for r in rows]
    first = min(float(r["start"]) - float(r["latency_ms"]) / 1000 for r in rows) if rows else 0
    last = max(float(r["start"]) for r in rows) if rows else 1
    batches = [int(float(r["batch_size"])) for r in rows if r.get("batch_size")]
    return {"rate": rate, "answers": len(rows), "failures": failures, "wall_s": round(wall, 1),
            "throughput_rps": len(rows) / max(last - first, 1e-9), "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95), "queue_p50_ms": percentile(queue, 50),
            "queue_p95_ms": percentile(queue, 95), "mean_batch": statistics.fmean(batches) if batches else None,
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def measure(kinds: list[str], rates: list[float], duration: int, users: int, steps: str, image_dir: Path,
            out: Path, env: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """Both servers up at once (the idle one costs nothing), measured rate by rate, kind after kind: the
    pair at one rate is minutes apart, not the whole run, so load that drifts hits both alike."""
    from handler import tsctl

    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="g2u-sched-") as tmp:
        servers = {}
        try:
            for kind in kinds:
                servers[kind] = tsctl.serve_demo(Path(tmp) / kind, overrides=KINDS[kind], ready_timeout=300,
                                                 extra_env=env)
                warm_up(servers[kind], image_dir, steps)
            for rate in rates:
                for kind in kinds:
                    row = run_locust(servers[kind], rate, duration, users, image_dir, steps,
                                     out / kind / f"rate{rate:g}")
                    print(json.dumps({"scheduler": kind, **row}), flush=True)
                    runs[kind].append(row)
        finally:
            for srv in servers.values():
                srv.stop()
    return runs


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="0.15,0.4,1.0", help="Poisson arrival rates (requests/s): light, near "
                                                      "saturation, over")
    p.add_argument("--duration", type=lambda v: int(float(v)), default=90, help="seconds of arrivals per rate")
    p.add_argument("--users", type=lambda v: int(float(v)), default=32,
                   help="locust users (more than the requests in flight)")
    p.add_argument("--steps", default="10", help="denoising steps per request")
    p.add_argument("--kinds", default="batch,step")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "scheduler_loadtest")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="the workers' OMP_WAIT_POLICY ('' = the library's, active spinning): on a machine whose "
                        "cores other tenants share, spinning OpenMP threads made a demo request 50x slower")
    p.add_argument("--mlflow", action="store_true")
    args = p.parse_args(argv)
    env = {"OMP_WAIT_POLICY": args.omp_wait_policy} if args.omp_wait_policy else {}
    rates = [float(r) for r in args.rates.split(",") if r]
    image_dir = args.out / "images"
    sample_image(image_dir)
    results = {"machine": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()}, "rates": rates,
               "duration_s": args.duration, "users": args.users, "steps": args.steps, "runs": {}}
    results["omp_wait_policy"] = args.omp_wait_policy or None
    results["runs"] = measure(args.kinds.split(","), rates, args.duration, args.users, args.steps, image_dir,
                              args.out, env)
    if {"batch", "step"} <= set(results["runs"]):
        results["ratios"] = {f"{rate:g}": {k: b[k] and s[k] / b[k] for k in RATIOS}
                             for rate, b, s in zip(rates, results["runs"]["batch"], results["runs"]["step"])}
    results["machine"]["load_at_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    if args.mlflow:
        log_to_mlflow(results, args)
    return 0


def table(results: dict) -> str:
    buf = io.StringIO()
    buf.write(f"{'sched':<6} {'rate/s':>6} {'answers':>7} {'ans/s':>6} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'q p50':>8} {'q p95':>8} {'batch':>5} {'load':>9}\n")
    for kind, rows in results["runs"].items():
        for r in rows:
            buf.write(f"{kind:<6} {r['rate']:>6g} {r['answers']:>7} {r['throughput_rps']:>6.2f} {r['p50_ms']:>8.0f} "
                      f"{r['p95_ms']:>8.0f} {r['queue_p50_ms']:>8.0f} {r['queue_p95_ms']:>8.0f} "
                      f"{(r['mean_batch'] or 0):>5.1f} {r['load_before']:>4.1f}-{r['load_after']:<4.1f}\n")
    for rate, ratio in (results.get("ratios") or {}).items():
        buf.write(f"step/batch at {rate}/s: " + ", ".join(f"{k} {v:.2f}" for k, v in ratio.items() if v) + "\n")
    return buf.getvalue()


def log_to_mlflow(results: dict, args: argparse.Namespace) -> None:
    import mlflow

    from mlflow_project.common import log_params, setup_tracking

    setup_tracking()
    with mlflow.start_run(run_name="loadtest_schedulers"):
        log_params({"omp_wait_policy": args.omp_wait_policy, "rates": args.rates, "duration_s": args.duration,
                    "users": args.users, "steps": args.steps,
                    "kinds": args.kinds, "cpus": os.cpu_count()})
        metrics = {}
        for kind, rows in results["runs"].items():
            for r in rows:
                for k, v in r.items():
                    if isinstance(v, (int, float)) and v == v and k != "rate":
                        metrics[f"{kind}.{r['rate']:g}.{k}"] = float(v)
        for rate, ratio in (results.get("ratios") or {}).items():
            metrics.update({f"ratio.{rate}.{k}": float(v) for k, v in ratio.items() if v})
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(args.out / "results.json"))


if __name__ == "__main__":
    sys.exit(main())
