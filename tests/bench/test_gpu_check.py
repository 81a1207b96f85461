"""The GPU check script in its CPU dry mode: every phase runs (build, bench, scheduler), the JSON has
the numbers a GPU run is read for, and a phase that fails is reported, not hidden."""

from __future__ import annotations

import json

from scripts import gpu_check


def test_dry_run_writes_every_phase(tmp_path):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--dry", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["skipped"] == [] and "errors" not in report
    assert set(report["phases_s"]) == {"build", "bench", "scheduler"}
    bench = report["bench"]
    assert {"stages_ms", "paired", "drift", "ledger"} <= set(bench)
    assert bench["paired"]["edit"]["rounds"] == 1
    levels = report["scheduler"]["levels"]
    assert [row["clients"] for row in levels] == [1, 2]
    for row in levels:  # same seeds on both paths: the scheduler's thoughts are the batch path's
        assert row["thought_max_abs_diff"] == 0
        assert row["batch"]["requests"] == row["step"]["requests"] == row["clients"]
        assert row["ratio_step_over_batch"]["req_per_s"] > 0


def test_a_phase_over_the_budget_is_skipped_and_said(tmp_path):
    out = tmp_path / "gpu_check.json"
    gpu_check.main(["--dry", "--out", str(out), "--budget-s", "0"])
    report = json.loads(out.read_text())
    assert report["skipped"] and report["skipped"][0].startswith("build")
