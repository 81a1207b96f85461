"""The few-shot exemplars: data, not code, so a deployment can teach its writer with its own file
(G2U_WRITER_EXEMPLARS). Validated on load, so a bad file fails at start-up with the entry to fix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from g2u.prompts import MAX_PROMPT_CHARS, find_leak
from g2u.types import FAMILIES

DEFAULT_SOURCE = "g2u/data/writer_exemplars.yaml"
_REQUIRED = ("description", "question", "prompt", "family")
_KNOWN = {*_REQUIRED, "image", "note"}


@dataclass(frozen=True)
class Exemplar:
    description: str
    """What the picture shows, in words: sent as text when there is no image file."""
    question: str
    prompt: str
    family: str
    image: Path | None = None


@dataclass(frozen=True)
class ExemplarSet:
    exemplars: tuple[Exemplar, ...]
    digest: str
    """Hash of the file's text: part of the cache key, so editing the exemplars never serves stale prompts."""
    source: str


@lru_cache(maxsize=8)
def load_exemplars(path: str | None = None) -> ExemplarSet:
    """Load and validate an exemplar file (None: the one shipped with g2u). ``image`` paths are relative
    to the file."""
    if path is None:
        data_dir = resources.files("g2u.data")
        text = data_dir.joinpath("writer_exemplars.yaml").read_text()
        source, folder = DEFAULT_SOURCE, Path(str(data_dir))
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"exemplar file {path}: cannot be read ({exc.strerror or exc})") from None
        source, folder = str(path), Path(path).parent
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"exemplar file {source}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("exemplars"), list) or not data["exemplars"]:
        raise ValueError(f"exemplar file {source}: needs a non-empty 'exemplars' list")
    out = [_entry(entry, f"exemplar file {source}, entry {i}", folder) for i, entry in enumerate(data["exemplars"])]
    return ExemplarSet(tuple(out), hashlib.sha256(text.encode()).hexdigest()[:16], source)


def _entry(entry: object, where: str, folder: Path) -> Exemplar:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a mapping with {', '.join(_REQUIRED)}")
    unknown = sorted(set(entry) - _KNOWN)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    for key in _REQUIRED:
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ValueError(f"{where}: field {key!r} must be a non-empty string")
    if entry["family"] not in FAMILIES:
        raise ValueError(f"{where}: family {entry['family']!r} is not one of {', '.join(FAMILIES)}")
    prompt = entry["prompt"].strip()
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"{where}: prompt is longer than {MAX_PROMPT_CHARS} characters")
    leak = find_leak(prompt)
    if leak:  # an exemplar that announces answers would teach the writer to do the same
        raise ValueError(f"{where}: prompt {leak}")
    image = None
    if entry.get("image") is not None:
        if not isinstance(entry["image"], str) or not entry["image"].strip():
            raise ValueError(f"{where}: field 'image' must be a path")
        image = folder / entry["image"]
        if not image.is_file():
            raise ValueError(f"{where}: image {str(image)!r} does not exist")
    return Exemplar(entry["description"].strip(), entry["question"].strip(), prompt, entry["family"], image)
