"""Package the G→U handler into a TorchServe model archive (.mar).

Without a checkpoint it builds the demo checkpoint (tiny random weights, offline) and packs it inside the
.mar. With ``--checkpoint`` (or ``G2U_CHECKPOINT``) a real multi-GB checkpoint is referenced by absolute
path from the packed model-config yaml and never copied into the archive.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from g2u.checkpoints import DEFAULT_DEMO_BACKEND as DEFAULT_DEMO
from g2u.checkpoints import resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]
HANDLER = ROOT / "handler" / "g2u_handler.py"
MODEL_CONFIG = ROOT / "handler" / "model-config.yaml"


def model_config(checkpoint: str, backend: str | None, overrides: dict[str, Any],
                 template: Path = MODEL_CONFIG) -> dict[str, Any]:
    """The model-config yaml (the shipped one, or e.g. model-config.multi-gpu.yaml) with the checkpoint and
    any TorchServe keys replaced."""
    cfg = yaml.safe_load(Path(template).read_text())
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    cfg.setdefault("handler", {})["checkpoint"] = checkpoint
    if backend:
        cfg["handler"]["backend"] = backend
    return cfg


def build_archive(export_path: Path, *, model_name: str = "g2u", checkpoint: str | None = None,
                  backend: str | None = None, demo_dir: Path = ROOT / "demo_checkpoints",
                  demo_backend: str = DEFAULT_DEMO, overrides: dict[str, Any] | None = None,
                  template: Path = MODEL_CONFIG) -> Path:
    """Write ``export_path/model_name.mar`` and return its path."""
    export_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="g2u-mar-") as tmp:
        stage = Path(tmp)
        extra = stage / "files"
        extra.mkdir()
        if checkpoint:
            path = Path(checkpoint).expanduser()
            if checkpoint.startswith(("/", ".", "~")) and not path.is_dir():
                raise SystemExit(f"checkpoint folder {checkpoint!r} does not exist")
            # A folder is referenced by absolute path; anything else is passed on as is (a hub id).
            ref = str(path.resolve()) if path.exists() else checkpoint
            cfg = model_config(ref, backend, overrides or {}, template)
        else:
            # No checkpoint: the demo's (g2u.checkpoints), built once under demo_dir and packed inside.
            demo = resolve_checkpoint(None, demo_backend, demo_root=demo_dir)
            shutil.copytree(demo, extra / "checkpoint")
            cfg = model_config("checkpoint", backend, overrides or {}, template)
        (stage / "model-config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        archiver = Path(sys.executable).with_name("torch-model-archiver")
        tool = [str(archiver)] if archiver.exists() else [sys.executable, "-m", "model_archiver.model_packaging"]
        cmd = [*tool, "--model-name", model_name,
               "--version", "1.0", "--handler", str(HANDLER), "--config-file", str(stage / "model-config.yaml"),
               "--export-path", str(export_path), "--force"]
        if any(extra.iterdir()):
            cmd += ["--extra-files", str(extra)]
        subprocess.run(cmd, check=True)
    return export_path / f"{model_name}.mar"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=os.environ.get("G2U_CHECKPOINT") or None,
                   help="real checkpoint folder, referenced by path (default: $G2U_CHECKPOINT, else the demo)")
    p.add_argument("--backend", default=os.environ.get("G2U_BACKEND") or None)
    p.add_argument("--model-name", default="g2u")
    p.add_argument("--export-path", type=Path, default=ROOT / "model_store")
    p.add_argument("--demo-dir", type=Path, default=ROOT / "demo_checkpoints")
    p.add_argument("--batch-size", type=int, help="override batchSize")
    p.add_argument("--max-batch-delay", type=int, help="override maxBatchDelay (ms)")
    p.add_argument("--model-config", type=Path, default=Path(os.environ.get("G2U_MODEL_CONFIG") or MODEL_CONFIG),
                   help="model-config yaml to pack (default: handler/model-config.yaml; "
                        "handler/model-config.multi-gpu.yaml: one worker per GPU)")
    args = p.parse_args(argv)
    mar = build_archive(args.export_path, model_name=args.model_name, checkpoint=args.checkpoint,
                        backend=args.backend, demo_dir=args.demo_dir,
                        overrides={"batchSize": args.batch_size, "maxBatchDelay": args.max_batch_delay},
                        template=args.model_config)
    print(f"archive: {mar} ({mar.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
