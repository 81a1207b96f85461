"""Demo checkpoints: tiny, randomly initialised checkpoints of the real architectures.

Built offline in seconds, saved with ``save_pretrained`` in the real on-disk layouts and loaded back
with ``from_pretrained``: the same code path as a real checkpoint. Their answers are meaningless; every
result produced from them carries ``demo: true``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from g2u.backends.base import DEMO_MARKER, read_demo_marker

DEMO_BACKENDS = ("qwen_image_edit", "qwen_image_edit_plus", "decoupled", "decoupled_kontext", "bagel")


def write_demo_marker(folder: Path, seed: int, default_edit_area: int) -> None:
    """Mark ``folder`` as a demo checkpoint (read back by ``g2u.backends.base.read_demo_marker``)."""
    (folder / DEMO_MARKER).write_text(
        json.dumps({"demo": True, "seed": seed, "default_edit_area": default_edit_area}, indent=2) + "\n"
    )


def build_demo_checkpoints(out_dir: str | Path, seed: int = 0, backends=DEMO_BACKENDS) -> dict[str, Path]:
    """Write one demo checkpoint per backend under ``out_dir``; returns {backend: folder}."""
    from g2u.demo.bagel import build_bagel_demo
    from g2u.demo.decoupled import build_decoupled_demo, build_decoupled_kontext_demo
    from g2u.demo.qwen import build_qwen_image_edit_demo, build_qwen_image_edit_plus_demo

    builders = {
        "qwen_image_edit": build_qwen_image_edit_demo,
        "qwen_image_edit_plus": build_qwen_image_edit_plus_demo,
        "decoupled": build_decoupled_demo,
        "decoupled_kontext": build_decoupled_kontext_demo,
        "bagel": build_bagel_demo,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for name in backends:
        folder = out / name
        builders[name](folder, seed=seed)
        built[name] = folder
    return built


def default_demo_root() -> Path:
    """Where the embedded default demo checkpoints live (built on first use)."""
    return Path(os.environ.get("G2U_HOME", Path.home() / ".cache" / "g2u")) / "demo"


def ensure_demo_checkpoint(name: str = "qwen_image_edit", seed: int = 0, root: Path | None = None) -> Path:
    """A demo checkpoint under ``root`` (default: G2U_HOME's, ``default_demo_root``), built offline the first
    time (the demo marker says a folder is complete). Entry points reach it through
    ``g2u.checkpoints.resolve_checkpoint``."""
    from g2u.errors import CheckpointError

    if name not in DEMO_BACKENDS:
        raise CheckpointError(f"no demo checkpoint named {name!r}; choose one of {DEMO_BACKENDS}")
    root = Path(root) if root is not None else default_demo_root()
    folder = root / name
    if read_demo_marker(folder) is None:
        _build_atomically(root, name, seed)
    return folder


def _build_atomically(root: Path, name: str, seed: int) -> None:
    """Build in a private folder beside the target and rename it into place: two processes starting at
    once (TorchServe workers, parallel evaluations) never read or write a half-built checkpoint."""
    import shutil
    import tempfile

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-building-", dir=root))
    try:
        build_demo_checkpoints(staging, seed=seed, backends=(name,))
        folder = root / name
        if folder.exists() and read_demo_marker(folder) is None:
            shutil.rmtree(folder, ignore_errors=True)  # an interrupted build of an older version
        try:
            os.rename(staging / name, folder)
        except OSError:
            if read_demo_marker(folder) is None:  # not another process's finished build: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["DEMO_BACKENDS", "DEMO_MARKER", "build_demo_checkpoints", "default_demo_root", "ensure_demo_checkpoint",
           "read_demo_marker", "write_demo_marker"]
