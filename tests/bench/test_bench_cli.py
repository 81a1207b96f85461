"""``g2u bench`` output: the JSON report's shape, the fast path's drift against stock within float noise,
clear errors for bad input, and the MLflow entry point logging the same numbers."""

from __future__ import annotations

import json

import pytest

from g2u.bench.cli import main


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_flops_only_prints_ledger_per_stage(capsys):
    code, out, err = _run(capsys, ["--size", "tiny", "--flops-only", "--accelerator", "h100-sxm-measured"])
    assert code == 0
    report = json.loads(out)
    ledger = report["ledger"]
    assert ledger["accelerator"]["flops_per_s"] == 773e12
    assert set(ledger["stages"]) == {"edit", "understand"}
    items = [e["item"] for e in ledger["entries"]]
    assert any("per CFG branch" in i for i in items) and any("per answer token" in i for i in items)
    assert all(e["flops"] > 0 and e["floor_s"] >= 0 for e in ledger["entries"])
    assert "G→U floor" in err
    assert "stages_ms" not in report  # nothing was timed


def test_tiny_bench_reports_stages_ratios_and_drift_within_noise(capsys):
    code, out, err = _run(capsys, ["--size", "tiny", "--reps", "1", "--warmup", "0", "--steps", "2",
                                   "--tokens", "3", "--edit-size", "48x48"])
    assert code == 0, err
    report = json.loads(out)
    assert set(report["stages_ms"]) == {"write_prompt", "edit", "measures", "understand", "total"}
    for row in report["stages_ms"].values():
        assert row["stock"] >= 0 and row["fast"] >= 0
    assert report["end_to_end_speedup"] > 0
    assert set(report["decode_ms_per_token"]) == {"stock", "fast", "speedup"}
    drift = report["drift"]
    # Batched CFG and vision reuse change the arithmetic order only: fp32 noise.
    assert drift["thought_vs_stock"]["ssim"] > 0.999
    assert drift["thought_max_abs_diff"] <= 2
    assert drift["answer_logit_rel_err_max"] < 1e-4
    assert drift["answer_tokens_equal"] == 1.0
    assert report["vision_reuse"]["hits"] >= 1  # the negative prompt's copy of I at least
    assert "speedup" in err and "drift" in err


@pytest.mark.parametrize("argv, field", [
    (["--size", "tiny", "--edit-size", "50x64"], "edit_size"),
    (["--size", "tiny", "--edit-size", "big"], "edit_size"),
    (["--size", "real", "--device", "cpu"], "size"),
    (["--size", "tiny", "--reps", "0"], "reps"),
    (["--size", "tiny", "--step-cache", "2"], "step_cache"),
])
def test_bad_input_names_the_field(capsys, argv, field):
    code, out, err = _run(capsys, argv)
    assert code == 2
    assert json.loads(err.strip().splitlines()[-1])["field"] == field


def test_mlflow_entry_point_logs_the_ledger(tmp_path, monkeypatch, capsys):
    import mlflow

    from mlflow_project import benchmark

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert benchmark.main(["--size", "tiny", "--flops-only", "true", "--steps", "3", "--tokens", "5"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    assert run.data.metrics["ledger.edit.floor_s"] == pytest.approx(metrics["ledger.edit.floor_s"])
    assert run.data.params["bench.steps"] == "3" and run.data.params["bench.answer_tokens"] == "5"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"bench.json", "bench.txt"} <= artifacts
