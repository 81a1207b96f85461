"""Issue 17's MLflow entry points: the gate's calibration and the router's learned table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from g2u.gate import GatePoint, calibration_curve, pick_threshold
from tests.entry.test_mlflow_project import FAST, finished_runs, make_benchmark, mlflow_run


def _pair(i, prob, base_ok, g2u_ok, gate_ms=10.0, total=110.0):
    return [{"id": str(i), "mode": "baseline", "correct": base_ok},
            {"id": str(i), "mode": "g2u", "correct": g2u_ok, "gate": {"baseline_prob": prob},
             "timings_ms": {"gate": gate_ms, "total": total}}]


def test_calibration_curve_trades_accuracy_for_imagining():
    records = (_pair(0, 0.95, True, True) + _pair(1, 0.9, True, False) + _pair(2, 0.3, False, True)
               + _pair(3, 0.2, False, False))
    curve = calibration_curve(records, [0.0, 0.5, 1.0])
    at = {p.threshold: p for p in curve}
    assert at[0.0] == GatePoint(0.0, 0.5, 0.0, 10.0)       # never imagine: the baseline's accuracy, gate cost only
    assert at[1.0] == GatePoint(1.0, 0.5, 1.0, 110.0)      # always imagine: G→U's accuracy and cost
    assert at[0.5].accuracy == 0.75 and at[0.5].imagined == 0.5 and at[0.5].ms_per_sample == 60.0
    assert pick_threshold(curve, 0.5).threshold == 0.5
    assert pick_threshold(curve, 0.0).threshold == 0.0
    with pytest.raises(ValueError, match="gate=confidence"):
        calibration_curve([{"id": "1", "mode": "g2u", "correct": True}], [0.5])


@pytest.mark.e2e
def test_calibrate_gate_entry_point(project_env, tmp_path):
    bench = make_benchmark(tmp_path / "bench", n=2)
    proc = mlflow_run(project_env, "-e", "calibrate_gate", "-P", f"benchmark={bench}", "-P", "thresholds=0,1",
                      "-P", "max_imagined=0", *FAST)
    chosen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert chosen["gate_threshold"] == 0.0 and chosen["imagined"] == 0.0
    parent = [r for r in finished_runs() if "mlflow.parentRunId" not in r.data.tags][0]
    assert parent.data.metrics["chosen/threshold"] == 0.0
    assert "| τ |" in parent.data.tags["mlflow.note.content"]


@pytest.mark.e2e
def test_learn_routes_entry_point(project_env, tmp_path):
    records = []
    for i in range(6):
        records += [{"id": str(i), "mode": "baseline", "correct": False, "question": "How many dogs?"},
                    {"id": str(i), "mode": "g2u", "correct": True, "question": "How many dogs?",
                     "edit": {"prompt_name": "outpaint_frame", "writer": "library"}}]
    preds = tmp_path / "predictions.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "routes.yaml"
    mlflow_run(project_env, "-e", "learn_routes", "-P", f"predictions={preds}", "-P", "version=0.2.0",
               "-P", f"out={out}", "-P", "min_n=5")
    table = yaml.safe_load(Path(out).read_text())
    assert table["version"] == "0.2.0"
    assert table["routes"]["count"] == {"family": "extension", "prompt_name": "outpaint_frame", "delta": 1.0, "n": 6}
    [run] = finished_runs()
    assert run.data.metrics["delta/count"] == 1.0
