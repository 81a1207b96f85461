"""The MLflow project end to end: the entry points through `mlflow run` on the demo checkpoint (the default
run, evaluate, ablation) and a killed evaluation resumed; the registry, endpoint mode and a tracking server
are in test_mlflow_tracking.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from g2u.eval.runner import read_records  # noqa: E402

pytestmark = pytest.mark.e2e  # starts servers / subprocess pipelines: `make test-fast` skips it

FAST = ["-P", "steps=2", "-P", "batch_size=2"]


def make_benchmark(folder: Path, n: int = 4) -> Path:
    """A small JSONL benchmark in the manifest format of ../shared/data (MCQ, two categories)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img = Image.new("RGB", (96, 64), (30 * i, 120, 200 - 30 * i))
        ImageDraw.Draw(img).ellipse((10 + 5 * i, 10, 50 + 5 * i, 50), fill=(250, 250, 0))
        img.save(folder / "images" / f"s{i}.png")
        rows.append({"id": f"s{i}", "image": f"images/s{i}.png", "question": "Where is the yellow disc?",
                     "options": ["left", "right"], "answer": "left" if i < 2 else "right",
                     "category": "left_right" if i % 2 else "position"})
    path = folder / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mlflow_run(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [str(VENV_BIN / "mlflow"), "run", str(ROOT), "--env-manager", "local", *args]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def finished_runs(experiment: str = "Default") -> list:
    exp = mlflow.get_experiment_by_name(experiment)
    return mlflow.search_runs([exp.experiment_id], output_format="list", order_by=["attributes.start_time ASC"])


def artifact_names(run_id: str, path: str | None = None) -> set[str]:
    return {Path(a.path).name for a in mlflow.MlflowClient().list_artifacts(run_id, path)}


def readme_evaluation() -> str:
    """The README's "One evaluation" command (test_docs leaves that block to this file: it is run here)."""
    from tests.entry.test_docs import examples

    [block] = [ex.code for ex in examples(ROOT / "README.md") if "mlflow run ." in ex.code]
    return block


def test_plain_mlflow_run_evaluates_the_demo_on_the_builtin_sample(project_env):
    """The README's evaluation command as written: the default entry point on the built-in sample."""
    code = readme_evaluation().replace(".venv/bin/", f"{VENV_BIN}/")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], env=project_env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    [run] = finished_runs()
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in ("acc/baseline/overall", "acc/g2u/overall", "delta/g2u/overall"):
        assert name in metrics and 0 <= abs(metrics[name]) <= 1
    assert run.data.params["model"].startswith("qwen_image_edit:") and run.data.tags["demo_checkpoint"] == "true"
    assert {"predictions.jsonl", "gallery.html", "metrics.json", "delta_per_category.png",
            "thoughts", "originals", "vlmevalkit"} <= artifact_names(run.info.run_id)
    assert run.data.params["protocol"] == "vlmevalkit" and run.data.params["protocol_label"] == "vlmevalkit@v1"
    assert "n_errors/g2u" in metrics


def test_evaluate_logs_predictions_with_every_field(project_env, tmp_path):
    bench = make_benchmark(tmp_path / "bench")
    mlflow_run(project_env, "-e", "evaluate", "-P", f"benchmark={bench}", "-P", "modes=baseline,g2u,replace",
               "-P", "family=extension", *FAST)
    [run] = finished_runs()
    out = Path(run.data.tags["g2u.out_dir"])
    records = read_records(out / "predictions.jsonl")
    assert len(records) == 4 * 3
    g2u = [r for r in records if r["mode"] == "g2u"]
    for r in g2u:
        for field in ("id", "question", "options", "answer", "prediction", "correct", "mode", "edit_prompt",
                      "family", "writer", "measures", "thought_path"):
            assert field in r, field
        assert r["family"] == "extension" and (out / r["thought_path"]).is_file()
    # replace and g2u of one sample read the same thought: stage I ran once per sample
    by_id = {r["id"]: r["thought_path"] for r in g2u}
    assert all(by_id[r["id"]] == r["thought_path"] for r in records if r["mode"] == "replace")
    assert "acc/g2u/category/position" in run.data.metrics
    assert any(name.startswith("delta/g2u/family/") for name in run.data.metrics)
    assert run.data.metrics["time_ms/g2u/edit/p50"] > 0


KILL_AFTER_BATCHES = 2
KILLED_EVALUATION = f"""
import os, signal, sys
from g2u.eval import predictors
real, calls = predictors.LocalPredictor.predict, []

def predict(self, *args, **kwargs):  # SIGKILL itself as batch {KILL_AFTER_BATCHES + 1} starts
    calls.append(1)
    if len(calls) > {KILL_AFTER_BATCHES}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *args, **kwargs)

predictors.LocalPredictor.predict = predict
from mlflow_project.evaluate import main
sys.exit(main(sys.argv[1:]))
"""
"""The evaluation, killed outright in the middle of its run at a set point: after two batches of one sample
(two modes each, so 4 records written), while it computes the third. The kill lands there whatever the
machine's speed, where a watcher polling the file lands wherever the run has got to by then."""


def test_killed_evaluation_resumes_without_losing_or_recomputing(project_env, tmp_path):
    bench = make_benchmark(tmp_path / "bench", n=8)
    out = tmp_path / "resume"
    args = ["--benchmark", str(bench), "--steps", "2", "--batch-size", "1", "--out-dir", str(out)]
    killed = subprocess.run([sys.executable, "-c", KILLED_EVALUATION, *args], env=project_env, cwd=ROOT,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    predictions = out / "predictions.jsonl"
    before = read_records(predictions)
    assert len(before) == 2 * KILL_AFTER_BATCHES  # every record of a finished batch is on disk

    cmd = [sys.executable, "-m", "mlflow_project.evaluate", *args]
    subprocess.run(cmd, env=project_env, cwd=ROOT, check=True, capture_output=True)
    after = read_records(predictions)
    keys = [(r["id"], r["mode"]) for r in after]
    assert len(keys) == len(set(keys)) == 16  # nothing lost, nothing twice
    assert after[: len(before)] == before  # the first run's records are kept as they were
    run = finished_runs()[-1]
    assert run.data.metrics["resumed"] == len(before) and run.data.metrics["computed"] == 16 - len(before)

    subprocess.run(cmd, env=project_env, cwd=ROOT, check=True, capture_output=True)
    assert finished_runs()[-1].data.metrics["computed"] == 0 and len(read_records(predictions)) == 16


def test_ablation_nested_runs_and_table(project_env, tmp_path):
    bench = make_benchmark(tmp_path / "bench", n=2)
    env = {**project_env, "OPENAI_API_KEY": ""}  # the openai row falls back to the library prompt, offline
    mlflow_run(env, "-e", "ablation", "-P", f"benchmark={bench}", *FAST)
    runs = finished_runs()
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    from mlflow_project.ablation import GRID, offered

    expected = [label for label, overrides in GRID if offered(overrides, "qwen_image_edit")]  # the demo's backend
    assert len(parents) == 1 and len(children) == len(expected)
    assert not any("vae_concat" in label for label in expected)  # BAGEL's row is skipped on another backend
    assert {"ablation.md", "ablation.csv"} <= artifact_names(parents[0].info.run_id)
    table = parents[0].data.tags["mlflow.note.content"]
    for row in ("baseline", "textual_cot", "replace", "g2u P_E (library)", "g2u P_X (library)", "self-prompt",
                "openai writer", "labelled layout", "multiturn layout"):
        assert row in table
