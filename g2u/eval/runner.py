"""Crash-safe evaluation: run G→U modes over a benchmark, append every prediction as it comes, and
resume where a previous run stopped without recomputing anything.

The runner knows nothing of MLflow (``mlflow_project/`` logs what it returns). Predictions come from a
``Predictor``: the pipeline in this process, or a running TorchServe endpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from g2u.eval.answer_judge import EXACT_MATCHING, KINDS, ExactMatching, extract_records
from g2u.eval.datasets import Sample
from g2u.eval.protocols import DEFAULT_PROTOCOL, load_protocol
from g2u.eval.scoring import score_sample
from g2u.judge import attach_judgement
from g2u.modes import DEFAULT_EVAL_MODES, MODES, needs_thought


@dataclass
class EvalConfig:
    """Everything that decides a prediction: the modes and the request fields the evaluation sets (any
    field of ``g2u.schema``, backend fields included; validated by ``create``). Its ``key`` tags each
    record, so a rerun with the same settings resumes and a run with other settings never mixes with it."""

    modes: tuple[str, ...] = DEFAULT_EVAL_MODES
    fields: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    """The model's identity label (``g2u.identity``: backend, checkpoint content, dtype with quantization and
    offload; or the endpoint's): predictions of another model never count as done."""
    protocol: str = DEFAULT_PROTOCOL
    """The evaluation protocol (``g2u.eval.protocols``): each sample's question text and answer budget;
    predictions made under another protocol never count as done."""

    @classmethod
    def create(cls, modes: Sequence[str] = DEFAULT_EVAL_MODES, model: str = "", protocol: str = DEFAULT_PROTOCOL,
               **fields: Any) -> EvalConfig:
        """Validated settings: unknown modes and bad fields fail here, before any prediction, with their name."""
        from g2u.errors import InputError
        from g2u.schema import PER_SAMPLE_FIELDS, validate_settings

        for mode in modes:
            if mode not in MODES:
                raise InputError("modes", f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        load_protocol(protocol)  # an unknown protocol fails here, named
        for name in PER_SAMPLE_FIELDS:
            if fields.get(name) not in (None, ""):
                raise InputError(name, "is set per sample by the evaluation, not as a setting")
        settings = validate_settings({k: v for k, v in fields.items() if v not in (None, "")})
        return cls(modes=tuple(modes), fields=_plain(settings), model=model, protocol=protocol)

    def key(self, mode: str) -> str:
        from g2u.schema import EDIT_FIELDS

        fields = dict(self.fields)
        if not needs_thought(mode):  # the answer of a mode without a thought ignores the edit settings
            fields = {k: v for k, v in fields.items() if k not in EDIT_FIELDS}
        body = {"fields": fields, "mode": mode, "model": self.model}
        if self.protocol != "g2u_v1":  # g2u_v1 is the prompt of the runs made before protocols: they resume
            body["protocol"] = load_protocol(self.protocol).label
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def sample_fields(self, sample: Sample, mode: str, backend: str | None = None, demo: bool = False,
                      budget: bool = True) -> dict:
        """One sample's request fields in ``mode``: the protocol's question text and answer budget (unless
        ``budget`` is False: a server whose backend is unknown keeps its own), then the evaluation's
        settings (a ``max_new_tokens`` set by the user wins over the protocol's)."""
        fields = load_protocol(self.protocol).sample_fields(sample, backend=backend, demo=demo)
        if not budget:
            fields.pop("max_new_tokens")
        return {"question": sample.question, "options": sample.options, "id": sample.id, **fields,
                **self.request_fields(mode)}

    def thought_key(self) -> str:
        """Settings that decide a thought (shared by every thought mode, layout and answer setting)."""
        from g2u.schema import EDIT_FIELDS

        body = {"fields": {k: v for k, v in self.fields.items() if k in EDIT_FIELDS}, "model": self.model}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def request_fields(self, mode: str) -> dict[str, Any]:
        """The request fields (as REST and ``g2u.schema`` take them) for one mode."""
        return {"mode": mode, **self.fields}


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready settings (tuples as lists) so keys and REST payloads agree."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(settings.items())}


class Predictor(Protocol):
    label: str

    def predict(self, samples: Sequence[Sample], modes: Sequence[Sequence[str]], config: EvalConfig,
                thought_dir: Path, reuse: dict[str, dict]) -> list[dict]:
        """One record per (sample, mode) asked for. ``reuse`` maps sample id → an earlier record whose
        thought (PNG in ``thought_dir``) may be reused instead of recomputed."""
        ...


@dataclass
class EvalResult:
    records: list[dict]
    out_dir: Path
    computed: int
    reused: int
    metrics: dict[str, Any] = field(default_factory=dict)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def read_records(path: Path) -> list[dict]:
    """Records of a predictions.jsonl; a torn last line (crash mid-write) is ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _end_torn_line(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline: close it, so the next record starts
    on a line of its own (the torn one is skipped by ``read_records``)."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def evaluate(samples: Sequence[Sample], predictor: Predictor, config: EvalConfig, out_dir: str | Path,
             batch_size: int = 4, progress: bool = True,
             judge: Callable[[str, str, str], bool | float | None] | None = None,
             fidelity_judge: Callable | None = None, answer_judge: ExactMatching | None = None) -> EvalResult:
    """Predict every (sample, mode) not already in ``out_dir/predictions.jsonl``; append as they come.
    ``answer_judge`` (``g2u.eval.answer_judge``; default exact matching) reads MCQ and yes/no answers;
    ``judge(question, answer, prediction)`` (e.g. ``scoring.mmvet_judge``; its ``label`` names it) rescores
    open answers; ``fidelity_judge`` (``g2u.judge.make_judge``) adds the judged fidelity of each thought.
    Resumed records read by another answer judge or open-answer judge are read again with this run's
    (and the file rewritten), so one run's numbers always come from one judge."""
    extractor = answer_judge or ExactMatching()
    open_judge = judge_label(judge)
    out = Path(out_dir)
    (out / "thoughts").mkdir(parents=True, exist_ok=True)
    path = out / "predictions.jsonl"
    config = replace(config, model=config.model or predictor.label)
    existing = [r for r in read_records(path) if r.get("config_key") == config.key(r.get("mode", ""))]
    done = {(r["id"], r["mode"]) for r in existing}
    reuse = {r["id"]: r for r in existing if r.get("thought_path")}

    todo = [(s, [m for m in config.modes if (s.id, m) not in done]) for s in samples]
    todo = [(s, modes) for s, modes in todo if modes]
    computed = 0
    bar = tqdm(total=sum(len(m) for _, m in todo), desc="evaluate", unit="pred", disable=not progress)
    _end_torn_line(path)
    with path.open("a") as sink:
        chunks = list(_chunks(todo, batch_size))
        if hasattr(predictor, "run_batches"):  # a pool of workers (Ray) streams chunks back as they finish
            stream = predictor.run_batches(chunks, config, out / "thoughts", reuse)
        else:
            stream = ((c, predictor.predict([s for s, _ in c], [m for _, m in c], config, out / "thoughts", reuse))
                      for c in chunks)
        for chunk, records in stream:
            by_id = {s.id: s for s, _ in chunk}
            for record in records:
                sample = by_id[record["id"]]
                edit = record.get("edit") or {}
                record.update(_sample_fields(sample), config_key=config.key(record["mode"]),
                              protocol=load_protocol(config.protocol).label,
                              edit_prompt=edit.get("prompt"), family=edit.get("family"), writer=edit.get("writer"))
                # A refused or failed prediction is an error, never a wrong answer.
                record["correct"] = None if record.get("error") or record.get("no_gold") else \
                    bool(score_sample(sample, record["prediction"]))
            extract_records([(r, by_id[r["id"]]) for r in records], extractor)
            for record in records:
                sample = by_id[record["id"]]
                _judge_open(record, sample, judge, open_judge)
                attach_judgement(record, fidelity_judge, sample.load_image(), out)
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                if record.get("thought_path"):
                    reuse[record["id"]] = record
            sink.flush()
            os.fsync(sink.fileno())
            computed += len(records)
            bar.update(len(records))
    bar.close()
    ids = {s.id for s in samples}
    wanted = set(config.modes)
    records = [r for r in read_records(path)
               if r.get("config_key") == config.key(r.get("mode", "")) and r["id"] in ids and r["mode"] in wanted]
    by_sample = {s.id: s for s in samples}
    stale = [r for r in records if _read_by_other_judge(r, by_sample[r["id"]], extractor.label, open_judge)]
    if stale:
        extract_records([(r, by_sample[r["id"]]) for r in stale], extractor)
        for r in stale:
            _judge_open(r, by_sample[r["id"]], judge, open_judge)
        _rewrite(path, stale)
    return EvalResult(records=records, out_dir=out, computed=computed, reused=len(existing))


def judge_label(judge: Callable | None) -> str | None:
    """What names an open-answer judge in records and runs: its ``label``, else its function name."""
    if judge is None:
        return None
    return str(getattr(judge, "label", None) or getattr(judge, "__name__", type(judge).__name__))


def _judge_open(record: dict, sample: Sample, judge: Callable | None, label: str | None) -> None:
    """An open answer graded by ``judge`` (``record["judge"]``, None when it could not answer: the rule
    score stands) and named (``judge_model``); without a judge, any earlier grade is dropped."""
    if sample.answer_kind != "open" or record.get("error") or record.get("no_gold"):
        return
    record["judge_model"] = label
    record["correct"] = bool(score_sample(sample, record["prediction"]))
    record["judge"] = None
    if judge is not None:
        verdict = judge(sample.question, sample.answer, record["prediction"])
        record["judge"] = verdict
        if verdict is not None:
            record["correct"] = verdict


def _read_by_other_judge(record: dict, sample: Sample, answer_judge: str, open_judge: str | None) -> bool:
    if record.get("error") or record.get("no_gold"):
        return False
    if sample.answer_kind == "open":
        return record.get("judge_model", record.get("judge") and "unknown") != open_judge
    return sample.answer_kind in KINDS and record.get("answer_judge", EXACT_MATCHING) != answer_judge


def _rewrite(path: Path, updated: Sequence[dict]) -> None:
    """Replace the lines of ``updated`` records in ``path`` (temp file + rename: a crash leaves the old file
    or the new one, never half of one); a torn line is dropped."""
    by_key = {(r.get("config_key"), r["id"], r["mode"]): r for r in updated}
    lines = []
    for record in read_records(path):
        record = by_key.get((record.get("config_key"), record["id"], record["mode"]), record)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sample_fields(sample: Sample) -> dict[str, Any]:
    return {"question": sample.question, "options": sample.options, "answer": sample.answer,
            "category": sample.category, "answer_kind": sample.answer_kind, "group": sample.group,
            "l2_category": sample.extra.get("l2-category"),
            **{k: sample.extra[k] for k in ("figure_group", "question_group", "no_gold") if k in sample.extra}}
