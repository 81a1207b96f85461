"""Interop with VLMEvalKit both ways: every evaluation writes the reference's prediction file
(``{model}_{dataset}.xlsx``: the benchmark's columns without the image, plus ``prediction``; one file per
mode) so ``vlmutil eval`` can score our predictions there, and ``score_prediction_file`` scores a VLMEvalKit
prediction file with ours (``g2u eval score FILE``).

A failed prediction is written as VLMEvalKit writes one (``Failed to obtain answer: …``, its
``INFER_FAIL_MSG``), so both sides count it as a failure and a miss.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from g2u.eval.datasets import LETTERS, Sample, load_tsv

FAIL_MSG = "Failed to obtain answer"
"""VLMEvalKit's ``INFER_FAIL_MSG`` (vlmeval/smp/file.py): a prediction holding it is a failed inference."""


_COLUMNS = ("index", "question", "hint", *LETTERS, "answer", "category", "l2-category", "split", "source",
            "image_path", "prediction")


def _safe(name: str, keep: str = "") -> str:
    """A file-name part. ``{model}_{dataset}``: the model part has no underscore (the dataset's name, as
    VLMEvalKit spells it, keeps its own: MMBench_DEV_EN)."""
    return re.sub(rf"[^A-Za-z0-9.+{keep}-]+", "-", name).strip("-") or "model"


def _index(value: str) -> int | str:
    return int(value) if re.fullmatch(r"-?\d+", value) else value


