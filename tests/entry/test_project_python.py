"""bin/project-python, the interpreter of the MLproject commands: `mlflow run` runs them with bash and the
caller's PATH, so they must find the project's Python (one with mlflow) even when the venv is not on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "bin" / "project-python"
PLAIN_PATH = "/usr/bin:/bin"
"""A shell's PATH without the venv."""


def launch(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The launcher under bash -c, as mlflow runs an entry point: its parent is this (venv) interpreter."""
    command = f"sh {LAUNCHER} -c 'import sys; print(sys.prefix)' {' '.join(args)}"
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                          env={"HOME": os.environ.get("HOME", "/tmp"), "PATH": PLAIN_PATH, **env})


def test_finds_the_interpreter_running_mlflow_when_the_venv_is_not_on_path():
    proc = launch()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == sys.prefix


def test_g2u_python_wins_and_a_wrong_one_is_named():
    proc = launch(G2U_PYTHON=sys.executable)
    assert proc.returncode == 0 and proc.stdout.strip() == sys.prefix
    bad = launch(G2U_PYTHON="/nonexistent/python")
    assert bad.returncode == 127 and "G2U_PYTHON=/nonexistent/python is not an executable" in bad.stderr


def test_every_mlproject_command_runs_through_the_launcher():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    for name, entry in project["entry_points"].items():
        words = entry["command"].split()
        interpreter = words.index("sh")
        assert words[interpreter + 1] == "bin/project-python", name
        assert "python" not in words[:interpreter], name
