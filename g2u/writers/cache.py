"""Written prompts, remembered: the same (image, question) asked again costs no endpoint call. In memory
(LRU), and optionally as JSON files so evaluations re-run and server restarts keep them. Only prompts that
parsed are stored; the leak guard runs after the cache, on every request."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from g2u.writers.reply import MalformedOutput, parse_reply


def cache_key(image: Image.Image, question: str, options: Sequence[str] | None, family: str | None,
              *identity: str) -> str:
    """sha256 over the image (mode, size, raw pixels: the same identity as its PNG bytes without paying for
    an encode on a hit), the request and ``identity`` (exemplar-set digest, model, endpoint)."""
    h = hashlib.sha256()
    h.update(f"{image.mode}|{image.size[0]}x{image.size[1]}|".encode())
    h.update(image.tobytes())
    h.update(json.dumps([question, list(options or ()), family, *identity]).encode())
    return h.hexdigest()


class PromptCache:
    """Thread-safe LRU of key -> (prompt, family), optionally backed by ``folder/<key>.json``."""

    def __init__(self, size: int, folder: str | None = None):
        self.size = size
        self.folder = Path(folder) if folder else None
        self._items: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        hit = self._read(key)
        if hit is not None:
            self._remember(key, hit)
        return hit

    def put(self, key: str, value: tuple[str, str]) -> None:
        self._remember(key, value)
        self._write(key, value)

    def _remember(self, key: str, value: tuple[str, str]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def _read(self, key: str) -> tuple[str, str] | None:
        """A stored entry, re-validated: a corrupt or hand-edited file is ignored, never trusted."""
        if self.folder is None:
            return None
        try:
            return parse_reply((self.folder / f"{key}.json").read_text())
        except (OSError, UnicodeDecodeError, MalformedOutput):
            return None

    def _write(self, key: str, value: tuple[str, str]) -> None:
        """Atomic (temp file + rename) and best effort: a read-only or full disk only loses the cache."""
        if self.folder is None:
            return
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump({"prompt": value[0], "family": value[1]}, f)
            os.replace(tmp, self.folder / f"{key}.json")
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
