"""Which checkpoint an entry point loads: the one it was given, else the embedded demo checkpoint.

The "no checkpoint means the demo" default lives here and only here. The core
(``G2UPipeline.from_checkpoint``, ``g2u.backends.load_backend``) is always handed a checkpoint and never
imports ``g2u.demo``; every entry point (CLI, handler, MLflow project, evaluation, scripts) resolves its
checkpoint through ``resolve_checkpoint`` first.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DEMO_BACKEND = "qwen_image_edit"
"""The demo built when neither a checkpoint nor a backend is named."""


def resolve_checkpoint(checkpoint: str | os.PathLike | None, backend: str | None = None, *,
                       demo_root: str | os.PathLike | None = None) -> str:
    """``checkpoint`` as given (a folder or hub id), or without one the demo checkpoint of ``backend``
    (default ``qwen_image_edit``), built offline on first use under ``demo_root`` (default: ``G2U_HOME``'s
    demo folder, ``g2u.demo.default_demo_root``)."""
    if checkpoint not in (None, ""):
        return str(checkpoint)
    from g2u.demo import ensure_demo_checkpoint  # only here: the demo is an entry point's default

    root = Path(demo_root) if demo_root is not None else None
    return str(ensure_demo_checkpoint(backend or DEFAULT_DEMO_BACKEND, root=root))


__all__ = ["DEFAULT_DEMO_BACKEND", "resolve_checkpoint"]
