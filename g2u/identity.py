"""Which model made a prediction: backend, checkpoint content, dtype (with quantization and offload),
device kind and the software versions, as one stable label.

An evaluation resumes only predictions whose label matches (``g2u.eval.runner.EvalConfig.key``): a
checkpoint rebuilt or fine-tuned at the same path, another backend over the same folder, another dtype or
a quantized copy never reuse the first model's answers. The checkpoint counts by its content: small files
are hashed whole, large ones (weights) by their size and 64 blocks spread over them (reading 4 MiB of a
15 GB shard instead of all of it: a fine-tune changes the bytes everywhere, a copy or ``touch`` changes
nothing). The label names no server path: a served model's ``describe`` answer carries it.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

WHOLE_FILE_BYTES = 64 * 2**20
"""Files up to this size are hashed whole; larger ones are sampled."""
SAMPLE_BLOCKS = 64
SAMPLE_BYTES = 64 * 2**10


def _file_digest(path: Path, h: Any) -> None:
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= WHOLE_FILE_BYTES:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
            return
        step = (size - SAMPLE_BYTES) / (SAMPLE_BLOCKS - 1)
        for k in range(SAMPLE_BLOCKS):
            f.seek(int(k * step))
            h.update(f.read(SAMPLE_BYTES))


@lru_cache(maxsize=32)
def _fingerprint(path: str, stamp: tuple) -> str:
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        rel = f.name if f == root else f.relative_to(root).as_posix()
        h.update(f"{rel}:{f.stat().st_size};".encode())
        _file_digest(f, h)
    return h.hexdigest()


def weights_fingerprint(checkpoint: str) -> str:
    """Content fingerprint of a checkpoint folder or file (a hub id or anything else: the id itself).
    Cached per process while no file's size or modification time changes."""
    path = Path(str(checkpoint))
    if not path.exists():
        return str(checkpoint)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _fingerprint(os.fspath(path.resolve()), stamp)


def model_identity(backend: Any) -> dict[str, str]:
    """What decides a backend's predictions besides the request: backend, checkpoint content, dtype label
    (``bfloat16+int8+offload-model`` after ``g2u.memory``), device kind, software versions."""
    from g2u.thought_cache import software_versions

    info = backend.info
    whole = str(info.checkpoint)
    parts = [whole] if Path(whole).exists() else whole.split("+")  # decoupled: editor+answerer
    checkpoints = "+".join(weights_fingerprint(p) for p in parts)
    return {"backend": info.backend, "checkpoint": checkpoints, "dtype": str(info.dtype),
            "device": str(info.device).split(":")[0], "versions": json.dumps(software_versions(), sort_keys=True)}


def checkpoint_label(backend: str, checkpoint: str, dtype: str) -> str:
    """``backend:checkpoint#content@dtype``: what ``LocalPredictor`` and ``model_label`` (Ray) both report, so a
    Ray run and an in-process run of one model resume each other's predictions, and nothing else does."""
    whole = str(checkpoint)
    parts = [whole] if Path(whole).exists() else whole.split("+")
    content = hashlib.sha256("+".join(weights_fingerprint(p) for p in parts).encode()).hexdigest()[:16]
    return f"{backend}:{checkpoint}#{content}@{dtype}"


def fit_dtype(dtype: str, quantize: str = "none", offload: str = "none") -> str:
    """The dtype label ``g2u.memory.apply_memory_fit`` gives a quantized or offloaded backend."""
    return dtype + (f"+{quantize}" if quantize != "none" else "") + (f"+offload-{offload}" if offload != "none" else "")


def identity_label(backend: Any) -> str:
    """``model_identity`` as one short label (a hash: no path, no versions spelled out)."""
    blob = json.dumps(model_identity(backend), sort_keys=True)
    return f"{backend.info.backend}:{hashlib.sha256(blob.encode()).hexdigest()[:24]}"


__all__ = ["checkpoint_label", "fit_dtype", "identity_label", "model_identity", "weights_fingerprint"]
