"""The MLflow registry and tracking end to end: `register` then a ``models:/name@alias`` load, `evaluate`'s
endpoint mode against a real TorchServe, and the tracking calls against a real `mlflow server` on loopback.
(Beside test_mlflow_project.py so the two halves run on different test workers.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import requests

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from test_mlflow_project import (  # noqa: E402
    FAST,
    VENV_BIN,
    artifact_names,
    finished_runs,
    make_benchmark,
    mlflow_run,
)

from g2u.eval.runner import read_records  # noqa: E402
from handler import tsctl  # noqa: E402

pytestmark = pytest.mark.e2e  # starts servers / subprocess pipelines: `make test-fast` skips it


def test_register_then_load_by_alias_and_predict(project_env):
    mlflow_run(project_env, "-e", "register", "-P", "alias=candidate")
    version = mlflow.MlflowClient().get_model_version_by_alias("g2u", "candidate")
    assert int(version.version) == 1
    model = mlflow.pyfunc.load_model("models:/g2u@candidate")
    import pandas as pd

    from mlflow_project.register import _sample_image_b64

    frame = pd.DataFrame([{"image": _sample_image_b64(), "question": "What colour?", "mode": "g2u", "steps": 2},
                          {"image": _sample_image_b64(), "question": "", "mode": "g2u", "steps": 2}])
    out = model.predict(frame)
    assert isinstance(out.loc[0, "answer"], str) and out.loc[0, "demo"] and out.loc[0, "edit_prompt"]
    assert json.loads(out.loc[1, "error"])["field"] == "question"

    # Its requirements are the project's runtime dependencies pinned to what ran here (declared, not inferred).
    # The project's own code travels in the model's code paths: g2u-serve is on no index, so listing it would
    # make `mlflow models serve --env-manager virtualenv` fail to build the environment.
    from importlib.metadata import version as installed

    from packaging.version import Version

    reqs = Path(mlflow.pyfunc.get_model_dependencies("models:/g2u@candidate")).read_text().split()
    for dist in ("mlflow", "torch", "transformers", "diffusers"):
        assert f"{dist}=={Version(installed(dist)).public}" in reqs, reqs
    assert not [r for r in reqs if r.split("==")[0] in ("g2u-serve", "torchserve", "locust", "ray")], reqs


def test_evaluate_against_a_running_torchserve_endpoint(project_env, tmp_path):
    bench = make_benchmark(tmp_path / "bench", n=3)
    server = tsctl.serve_demo(tmp_path / "ts")
    try:
        env = {**project_env, "G2U_TOKEN": server.keys()["inference"]}
        url = f"{server.url('inference')}/predictions/g2u"
        mlflow_run(env, "-e", "evaluate", "-P", f"benchmark={bench}", "-P", f"endpoint={url}", *FAST)
    finally:
        server.stop()
    [run] = finished_runs()
    records = read_records(Path(run.data.tags["g2u.out_dir"]) / "predictions.jsonl")
    assert len(records) == 6 and not [r for r in records if r.get("error")]
    assert all(r["model"]["demo"] for r in records)
    assert run.data.params["endpoint"] == url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracking_against_a_real_mlflow_server(project_env, tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        env=project_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
            time.sleep(0.5)
        uri = f"http://127.0.0.1:{port}"
        bench = make_benchmark(tmp_path / "bench", n=2)
        mlflow_run({**project_env, "MLFLOW_TRACKING_URI": uri}, "-e", "evaluate", "-P", f"benchmark={bench}",
                   *FAST)
        mlflow.set_tracking_uri(uri)
        [run] = finished_runs()
        assert "acc/g2u/overall" in run.data.metrics
        assert "predictions.jsonl" in artifact_names(run.info.run_id)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