def prediction_rows(records: Sequence[dict], samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """One mode's records as VLMEvalKit prediction rows, in the benchmark's order."""
    by_id = {r["id"]: r for r in records}
    rows = []
    for sample in samples:
        record = by_id.get(sample.id)
        if record is None:
            continue
        row: dict[str, Any] = {"index": _index(sample.id), "question": sample.prompt_question}
        if sample.hint:
            row["hint"] = sample.hint
        for letter, option in zip(LETTERS, sample.options or []):
            row[letter] = option
        if sample.extra.get("no_gold") is not True:
            row["answer"] = sample.answer.capitalize() if sample.answer_kind == "yesno" else sample.answer
        row["category"] = sample.category
        for key in ("l2-category", "split", "source"):
            if key in sample.extra:
                row[key] = sample.extra[key]
        if sample.answer_kind == "yesno" and sample.group:
            row["image_path"] = sample.group  # MME_rating groups acc+ by image_path
        if record.get("error"):
            reason = record["error"].get("reason", record["error"]) if isinstance(record["error"], dict) \
                else record["error"]
            row["prediction"] = f"{FAIL_MSG}: {reason}"
        else:
            row["prediction"] = str(record.get("prediction", ""))
        rows.append(row)
    return rows


def write_prediction_files(records: Sequence[dict], samples: Sequence[Sample], out_dir: Path, model: str,
                           dataset: str) -> dict[str, Path]:
    """``{model}-{mode}_{dataset}.xlsx`` per mode in ``out_dir`` (the reference's layout: one model's
    predictions on one dataset a file); returns {mode: path}."""
    import pandas as pd
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for mode in dict.fromkeys(r["mode"] for r in records):
        rows = prediction_rows([r for r in records if r["mode"] == mode], samples)
        path = out_dir / f"{_safe(model)}-{_safe(mode)}_{_safe(dataset, keep='_')}.xlsx"
        seen = list(dict.fromkeys(k for row in rows for k in row))
        columns = [c for c in _COLUMNS if c in seen] + [c for c in seen if c not in _COLUMNS]
        frame = pd.DataFrame(rows, columns=columns)
        for column in frame.columns:  # control characters (a demo model's noise) cannot be stored in xlsx
            frame[column] = frame[column].map(lambda v: ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v)
        frame.to_excel(path, index=False, engine="openpyxl")
        paths[mode] = path
    return paths


def read_prediction_file(path: str | Path) -> tuple[list[Sample], dict[str, str]]:
    """A VLMEvalKit prediction file (``.xlsx``, ``.tsv`` or ``.csv``) as our samples (through the TSV
    loader, so groups are read as for the benchmark file) and {sample id: prediction}."""
    import pandas as pd

    from g2u.errors import InputError

    path = Path(path)
    readers = {".xlsx": lambda p: pd.read_excel(p, dtype=str, engine="openpyxl"),
               ".tsv": lambda p: pd.read_csv(p, sep="\t", dtype=str), ".csv": lambda p: pd.read_csv(p, dtype=str)}
    if path.suffix not in readers:
        raise InputError("file", f"{path.name}: want a VLMEvalKit prediction file (.xlsx, .tsv or .csv)")
    if not path.is_file():
        raise InputError("file", f"no such file {path}")
    frame = readers[path.suffix](path)
    for column in ("index", "question", "prediction"):
        if column not in frame.columns:
            raise InputError("file", f"{path.name}: column {column!r} is missing (VLMEvalKit prediction file)")
    if "image_path" not in frame.columns and "image" not in frame.columns:
        frame["image_path"] = "-"  # the loader wants an image; scoring never opens it
    predictions = dict(zip(frame["index"].astype(str), frame["prediction"].fillna("").astype(str)))
    stem = path.stem.split("_", 1)[1] if "_" in path.stem else path.stem  # {model}_{dataset}
    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / f"{stem}.tsv"
        frame.drop(columns=["prediction"]).to_csv(tsv, sep="\t", index=False)
        samples = load_tsv(tsv)
    for sample in samples:
        sample.dataset = stem
    return samples, predictions


def records_from_file(path: str | Path, mode: str = "baseline") -> tuple[list[dict], list[Sample]]:
    """Records (as the runner writes them) for a prediction file; ``Failed to obtain answer…`` is an error."""
    from g2u.eval.runner import _sample_fields

    samples, predictions = read_prediction_file(path)
    records = []
    for sample in samples:
        prediction = predictions.get(sample.id, "")
        record = {"id": sample.id, "mode": mode, "prediction": prediction, **_sample_fields(sample)}
        if FAIL_MSG in prediction:
            record["error"] = {"reason": prediction}
        records.append(record)
    return records, samples


def score_prediction_file(path: str | Path, mode: str = "baseline", answer_judge: Any = None) -> dict[str, Any]:
    """Our protocol's metrics (``g2u.eval.report.compute_metrics``) of a VLMEvalKit prediction file; MCQ and
    yes/no answers read by ``answer_judge`` (``g2u.eval.answer_judge``; default exact matching)."""
    from g2u.eval.answer_judge import ExactMatching, extract_records
    from g2u.eval.report import compute_metrics

    records, samples = records_from_file(path, mode)
    by_id = {s.id: s for s in samples}
    extract_records([(r, by_id[r["id"]]) for r in records], answer_judge or ExactMatching())
    return compute_metrics(records, samples)


def score_summary(path: str | Path, mode: str = "baseline", answer_judge: str | None = None,
                  protocol: str = "vlmevalkit") -> dict[str, Any]:
    """The numbers of ``score_prediction_file`` (finite ones), with what made them: extraction, answer judge
    (``exact_matching``, or ``openai[:MODEL]`` with ``protocol``'s judge prompts) and how failed predictions
    count."""
    from g2u.eval.answer_judge import make_answer_judge
    from g2u.eval.protocols import load_protocol

    extractor = make_answer_judge(answer_judge, load_protocol(protocol))
    extractor.check()
    metrics = score_prediction_file(path, mode, extractor)
    flat = {k: v for k, v in metrics["flat"].items() if isinstance(v, (int, float)) and v == v}
    return {"file": str(path), "params": {"extraction": "vlmevalkit@e8e78f05", "answer_judge": extractor.label,
                                          "answer_judge_model": extractor.model or "none",
                                          "protocol": load_protocol(protocol).label,
                                          "errors": "miss (excl_errors/… beside)"},
            "metrics": flat}
