"""One-line errors at the edges: the ``g2u`` command and the MLflow entry points.

A user mistake (a bad field, a missing file, a benchmark row without ``answer``, a checkpoint no backend
knows) prints ONE JSON line on stderr naming what it can (``file``, ``row``, ``field``) and the ``reason``,
and exits non-zero: 2 bad input, 3 checkpoint, 1 anything else. ``--debug`` anywhere on the command
line, or ``G2U_DEBUG=1`` (what reaches a command under ``mlflow run``), lets the exception through with
its traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence

from g2u.errors import CheckpointError, InputError

DEBUG_ENV = "G2U_DEBUG"
DEBUG_FLAG = "--debug"
HINT = f"rerun with {DEBUG_FLAG} (or {DEBUG_ENV}=1) for the traceback"


def debug_requested(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")


def error_line(exc: BaseException) -> tuple[int, dict]:
    """Exit status and the one-line body for ``exc``."""
    if isinstance(exc, InputError):  # DataError (a benchmark file's row) is one: it names file and row
        return 2, exc.to_dict()
    if isinstance(exc, CheckpointError):
        return 3, {"error": "checkpoint", "reason": str(exc)}
    if isinstance(exc, OSError) and exc.filename is not None:
        return 2, {"error": "file", "file": str(exc.filename), "reason": exc.strerror or str(exc)}
    if isinstance(exc, (ValueError, OSError)):
        return 2, {"error": "invalid_input", "reason": str(exc)}
    return 1, {"error": type(exc).__name__, "reason": str(exc) or type(exc).__name__, "hint": HINT}


def run_guarded(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` (``--debug`` removed) and turn any exception into one line on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [a for a in args if a != DEBUG_FLAG]
    if debug:
        return main(args) or 0
    try:
        return main(args) or 0
    except KeyboardInterrupt:
        print(json.dumps({"error": "interrupted"}), file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the edge: every failure becomes one line
        code, body = error_line(exc)
        print(json.dumps(body, ensure_ascii=False), file=sys.stderr)
        return code
