"""Demo checkpoints: tiny, randomly initialised checkpoints of the real architectures.

Built offline in seconds, saved with ``save_pretrained`` in the real on-disk layouts and loaded back
with ``from_pretrained``: the same code path as a real checkpoint. Their answers are meaningless; every
result produced from them carries ``demo: true``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEMO_MARKER = "g2u_demo.json"
DEMO_BACKENDS = ("qwen_image_edit", "qwen_image_edit_plus", "decoupled", "decoupled_kontext", "bagel")


def write_demo_marker(folder: Path, seed: int, default_edit_area: int) -> None:
    """Mark ``folder`` as a demo checkpoint (read back by ``is_demo``)."""
    (folder / DEMO_MARKER).write_text(
        json.dumps({"demo": True, "seed": seed, "default_edit_area": default_edit_area}, indent=2) + "\n"
    )


def read_demo_marker(folder: str | Path) -> dict | None:
    path = Path(folder) / DEMO_MARKER
    return json.loads(path.read_text()) if path.is_file() else None


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
