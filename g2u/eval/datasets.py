"""Benchmarks as lists of ``Sample``: the user points at a file or folder and the format is detected.

Formats: the JSONL manifests of ../shared/data (``id, image, question, options, answer, category``),
VLMEvalKit TSVs (MMBench, MME, HallusionBench... with base64 ``image`` or ``image_path``), MM-Vet JSON,
and the ``easy-vqa`` PyPI package (it ships its images, so CI can evaluate offline). ``sample`` is a
few easy-vqa questions: what plain ``mlflow run .`` evaluates.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from g2u.errors import DataError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
YES_NO = ("yes", "no")
BUILTIN_SAMPLE = 8
MMVET_CAPABILITIES = {"rec", "ocr", "know", "gen", "spat", "math"}
CIRCULAR_OFFSET = 1_000_000
"""MMBench circular eval: the shifted copies of question i have indices i + k·1e6."""


@dataclass
class Sample:
    """One benchmark question. MCQ gold answers are letters; yes/no answers are "yes"/"no"."""

    id: str
    question: str
    options: list[str] | None
    answer: str
    category: str
    answer_kind: str
    """"mcq", "yesno" or "open" (MM-Vet ``<AND>``/``<OR>`` answers are open)."""
    image_path: str | None = None
    image_b64: str | None = None
    group: str | None = None
    """Questions scored together: MMBench circular copies, the questions of one MME image."""
    extra: dict[str, Any] = field(default_factory=dict)
    thought_path: str | None = None
    """A thought made by another system for this sample (the ``thought_path`` column): answered with,
    instead of generating one."""
    hint: str | None = None
    """The benchmark's hint (VLMEvalKit TSV ``hint``), kept apart so each protocol places it its own way."""
    raw_question: str | None = None
    """The question as the benchmark gives it, when ``question`` has the hint joined in."""
    dataset: str = ""
    """The benchmark's name (its file's stem): the protocol maps some names to their own prompt layout."""

    @property
    def prompt_question(self) -> str:
        """The question a protocol builds its text from (without the hint)."""
        return self.raw_question if self.raw_question is not None else self.question

    def thought_bytes(self) -> bytes | None:
        """The brought thought's file bytes (decoded by the request's bounded image loader)."""
        if self.thought_path is None:
            return None
        try:
            return Path(self.thought_path).read_bytes()
        except OSError as exc:
            raise ValueError(f"sample {self.id!r}: cannot read its thought_path ({exc})") from exc

    def load_image(self) -> Image.Image:
        try:
            if self.image_path is not None:
                img = Image.open(self.image_path)
            elif self.image_b64 is not None:
                img = Image.open(io.BytesIO(base64.b64decode(self.image_b64, validate=False)))
            else:
                raise ValueError("has no image")
            return img.convert("RGB")
        except (OSError, UnidentifiedImageError, binascii.Error, ValueError) as exc:
            raise ValueError(f"sample {self.id!r}: cannot read its image ({exc})") from exc


def load_dataset(source: str | Path, limit: int | None = None) -> list[Sample]:
    """Load a benchmark from a path (file or folder) or a built-in name; ``limit`` keeps the first N."""
    samples = _load(str(source))
    name = _dataset_name(str(source))
    for sample in samples:
        sample.dataset = sample.dataset or name
    if not samples:
        raise ValueError(f"benchmark {source!r} has no samples")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"benchmark {source!r}: sample id {dup!r} appears more than once")
    return samples[:limit] if limit else samples


def _dataset_name(source: str) -> str:
    """A benchmark's name: a built-in's name, else its file's stem (a folder: its one manifest's stem)."""
    if source in ("sample", "builtin") or source.startswith("easy-vqa"):
        return "easy-vqa"
    path = Path(source).expanduser()
    return path.stem if path.is_file() or not path.is_dir() else path.name


def _load(source: str) -> list[Sample]:
    if source in ("sample", "builtin"):
        return load_easy_vqa("test")[:BUILTIN_SAMPLE]
    if source.startswith("easy-vqa"):
        split = source.partition(":")[2] or "test"
        if split not in ("train", "test"):
            raise ValueError(f"benchmark {source!r}: the easy-vqa split must be 'train' or 'test'")
        return load_easy_vqa(split)
    path = Path(source).expanduser()
    if path.is_dir():
        manifests = sorted(path.glob("*.jsonl")) + sorted(path.glob("*.tsv")) + sorted(path.glob("*.json"))
        if len(manifests) != 1:
            raise ValueError(f"benchmark folder {path} must hold exactly one .jsonl/.tsv/.json file, "
                             f"found {[m.name for m in manifests]}")
        path = manifests[0]
    if not path.is_file():
        raise ValueError(f"benchmark {source!r}: no such file or folder (or a name: sample, easy-vqa)")
    loaders = {".jsonl": load_jsonl, ".tsv": load_tsv, ".json": load_mmvet}
    if path.suffix not in loaders:
        raise ValueError(f"benchmark {path}: unknown format {path.suffix!r} (want .jsonl, .tsv or .json)")
    return loaders[path.suffix](path)


