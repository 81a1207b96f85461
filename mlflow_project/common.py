"""Helpers shared by the entry points: parameter parsing and the default tracking store."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
OUTPUT_DIR = Path(os.environ.get("G2U_OUTPUT_DIR") or PROJECT_DIR / "outputs")
"""Where evaluations write predictions, thoughts and reports (``$G2U_OUTPUT_DIR``, default ./outputs)."""


def opt(value: str | None) -> str | None:
    """MLproject passes unset string parameters as ''; treat them as unset."""
    return value if value not in (None, "", "none", "None") else None


def opt_int(value: str | float | None) -> int | None:
    """MLproject numbers arrive as text ("4", "4.0"); 0 or '' means unset."""
    if value in (None, ""):
        return None
    number = int(float(value))
    return number or None


def setup_tracking() -> str:
    """Use MLFLOW_TRACKING_URI when set, else a sqlite file in the project folder (the embedded default)."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(f"sqlite:///{PROJECT_DIR / 'mlflow.db'}")
    return mlflow.get_tracking_uri()


def log_params(params: dict) -> None:
    """Log params the active run does not have yet. Under `mlflow run` the project already logged the
    entry point's parameters as typed on the command line ("4"), and MLflow refuses to change a value
    (even to "4.0"); the normalised values are in the run's other params and artifacts."""
    import mlflow

    run = mlflow.active_run()
    have = mlflow.get_run(run.info.run_id).data.params if run else {}
    mlflow.log_params({k: v for k, v in params.items() if k not in have})
