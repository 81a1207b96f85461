"""`mlflow run . -e calibrate_gate`: calibrate the confidence gate's τ on a benchmark split.

One evaluation (modes baseline,g2u; gate=confidence at τ = 1, so it never fires and every sample's baseline
probability and full G→U cost are recorded) gives, for each τ of a grid, the accuracy, the fraction of
samples imagined and the time per sample had the gate fired at τ (``g2u.gate.calibration_curve``). Logs the
curve (one MLflow step per τ), writes gate_calibration.csv/.md, and picks the most accurate τ that imagines
at most ``--max-imagined`` of the samples: the value for ``gate_threshold``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from g2u.modes import DEFAULT_EVAL_MODES
from mlflow_project.common import OUTPUT_DIR, log_params, opt, setup_tracking
from mlflow_project.evaluate import build_parser as evaluate_parser
from mlflow_project.evaluate import run as run_evaluation


def build_parser() -> argparse.ArgumentParser:
    p = evaluate_parser()
    p.description = __doc__
    p.add_argument("--max-imagined", default="0.5", help="target cost: the largest fraction of samples to imagine")
    p.add_argument("--thresholds", default="", help="comma list of τ (default: 0, 0.05 … 1)")
    return p


def thresholds(text: str) -> list[float]:
    if not opt(text):
        return [round(i / 20, 2) for i in range(21)]
    values = sorted({float(t) for t in text.split(",") if t.strip()})
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"--thresholds must be numbers in [0, 1], got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    import mlflow

    from g2u.gate import calibration_curve, pick_threshold

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    setup_tracking()
    taus, target = thresholds(args.thresholds), float(args.max_imagined)
    if not 0.0 <= target <= 1.0:
        raise SystemExit("--max-imagined must be a fraction in [0, 1]")
    out_dir = Path(opt(args.out_dir) or OUTPUT_DIR / "calibrate_gate" / Path(args.benchmark.rstrip("/")).stem)
    with mlflow.start_run(run_name=opt(args.run_name) or "calibrate_gate") as parent:
        log_params({"benchmark": args.benchmark, "max_imagined": target, "thresholds": ",".join(map(str, taus))})
        # Both modes: the baseline's probability decides the gate, the g2u answer is what firing would give.
        eval_args = argparse.Namespace(**{**vars(args), "modes": ",".join(DEFAULT_EVAL_MODES), "gate": "confidence",
                                          "gate_threshold": "1", "out_dir": str(out_dir), "run_name": "gate τ=1"})
        run_evaluation(eval_args, nested=True)
        records = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines() if line]
        curve = calibration_curve(records, taus)
        for step, point in enumerate(curve):
            mlflow.log_metrics({"gate/threshold": point.threshold, "gate/accuracy": point.accuracy,
                                "gate/imagined": point.imagined, "gate/ms_per_sample": point.ms_per_sample}, step=step)
        chosen = pick_threshold(curve, target)
        mlflow.log_metrics({"chosen/threshold": chosen.threshold, "chosen/accuracy": chosen.accuracy,
                            "chosen/imagined": chosen.imagined, "chosen/ms_per_sample": chosen.ms_per_sample})
        with (out_dir / "gate_calibration.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(asdict(curve[0])))
            writer.writeheader()
            writer.writerows(asdict(p) for p in curve)
        lines = ["| τ | accuracy (%) | imagined (%) | ms / sample |", "| --- | --- | --- | --- |"]
        lines += [f"| {p.threshold:.2f}{' ←' if p is chosen else ''} | {100 * p.accuracy:.1f} | "
                  f"{100 * p.imagined:.1f} | {p.ms_per_sample:.0f} |" for p in curve]
        markdown = "\n".join(lines) + "\n"
        (out_dir / "gate_calibration.md").write_text(markdown)
        for name in ("gate_calibration.csv", "gate_calibration.md"):
            mlflow.log_artifact(str(out_dir / name))
        mlflow.set_tag("mlflow.note.content", markdown)
        print(markdown)
        print(json.dumps({"gate_threshold": chosen.threshold, **asdict(chosen), "parent_run_id": parent.info.run_id}))
    return 0


if __name__ == "__main__":
    from g2u.entry import run_guarded

    sys.exit(run_guarded(main))  # one-line errors; --debug or G2U_DEBUG=1: the traceback
