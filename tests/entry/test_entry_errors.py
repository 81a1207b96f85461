"""User mistakes at the edges are one line naming file, row, field and reason — never a traceback — and
``--debug`` (or ``G2U_DEBUG=1``) shows the traceback; pyfunc error rows echo their id; MLflow's scoring
server runs from the project's environment (`make model-serve`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from g2u.cli import main as g2u_main
from g2u.entry import error_line, run_guarded
from g2u.errors import DataError
from g2u.eval.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "g2u" / "data" / "images" / "shapes.png"


def _manifest(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shapes.png").write_bytes(SHAPES.read_bytes())
    path = folder / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = {"id": "a", "image": "shapes.png", "question": "What is red?", "options": ["circle", "square"], "answer": "A"}


def _one_json_line(err: str) -> dict:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return json.loads(lines[0])


def test_manifest_row_without_answer_is_one_line_naming_file_row_field(tmp_path, capsys, monkeypatch):
    from mlflow_project.evaluate import main as evaluate_main

    path = _manifest(tmp_path / "bench", [GOOD, {"id": "b", "image": "shapes.png", "question": "What is blue?"}])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = run_guarded(evaluate_main, ["--benchmark", str(path), "--out-dir", str(tmp_path / "out")])
    body = _one_json_line(capsys.readouterr().err)
    assert code == 2
    assert body == {"error": "invalid_data", "file": str(path), "row": 2, "field": "answer", "reason": "is missing"}


def test_debug_shows_the_traceback(tmp_path):
    path = _manifest(tmp_path / "bench", [{"id": "b", "image": "shapes.png", "question": "q"}])
    with pytest.raises(DataError) as err:
        run_guarded(lambda argv: load_dataset(argv[0]), [str(path), "--debug"])
    assert err.value.field == "answer" and err.value.row == 1


@pytest.mark.parametrize("module", sorted(p.stem for p in (ROOT / "mlflow_project").glob("*.py")
                                           if "def main(" in p.read_text()))
def test_every_mlflow_entry_point_runs_guarded(module):
    """What `mlflow run` executes (`python -m mlflow_project.X`) goes through run_guarded: the evaluate
    test above shows what that prints; this keeps a new entry point from printing a traceback again."""
    import ast

    tree = ast.parse((ROOT / "mlflow_project" / f"{module}.py").read_text())
    [guard] = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert "sys.exit(run_guarded(main))" in ast.unparse(guard)


def test_cli_file_and_field_errors_are_one_line(tmp_path, capsys):
    assert g2u_main(["predict", "--image", str(tmp_path / "missing.png"), "--question", "?"]) == 2
    body = _one_json_line(capsys.readouterr().err)
    assert body["field"] == "image" and "missing.png" in body["reason"]
    assert g2u_main(["predict", "--image", str(SHAPES), "--question", "?", "--steps", "999"]) == 2
    assert _one_json_line(capsys.readouterr().err)["field"] == "steps"
    assert g2u_main(["prompts", "--library", str(tmp_path / "none.yaml")]) == 2
    body = _one_json_line(capsys.readouterr().err)
    assert "none.yaml" in json.dumps(body)


def test_error_line_kinds():
    assert error_line(FileNotFoundError(2, "No such file or directory", "/x/y.tsv")) == (
        2, {"error": "file", "file": "/x/y.tsv", "reason": "No such file or directory"})
    code, body = error_line(RuntimeError("boom"))
    assert code == 1 and body["reason"] == "boom" and "--debug" in body["hint"]


def test_pyfunc_error_rows_echo_their_id(demo_root):
    import pandas as pd

    from g2u.pipeline import G2UPipeline
    from mlflow_project.pyfunc_model import G2UPyfuncModel
    from mlflow_project.register import _sample_image_b64

    model = G2UPyfuncModel()
    model.pipeline = G2UPipeline.from_checkpoint(str(demo_root / "qwen_image_edit"))
    frame = pd.DataFrame([{"image": _sample_image_b64(), "question": "What colour?", "mode": "baseline", "id": "r1"},
                          {"image": _sample_image_b64(), "question": "", "mode": "baseline", "id": "r2"},
                          {"image": "not base64!", "question": "q", "mode": "baseline", "id": "r3"}])
    out = model.predict(None, frame)
    assert list(out["id"]) == ["r1", "r2", "r3"]
    assert out.loc[0, "status"] == 200 and out.loc[1, "status"] == 400 and out.loc[2, "status"] == 400
    assert [json.loads(out.loc[i, "error"])["field"] for i in (1, 2)] == ["question", "image"]


@pytest.mark.e2e
def test_make_model_serve_scores_from_the_project_environment(demo_root, tmp_path):
    """`make model-serve` = `mlflow models serve -m models:/g2u@champion --env-manager local` with the
    venv's bin on PATH, run from a shell whose PATH lacks the venv (what failed with `uvicorn: not found`).
    The model is the registered one's flavor saved to a folder (MODEL_URI=path): registering it is covered
    by test_mlflow_tracking's alias round trip."""
    import mlflow.pyfunc

    from g2u.doctor import _port_busy
    from handler.tsctl import free_ports
    from mlflow_project.pyfunc_model import G2UPyfuncModel, pyfunc_signature
    from mlflow_project.register import _sample_image_b64

    model_dir = tmp_path / "model"
    mlflow.pyfunc.save_model(str(model_dir), python_model=G2UPyfuncModel(),
                             artifacts={"checkpoint": str(demo_root / "qwen_image_edit")},
                             code_paths=[str(ROOT / "g2u"), str(ROOT / "mlflow_project")],
                             signature=pyfunc_signature(), pip_requirements=[], model_config={})
    venv = Path(sys.executable).parent.parent
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != venv / "bin")}
    [port] = free_ports(1)
    stamp = f"{venv}/.installed-stamp"  # -o: never reinstall the venv from this checkout
    proc = subprocess.Popen(["make", "-s", "-o", stamp, "model-serve", f"VENV={venv}", f"MODEL_SERVE_PORT={port}",
                             f"MODEL_URI={model_dir}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(1)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        rows = [{"image": _sample_image_b64(), "question": "What colour?", "mode": "baseline", "id": "ok-1"},
                {"image": _sample_image_b64(), "question": "", "mode": "baseline", "id": "bad-2"}]
        r = requests.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": rows}, timeout=120)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["id"] for p in preds] == ["ok-1", "bad-2"]
        assert preds[0]["status"] == 200 and preds[0]["demo"] is True and preds[0]["answer"]
        assert preds[1]["status"] == 400 and json.loads(preds[1]["error"])["field"] == "question"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # this test's own process group (make, mlflow, uvicorn)
        proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while _port_busy(port) and time.monotonic() < deadline:
        time.sleep(0.5)