# ---------------------------------------------------------------- shared rules
def _kind(options: list[str] | None, answer: str) -> str:
    if options:
        return "mcq"
    return "yesno" if answer.strip().lower() in YES_NO else "open"


def gold_letter(answer: str, options: list[str], where: tuple[Any, Any]) -> str:
    """MCQ gold as a letter: a valid letter stays; an option's text becomes its letter (PuzzleVQA)."""
    letters = LETTERS[: len(options)]
    answer = answer.strip()
    if len(answer) == 1 and answer.upper() in letters:
        return answer.upper()
    matches = [i for i, opt in enumerate(options) if opt.strip().lower() == answer.lower()]
    if len(matches) == 1:
        return letters[matches[0]]
    raise DataError(*where, "answer", f"{answer!r} is neither a letter {letters[0]}-{letters[-1]} "
                    "nor exactly one option's text")


def _options(value: Any, where: tuple[Any, Any]) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(o, (str, int, float)) for o in value) or len(value) < 2:
        raise DataError(*where, "options", "must be a list of at least 2 strings or null")
    return [str(o) for o in value]


# ---------------------------------------------------------------- JSONL manifests
def load_jsonl(path: Path) -> list[Sample]:
    """One JSON object a line: id, image (relative to the file's folder), question, options, answer,
    category; every other field is kept in ``extra``."""
    samples = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = (path, n)
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(*where, None, f"not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DataError(*where, None, "must be a JSON object")
        for key in ("id", "image", "question", "answer"):
            if row.get(key) in (None, ""):
                raise DataError(*where, key, "is missing")
        options = _options(row.get("options"), where)
        answer = str(row["answer"])
        if options:
            answer = gold_letter(answer, options, where)
        image = (path.parent / row["image"]).resolve()
        known = {"id", "image", "question", "options", "answer", "category", "thought_path"}
        samples.append(Sample(id=str(row["id"]), question=str(row["question"]), options=options, answer=answer,
                              category=str(row.get("category") or ""), answer_kind=_kind(options, answer),
                              image_path=str(image), extra={k: v for k, v in row.items() if k not in known},
                              thought_path=_relative(path, row.get("thought_path"))))
    return samples


# ---------------------------------------------------------------- VLMEvalKit TSV
def _cell(value: Any) -> str | None:
    """A TSV cell as text; pandas reads empty cells as NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def load_tsv(path: Path) -> list[Sample]:
    """VLMEvalKit layout: index, question, [hint], A.., answer, [category, l2-category], and the image as
    base64 in ``image`` (a short value there names the row whose image it shares, as in MMBench) or a
    path in ``image_path``. MMBench circular copies (index ≥ 1e6) share ``group = index % 1e6``; yes/no
    questions of one image share a group (MME acc+). HallusionBench (string index such as
    ``VD_figure_x_0_0_0``: set/figure/question ids are ``index.split('_')[3:6]``, or ``set_id`` /
    ``figure_id`` / ``question_id`` columns) gets ``figure_group = l2/set/figure`` and ``question_group =
    l2/set/question`` as the reference groups fAcc/qAcc; its text-only rows (no image) are skipped."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=True)
    for key in ("index", "question"):
        if key not in frame.columns:
            raise DataError(path, None, key, "is missing (a VLMEvalKit TSV column)")
    # A split without gold answers (MMBench's test split): predicted and written, its scoring skipped
    no_gold = "answer" not in frame.columns or frame["answer"].isna().all()
    if no_gold:
        frame["answer"] = ""
    if "image" not in frame.columns and "image_path" not in frame.columns:
        raise DataError(path, None, "image", "column is missing: needs an 'image' (base64) or 'image_path' column")
    rows = frame.to_dict("records")
    images = {str(r["index"]): r.get("image") for r in rows}
    circular = any((_int_index(r["index"]) or 0) >= CIRCULAR_OFFSET for r in rows)
    # MM-Vet's TSV: every category a comma-separated set of its capabilities; all its answers are open
    # (a gold "yes" is graded by the judge, not read as a yes/no question)
    # (an MMBench subset whose rows are all "ocr" has options: it is not MM-Vet)
    mmvet = all(set(str(_cell(r.get("category")) or "?").split(",")) <= MMVET_CAPABILITIES
                and _cell(r.get("A")) is None for r in rows)
    samples = []
    for n, row in enumerate(rows, 2):  # line 1 is the header
        where = (path, n)
        index = str(row["index"])
        question, answer = _cell(row["question"]), "" if no_gold else _cell(row["answer"])
        if question is None or answer is None:
            raise DataError(*where, "question" if question is None else "answer", "is empty")
        options = [o for o in (_cell(row.get(c)) for c in LETTERS[:8]) if o is not None] or None
        if options and not no_gold:
            answer = gold_letter(answer, options, where)
        hint = _cell(row.get("hint"))
        raw_question = question
        if hint:
            question = f"Hint: {hint}\nQuestion: {question}"
        image_b64 = _cell(row.get("image"))
        image_owner = index  # the row whose image this is: questions on one image form an MME group
        if image_b64 is not None and len(image_b64) <= 64:  # a reference to another row's image
            image_owner, image_b64 = image_b64, _cell(images.get(image_b64))
        image_path = _cell(row.get("image_path"))
        hallusion = _hallusion_ids(row)
        if image_b64 is None and image_path is None and hallusion is not None:
            continue  # a HallusionBench text-only question: not a visual question, not scored
        if image_b64 is None and image_path is None:
            raise DataError(*where, "image", "is empty and there is no 'image_path'")
        if image_b64 is None and image_path is not None and not Path(image_path).is_absolute():
            image_path = str((path.parent / image_path).resolve())
        kind = "open" if mmvet else _kind(options, answer)
        if no_gold and not options and "yes or no" in question.lower():
            kind = "yesno"
        if kind == "yesno":
            answer = answer.strip().lower()
        extra = {k: v for k, v in ((c, _cell(row.get(c))) for c in ("l2-category", "hint", "split", "source"))
                 if v is not None}
        if no_gold:
            extra["no_gold"] = True
        if hallusion is not None:
            l2, set_id, figure_id, question_id = hallusion
            extra["figure_group"] = f"{l2}/{set_id}/{figure_id}"
            extra["question_group"] = f"{l2}/{set_id}/{question_id}"
        group = None
        if circular and options:
            group = str(int(float(index)) % CIRCULAR_OFFSET)
        elif kind == "yesno":
            group = _cell(row.get("image_path")) or f"img:{image_owner}"
        samples.append(Sample(id=index, question=question, options=options, answer=answer,
                              category=_cell(row.get("category")) or "", answer_kind=kind,
                              image_path=None if image_b64 else image_path, image_b64=image_b64,
                              group=group, extra=extra, thought_path=_relative(path, _cell(row.get("thought_path"))),
                              hint=hint, raw_question=raw_question if hint else None))
    return samples


def _int_index(value: Any) -> int | None:
    """A numeric row index (MMBench, MME), or None for string ids (HallusionBench)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def _hallusion_ids(row: dict) -> tuple[str, str, str, str] | None:
    """(l2-category, set, figure, question) of a HallusionBench row: from ``set_id``/``figure_id``/
    ``question_id`` columns, else from a string index ``<cat>_<l2>_<x>_<set>_<figure>_<question>``."""
    l2 = _cell(row.get("l2-category"))
    cols = [_cell(row.get(c)) for c in ("set_id", "figure_id", "question_id")]
    if all(cols):
        return (l2 or _cell(row.get("category")) or "", *cols)  # type: ignore[return-value]
    index = str(row.get("index"))
    parts = index.split("_")
    if _int_index(index) is None and len(parts) >= 6:
        return (l2 or parts[1], parts[3], parts[4], parts[5])
    return None
def _relative(manifest: Path, value: Any) -> str | None:
    """A path column, relative to the manifest's folder (absolute paths stay)."""
    if value in (None, ""):
        return None
    p = Path(str(value))
    return str(p if p.is_absolute() else (manifest.parent / p).resolve())


# ---------------------------------------------------------------- MM-Vet
def load_mmvet(path: Path) -> list[Sample]:
    """MM-Vet: {id: {imagename, question, answer, capability: [...]}} with images in ``images/`` beside
    the file. Answers are open (``<AND>``/``<OR>`` kept for scoring); category = the capabilities."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, None, None, f"not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise DataError(path, None, None, "want an object of id → {imagename, question, answer, capability}")
    samples = []
    for sid, row in data.items():
        where = (path, str(sid))
        if not isinstance(row, dict):
            raise DataError(*where, None, "must be an object")
        for key in ("imagename", "question", "answer"):
            if not row.get(key):
                raise DataError(*where, key, "is missing")
        caps = row.get("capability") or []
        answer = str(row["answer"])
        samples.append(Sample(id=str(sid), question=str(row["question"]), options=None, answer=answer,
                              category=",".join(sorted(caps)), answer_kind="open",
                              image_path=str((path.parent / "images" / row["imagename"]).resolve()),
                              extra={"capability": caps}))
    return samples


# ---------------------------------------------------------------- easy-vqa
def load_easy_vqa(split: str = "test") -> list[Sample]:
    """The easy-vqa package (shapes and colours, images shipped in the wheel). Category: the answer type
    (shape, color or yes/no), so per-category accuracy reads as per question type."""
    import easy_vqa

    if split == "test":
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    else:
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    shapes = {"circle", "rectangle", "triangle"}
    samples = []
    for n, (question, answer, image_id) in enumerate(zip(questions, answers, image_ids)):
        category = "yes/no" if answer in YES_NO else "shape" if answer in shapes else "color"
        samples.append(Sample(id=f"easy-vqa-{split}-{n:05d}", question=question, options=None, answer=answer,
                              category=category, answer_kind=_kind(None, answer), image_path=paths[image_id],
                              group=f"img:{image_id}" if answer in YES_NO else None))
    return samples
