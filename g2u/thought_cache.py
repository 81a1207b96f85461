"""A persistent, content-addressed cache of visual thoughts: never imagine the same thing twice.

A thought is fully decided by the input pixels, the edit prompt, the edit parameters (steps, CFG, seed,
size, backend options), the checkpoint and the software that ran it. Its key is the SHA-256 of all of
those, so serving, the CLI and evaluation share one folder safely: a hit is, by construction, the image
stage I would have produced again.

Storage is ``diskcache`` (SQLite index + value files): bounded by ``size_limit`` with least-recently-used
eviction, safe for several processes (TorchServe workers) at once, and a value is visible only after its
write committed, so a reader never sees half a PNG. Configure it with ``G2U_THOUGHT_CACHE=dir`` (size:
``G2U_THOUGHT_CACHE_MB``), or ``thought_cache:`` in model-config's handler section (``dir`` or
``{dir:, max_mb:}``).

The cache is an optimisation, never a reason to fail: a read that fails (a corrupt or vanished folder) is a
miss, and a write that fails (disk full, read-only folder) leaves the computed thought as the answer, marked
(``image.info["g2u_cache_write_error"]``: the handler reports it under ``edit.cache_write``) and logged.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from g2u import progress
from g2u.types import EditOutput, EditParams

logger = logging.getLogger(__name__)

DEFAULT_MAX_MB = 2048
WRITE_ERROR = "g2u_cache_write_error"
"""``Image.info`` key set on a thought the cache could not store (the reason, e.g. ``disk full``)."""
ENV_DIR = "G2U_THOUGHT_CACHE"
ENV_MB = "G2U_THOUGHT_CACHE_MB"


def image_digest(image: Image.Image) -> str:
    """SHA-256 of the decoded pixels (mode, size, bytes): the same pixels in any lossless encoding
    (PNG, WebP, base64 or a file) share a key; a changed pixel does not."""
    h = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def checkpoint_fingerprint(checkpoint: str) -> str:
    """Identity of a checkpoint: for a local folder the names, sizes and modification times of its
    files (a rebuilt or fine-tuned checkpoint at the same path gets new keys); else the id itself."""
    path = Path(checkpoint)
    if not path.exists():
        return checkpoint
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256(str(path.resolve()).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions that can change a thought for the same inputs."""
    from importlib.metadata import PackageNotFoundError, version

    import g2u

    out = {"g2u": g2u.__version__}
    for pkg in ("torch", "transformers", "diffusers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "none"
    return out


@dataclass
class CachedThought:
    image: Image.Image
    meta: dict[str, Any]
    """What was stored alongside: the edit record, fidelity and plan of the original run."""


class ThoughtCache:
    """Bounded on-disk thought store shared by every process pointing at ``directory``."""

    def __init__(self, directory: str | Path, max_mb: float = DEFAULT_MAX_MB):
        import diskcache

        if max_mb <= 0:
            raise ValueError(f"thought cache size must be positive, got {max_mb} MB")
        self.directory = Path(directory).expanduser()
        self.max_mb = max_mb
        self._store = diskcache.Cache(str(self.directory), size_limit=int(max_mb * 2**20),
                                      eviction_policy="least-recently-used", cull_limit=2)
        # cull_limit 2: each write evicts at most two least-recently-used entries while over the bound, so
        # the folder shrinks back under it without emptying most of the cache at once (the default culls 10).
        self._identities: dict[int, str] = {}

    @classmethod
    def from_setting(cls, setting: str | dict | None) -> ThoughtCache | None:
        """From model-config (``thought_cache: dir`` or ``{dir: .., max_mb: ..}``); None: no cache."""
        if setting in (None, "", False):
            return None
        if isinstance(setting, (str, Path)):
            return cls(setting)
        if isinstance(setting, dict) and setting.get("dir"):
            unknown = set(setting) - {"dir", "max_mb"}
            if unknown:
                raise ValueError(f"thought_cache: unknown keys {sorted(unknown)} (known: dir, max_mb)")
            return cls(setting["dir"], float(setting.get("max_mb", DEFAULT_MAX_MB)))
        raise ValueError("thought_cache must be a folder or {dir: folder, max_mb: number}")

    @classmethod
    def from_env(cls) -> ThoughtCache | None:
        folder = os.environ.get(ENV_DIR)
        if not folder:
            return None
        raw = os.environ.get(ENV_MB, str(DEFAULT_MAX_MB))
        try:
            mb = float(raw)
        except ValueError as exc:
            raise ValueError(f"{ENV_MB} must be a number of megabytes, got {raw!r}") from exc
        return cls(folder, mb)

    def identity(self, backend: Any) -> str:
        """The backend part of every key: name, checkpoint fingerprint, dtype, device kind, versions."""
        key = id(backend)
        if key not in self._identities:
            info = backend.info
            self._identities[key] = json.dumps({
                "backend": info.backend, "checkpoint": checkpoint_fingerprint(info.checkpoint),
                "dtype": info.dtype, "device": str(info.device).split(":")[0], "versions": software_versions(),
            }, sort_keys=True)
        return self._identities[key]

    def key(self, backend: Any, image: Image.Image, prompt: str, params: EditParams,
            library_version: str = "") -> str:
        """The content address of one thought (``params.size`` resolved)."""
        edit = {"steps": params.steps, "text_cfg": params.text_cfg, "image_cfg": params.image_cfg,
                "seed": params.seed, "size": list(params.size) if params.size else None,
                "negative_prompt": params.negative_prompt,
                "options": {k: params.options[k] for k in sorted(params.options)}}
        blob = json.dumps({"backend": self.identity(backend), "image": image_digest(image), "prompt": prompt,
                           "edit": edit, "library": library_version}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> CachedThought | None:
        """The stored thought, or None (absent, or unreadable: a miss, never an error)."""
        try:
            value = self._store.get(key)
            if value is None:
                return None
            png, meta = value
            return CachedThought(Image.open(io.BytesIO(png)).convert("RGB"), json.loads(meta))
        except (OSError, sqlite3.Error, ValueError, TypeError) as exc:
            logger.warning("thought cache read failed (%s): treated as a miss", _reason(exc))
            return None

    def put(self, key: str, image: Image.Image, meta: dict[str, Any]) -> bool:
        """Store a thought; False (and ``image.info[WRITE_ERROR]`` set) when the store cannot write."""
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        try:
            self._store.set(key, (buf.getvalue(), json.dumps(meta, default=str)))
        except (OSError, sqlite3.Error) as exc:
            reason = _reason(exc)
            image.info[WRITE_ERROR] = reason
            logger.warning("thought cache write failed (%s): the thought is served, not stored", reason)
            return False
        return True

    def __len__(self) -> int:
        return len(self._store)

    def volume(self) -> int:
        """Bytes on disk (index + values)."""
        return int(self._store.volume())

    def close(self) -> None:
        self._store.close()


def _reason(exc: BaseException) -> str:
    """A short, path-free reason (the cache folder is the server's)."""
    import errno

    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "full" in str(exc).lower():
        return "disk full"
    if isinstance(exc, PermissionError) or "readonly" in str(exc).lower().replace("-", ""):
        return "not writable"
    return type(exc).__name__


__all__ = ["ENV_DIR", "ENV_MB", "CachedThought", "ThoughtCache", "checkpoint_fingerprint", "image_digest"]


class CachedEditor:
    """The backend's ``edit`` behind the cache: hits come back marked ``cached`` (with their lookup time),
    the misses go to the backend in one batched call and are stored."""

    def __init__(self, backend: Any, cache: ThoughtCache, library_version: str = ""):
        self.backend, self.cache, self.library_version = backend, cache, library_version

    def lookup(self, image: Image.Image, prompt: str, params: EditParams) -> tuple[str, EditOutput | None]:
        """(key, the cached thought or None): ``g2u.scheduler`` looks up each job before denoising it."""
        start = time.perf_counter()
        key = self.cache.key(self.backend, image, prompt, params, self.library_version)
        hit = self.cache.get(key)
        return key, None if hit is None else EditOutput(hit.image, hit.meta.get("plan"), cached=True,
                                                        cache_ms=(time.perf_counter() - start) * 1000)

    def store(self, key: str, result: EditOutput) -> None:
        self.cache.put(key, result.image, {"plan": result.plan})

    def edit(self, images: Sequence[Image.Image], prompts: Sequence[str],
             params: Sequence[EditParams]) -> list[EditOutput]:
        keys, out = [], []
        for image, prompt, p in zip(images, prompts, params):
            key, hit = self.lookup(image, prompt, p)
            keys.append(key)
            out.append(hit)
        missing = [i for i, o in enumerate(out) if o is None]
        if missing:
            with progress.subset(missing):  # the misses' rows (g2u.progress)
                made = self.backend.edit([images[i] for i in missing], [prompts[i] for i in missing],
                                         [params[i] for i in missing])
            for i, result in zip(missing, made):
                out[i] = result
                self.store(keys[i], result)
        return out  # type: ignore[return-value]
