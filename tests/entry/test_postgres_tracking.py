"""MLflow on a real database (`make test-postgres`): a PostgreSQL 15 server from the system package, an
`mlflow server` on it, and the project's evaluate and register entry points plus a ``models:/name@alias``
load against it; the runs, the registered model and its alias must be rows in PostgreSQL."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
for path in (ROOT, TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from test_mlflow_project import FAST, VENV_BIN, finished_runs, make_benchmark, mlflow_run  # noqa: E402

from scripts.pg_tracking import PG_BIN, mlflow_server, postgres_server  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

if not (PG_BIN / "initdb").is_file():
    pytest.skip(f"PostgreSQL server binaries not installed in {PG_BIN} (apt-get install postgresql-15, or "
                f"set G2U_PG_BIN)", allow_module_level=True)
psycopg2 = pytest.importorskip("psycopg2", reason="pip install -e '.[postgres]' (make test-postgres does)")


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """(tracking URL, database URI) of a fresh PostgreSQL-backed tracking server, stopped afterwards."""
    tmp = tmp_path_factory.mktemp("pg")
    with postgres_server(tmp) as db, mlflow_server(db, tmp / "artifacts") as url:
        yield url, db


def test_evaluate_register_and_load_by_alias_against_postgresql(tracking, tmp_path, monkeypatch):
    url, db = tracking
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("G2U_OUTPUT_DIR", str(tmp_path / "outputs"))
    mlflow.set_tracking_uri(url)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}

    bench = make_benchmark(tmp_path / "bench", n=2)
    mlflow_run(env, "-e", "evaluate", "-P", f"benchmark={bench}", *FAST)
    [run] = finished_runs()
    assert run.info.status == "FINISHED" and "acc/g2u/overall" in run.data.metrics
    assert "predictions.jsonl" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}

    mlflow_run(env, "-e", "register", "-P", "name=g2u_pg", "-P", "alias=champion")
    model = mlflow.pyfunc.load_model("models:/g2u_pg@champion")
    import pandas as pd

    from mlflow_project.register import _sample_image_b64

    out = model.predict(pd.DataFrame([{"image": _sample_image_b64(), "question": "What colour?", "mode": "g2u",
                                       "steps": 2}]))
    assert isinstance(out.loc[0, "answer"], str) and out.loc[0, "edit_prompt"]
    assert not out.loc[0, "error"] or json.loads(out.loc[0, "error"]) is None

    # Everything above went through the server into PostgreSQL, not into a local file store.
    conn = psycopg2.connect(db.replace("+psycopg2", ""))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT run_uuid, status FROM runs")
            rows = dict(cur.fetchall())
            cur.execute("SELECT name, alias, version FROM registered_model_aliases")
            aliases = cur.fetchall()
            cur.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s", (run.info.run_id,))
            [metric_rows] = cur.fetchone()
    finally:
        conn.close()
    assert rows[run.info.run_id] == "FINISHED" and len(rows) == 2
    assert aliases == [("g2u_pg", "champion", 1)]
    assert metric_rows >= len(run.data.metrics)


def test_the_database_server_is_stopped_and_removed_when_the_caller_fails():
    import psutil

    with pytest.raises(RuntimeError, match="caller failed"), postgres_server() as db:
        port = int(db.rsplit(":", 1)[1].split("/")[0])
        conn = psycopg2.connect(db.replace("+psycopg2", ""))
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('data_directory'), current_setting('listen_addresses')")
            data_dir, listen = cur.fetchone()
        conn.close()
        assert listen == "127.0.0.1"
        raise RuntimeError("caller failed")
    assert not Path(data_dir).exists()
    assert not [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
                and c.status == psutil.CONN_LISTEN]
