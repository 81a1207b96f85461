"""Fixtures of the entry-point tests (`mlflow run` and friends)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import mlflow
import pytest

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def project_env(tmp_path, monkeypatch) -> dict[str, str]:
    """A tracking store and an output folder of this test's own, for `mlflow run` and in-process calls."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("G2U_OUTPUT_DIR", str(tmp_path / "outputs"))
    mlflow.set_tracking_uri(uri)
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
