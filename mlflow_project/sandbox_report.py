"""`mlflow run . -e sandbox_report`: the sandbox's known G→U effect, logged to MLflow.

Builds (or reuses) the sandbox and the trained demo answerer under ``out_dir``, evaluates every
condition (clean, degraded, oracle g2u, oracle replace, demo-editor g2u) per degradation and severity,
and logs the accuracies, their Wilson intervals, the paired oracle gain, and the table as artifacts.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from mlflow_project.common import OUTPUT_DIR, log_params, opt, opt_int, setup_tracking


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", dest="out_dir", default="", help="default: outputs/sandbox-n<N>-s<seed>")
    p.add_argument("--sandbox", default="", help="an existing sandbox folder (default: built under out_dir)")
    p.add_argument("--checkpoint", default="", help="a trained demo checkpoint (default: trained under out_dir)")
    p.add_argument("--n", default="280")
    p.add_argument("--seed", default="0")
    p.add_argument("--editor-steps", dest="editor_steps", default="8")
    p.add_argument("--train-steps", dest="train_steps", default="0", help="0: the default of g2u demo train")
    p.add_argument("--run-name", dest="run_name", default="")
    return p


def _metric(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def run(args: argparse.Namespace) -> dict:
    import mlflow

    from g2u.sandbox.report import ReportConfig, run_report
    from g2u.sandbox.train import TrainConfig

    n, seed = opt_int(args.n) or 280, int(float(args.seed))
    config = ReportConfig(n=n, seed=seed, editor_steps=opt_int(args.editor_steps) or ReportConfig.editor_steps)
    train = TrainConfig(steps=opt_int(args.train_steps) or TrainConfig.steps)
    out_dir = Path(opt(args.out_dir) or OUTPUT_DIR / f"sandbox-n{n}-s{seed}")
    with mlflow.start_run(run_name=opt(args.run_name)):
        log_params({"n": n, "seed": seed, "editor_steps": config.editor_steps, "train_steps": train.steps,
                    "out_dir": str(out_dir), "sandbox": opt(args.sandbox), "checkpoint": opt(args.checkpoint)})
        summary = run_report(out_dir, config, sandbox=opt(args.sandbox), checkpoint=opt(args.checkpoint),
                             train_config=train, log=lambda m: print(m, file=sys.stderr))
        metrics = {}
        for row, cells in summary["table"].items():
            for cond, cell in cells.items():
                if cell["n"]:
                    metrics[_metric(f"acc/{row}/{cond}")] = cell["acc"]
                    metrics[_metric(f"acc_low/{row}/{cond}")] = cell["low"]
                    metrics[_metric(f"acc_high/{row}/{cond}")] = cell["high"]
        for cond, gain in summary["gains"].items():
            metrics.update({f"gain/{cond}/{k}": v for k, v in gain.items() if v == v})
        for key, value in (summary.get("training") or {}).items():
            if isinstance(value, (int, float)):
                metrics[f"training/{key}"] = value
        mlflow.set_tags({"g2u.out_dir": str(out_dir), "demo_checkpoint": "trained"})
        for name in ("table.md", "report.json", "records.jsonl"):
            mlflow.log_artifact(str(out_dir / name))
        import json

        from g2u.sandbox.figures import draw_figures

        records = [json.loads(line) for line in (out_dir / "records.jsonl").read_text().splitlines()]
        for path in draw_figures(summary, records, out_dir):  # one picture per finding
            mlflow.log_artifact(str(path), artifact_path="figures")
        for measure, fit in summary["fidelity_gain"].items():
            metrics.update({f"fidelity_gain/{measure}/{k}": v for k, v in fit.items() if v == v})
        mlflow.log_metrics(metrics)
        print(summary["table_text"])
        return metrics


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    setup_tracking()
    run(args)
    return 0


if __name__ == "__main__":
    from g2u.entry import run_guarded

    sys.exit(run_guarded(main))  # one-line errors; --debug or G2U_DEBUG=1: the traceback
