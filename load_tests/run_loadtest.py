"""Headless load test with thresholds: runs locust as its own process (gevent must never share a process
with mlflow/requests), reads its CSV stats, checks the failure ratio and p95 latency, and logs the stats,
CSVs and HTML report to MLflow when asked. Exits 1 when a threshold is missed.

    python load_tests/run_loadtest.py --host http://127.0.0.1:8080 --users 4 --duration 60s --mlflow
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read_stats(csv_prefix: Path) -> dict:
    """Per-endpoint and aggregated numbers from <prefix>_final_stats.csv (the locustfile writes it at exit),
    else from locust's <prefix>_stats.csv (a snapshot taken every second)."""
    final = csv_prefix.parent / f"{csv_prefix.name}_final_stats.csv"
    path = final if final.is_file() else csv_prefix.parent / f"{csv_prefix.name}_stats.csv"
    rows = list(csv.DictReader(path.open()))

    def num(row: dict, key: str) -> float:
        value = row.get(key, "")
        return float(value) if value not in ("", "N/A") else float("nan")

    out = {"endpoints": {}}
    for row in rows:
        entry = {"requests": int(num(row, "Request Count")), "failures": int(num(row, "Failure Count")),
                 "rps": num(row, "Requests/s"), "p50_ms": num(row, "50%"), "p95_ms": num(row, "95%"),
                 "max_ms": num(row, "Max Response Time")}
        if row["Name"] == "Aggregated":
            out["aggregated"] = entry
        else:
            out["endpoints"][f"{row['Type']} {row['Name']}"] = entry
    agg = out.get("aggregated", {"requests": 0, "failures": 0})
    out["failure_ratio"] = agg["failures"] / agg["requests"] if agg["requests"] else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default=os.environ.get("G2U_HOST", "http://127.0.0.1:8080"))
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--spawn-rate", type=float, default=2)
    p.add_argument("--duration", default="60s", help="locust --run-time, e.g. 30s, 5m")
    p.add_argument("--requests", type=int, default=0,
                   help="stop once this many requests completed (--duration then only bounds a hang)")
    p.add_argument("--max-failure-ratio", type=float, default=0.01)
    p.add_argument("--max-p95-ms", type=float, default=30000)
    p.add_argument("--out", default="outputs/loadtest")
    p.add_argument("--key-file", default=os.environ.get("G2U_KEY_FILE", ""), help="TorchServe key_file.json")
    p.add_argument("--mlflow", action="store_true", help="log stats, CSVs and the HTML report to MLflow")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.key_file:
        env["G2U_KEY_FILE"] = str(Path(args.key_file).resolve())
    if args.requests:
        env["G2U_MAX_REQUESTS"] = str(args.requests)
    final_stats = out / "locust_final_stats.csv"
    final_stats.unlink(missing_ok=True)  # never read a previous run's numbers
    env["G2U_FINAL_STATS_CSV"] = str(final_stats.resolve())
    locust = Path(sys.executable).parent / "locust"
    cmd = [str(locust if locust.exists() else "locust"), "-f", str(HERE / "locustfile.py"), "--headless",
           "--host", args.host, "-u", str(args.users), "-r", str(args.spawn_rate), "--run-time", args.duration,
           "--stop-timeout", "30", "--csv", str(out / "locust"), "--html", str(out / "report.html"),
           "--only-summary", "--exit-code-on-error", "0"]
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        print(f"locust exited with {proc.returncode}", file=sys.stderr)
        return proc.returncode
    stats = read_stats(out / "locust")
    agg = stats.get("aggregated", {})
    stats["thresholds"] = {"max_failure_ratio": args.max_failure_ratio, "max_p95_ms": args.max_p95_ms}
    stats["passed"] = bool(agg) and stats["failure_ratio"] <= args.max_failure_ratio \
        and agg.get("p95_ms", float("inf")) <= args.max_p95_ms
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps({"aggregated": agg, "failure_ratio": stats["failure_ratio"], "passed": stats["passed"]},
                     indent=2))
    if args.mlflow:
        log_to_mlflow(stats, out, args)
    return 0 if stats["passed"] else 1


def log_to_mlflow(stats: dict, out: Path, args: argparse.Namespace) -> None:
    import mlflow

    sys.path.insert(0, str(HERE.parent))  # run as a script: the repository root is not on sys.path
    from mlflow_project.common import log_params, setup_tracking

    setup_tracking()
    with mlflow.start_run(run_name="loadtest"):
        log_params({"host": args.host, "users": args.users, "duration": args.duration,
                    "max_requests": os.environ.get("G2U_MAX_REQUESTS") or args.requests or "",
                           "max_failure_ratio": args.max_failure_ratio, "max_p95_ms": args.max_p95_ms,
                           "mode_mix": os.environ.get("G2U_MODE_MIX", "default"),
                           "bad_share": os.environ.get("G2U_BAD_SHARE", "0.05")})
        agg = stats.get("aggregated", {})
        mlflow.log_metrics({f"aggregated.{k}": v for k, v in agg.items() if v == v}
                           | {"failure_ratio": stats["failure_ratio"], "passed": float(stats["passed"])})
        for name, entry in stats["endpoints"].items():
            safe = "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)
            mlflow.log_metrics({f"{safe}.{k}": v for k, v in entry.items() if v == v})
        for path in out.iterdir():
            if path.suffix in (".csv", ".html", ".json"):
                mlflow.log_artifact(str(path))


if __name__ == "__main__":
    sys.exit(main())
