"""Reading MCQ and yes/no answers: exact matching, and optionally a judge model for what it cannot read, the
way VLMEvalKit uses one (``extract_answer_from_item``, ``YOrN_auxeval``).

- Exact matching first (``scoring.infer_choice`` / ``extract_yesno``). A judge is asked only when it finds
  nothing: an MCQ output that refuses or names no option ("Z") is read, as a miss, and never judged.
- The judge's prompt is the protocol's (``judge.mcq`` / ``judge.yesno`` in its YAML: the reference's
  strings), one try per listed temperature; its reply is read with the same exact-matching rules.
- After the last try, the protocol's fallback: MCQ a random pick among the options and Z (the reference's
  ``rd.choice(list(choices) + ['Z'])``), seeded by the sample so reruns agree; yes/no "Unknown" (a miss).
- Every outcome is cached on disk (``diskcache``) by (judge, endpoint, prompt, tries), except a fallback
  reached through API errors: a rerun asks again.
- Each record says what read it: ``extraction`` (``exact``, ``unreadable``: exact matching found nothing
  and no judge was asked, ``judge``, ``judge_fallback``), ``extracted`` (the label; None = no answer),
  ``answer_judge`` (``exact_matching`` or the judge's label) and ``judge_log`` (its replies).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from g2u.errors import InputError
from g2u.eval.datasets import LETTERS
from g2u.eval.protocols import Protocol
from g2u.eval.scoring import extract_yesno, infer_choice

EXACT_MATCHING = "exact_matching"
ANSWER_JUDGES = (EXACT_MATCHING, "openai")
KINDS = ("mcq", "yesno")
"""Answer kinds an answer judge reads (open answers have their own grader: ``scoring.mmvet_judge``)."""
_NO_ANSWER = "Z"


@dataclass
class Extraction:
    """How one answer was read; ``extracted`` None means no answer (a miss)."""

    extracted: str | None
    extraction: str
    answer_judge: str
    judge_log: list[str] | None = None

    def fields(self) -> dict[str, Any]:
        out = asdict(self)
        if out["judge_log"] is None:
            out.pop("judge_log")
        return out


def read_exact(kind: str, prediction: str, options: Sequence[str] | None) -> str | None:
    """Exact matching's reading: a letter or "Z" (MCQ), "yes"/"no" (yes/no), None when it cannot read it."""
    if kind == "mcq":
        return infer_choice(prediction, options or [])
    return extract_yesno(prediction)


class ExactMatching:
    """No judge: what exact matching cannot read is no answer (VLMEvalKit's ``judge=exact_matching``)."""

    label = EXACT_MATCHING
    model: str | None = None

    def extract(self, kind: str, question: str, options: Sequence[str] | None, prediction: str,
                seed_key: str = "") -> Extraction:
        read = read_exact(kind, prediction, options)
        if read is not None:
            return Extraction(None if read == _NO_ANSWER else read, "exact", self.label)
        return self.unreadable(kind, question, options, prediction, seed_key)

    def unreadable(self, kind: str, question: str, options: Sequence[str] | None, prediction: str,
                   seed_key: str) -> Extraction:
        return Extraction(None, "unreadable", self.label)

    def check(self) -> None:
        """Nothing to check offline."""


def fallback_pick(options: Sequence[str] | None, seed_key: str, prediction: str) -> str | None:
    """The reference's MCQ fallback, ``rd.choice(list(choices) + ['Z'])``, seeded by the sample and its
    output (a rerun picks the same); "Z" is no answer, so the result may be None."""
    letters = list(LETTERS[: len(options or [])])
    pool = letters + [_NO_ANSWER] if _NO_ANSWER not in letters else letters
    seed = hashlib.sha256(json.dumps([seed_key, prediction]).encode()).digest()[:8]
    pick = random.Random(int.from_bytes(seed, "big")).choice(pool)
    return None if pick == _NO_ANSWER else pick


class OpenAIAnswerJudge(ExactMatching):
    """An OpenAI-compatible chat model reads what exact matching cannot, with the protocol's prompts."""

    def __init__(self, protocol: Protocol, model: str, base_url: str | None = None, api_key: str | None = None,
                 cache_dir: str | Path | None = None, client: Any = None, timeout_s: float = 60.0):
        import openai

        self.protocol = protocol
        self.model = model
        self.base_url = base_url
        self.client = client or openai.OpenAI(api_key=api_key or "none", base_url=base_url, timeout=timeout_s,
                                              max_retries=2)
        self.label = f"openai:{model}@{base_url or 'api.openai.com'}"
        self._memory: dict[str, dict[str, Any]] = {}
        self._disk = None
        if cache_dir is not None:
            import diskcache

            self._disk = diskcache.Cache(str(cache_dir))

    def _ask(self, text: str, temperature: float) -> str:
        reply = self.client.chat.completions.create(
            model=self.model, temperature=temperature, max_tokens=self.protocol.judge.max_tokens,
            messages=[{"role": "user", "content": [{"type": "text", "text": text}]}])
        return reply.choices[0].message.content or ""

    def check(self) -> None:
        """One probe before the evaluation (the reference's ``working()``): a judge that does not answer
        stops the run here, named, rather than turning every unreadable answer into a fallback pick."""
        try:
            self._ask("hello", 0)
        except Exception as exc:  # noqa: BLE001 - any failure of the endpoint is the same user error
            raise InputError("answer_judge", f"{self.label} does not answer ({type(exc).__name__}: "
                                             f"{str(exc)[:200]}); fix the endpoint or use exact_matching") from None

    def _key(self, text: str, temperatures: Sequence[float]) -> str:
        body = [self.model, self.base_url, text, list(temperatures), self.protocol.judge.max_tokens,
                self.protocol.judge.version]
        return hashlib.sha256(json.dumps(body, ensure_ascii=False).encode()).hexdigest()

    def _cached(self, key: str) -> dict[str, Any] | None:
        if key in self._memory:
            return self._memory[key]
        return self._disk.get(key) if self._disk is not None else None

    def _store(self, key: str, value: dict[str, Any]) -> None:
        self._memory[key] = value
        if self._disk is not None:
            self._disk.set(key, value)

    def unreadable(self, kind: str, question: str, options: Sequence[str] | None, prediction: str,
                   seed_key: str) -> Extraction:
        spec = self.protocol.judge.prompt(kind)
        if spec is None:  # make_answer_judge refuses such a protocol; a hand-made one reads nothing more
            return Extraction(None, "unreadable", self.label)
        text = spec.render(question, prediction, options)
        key = self._key(text, spec.temperatures)
        hit = self._cached(key)
        if hit is not None:
            return Extraction(**hit)
        log: list[str] = []
        api_failed = False
        for temperature in spec.temperatures:
            try:
                reply = self._ask(text, temperature)
            except Exception as exc:  # noqa: BLE001 - a failed try, as the reference's fail message
                api_failed = True
                log.append(f"API error: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            log.append(reply[:500])
            read = read_exact(kind, reply, options)
            if read is not None:
                result = Extraction(None if read == _NO_ANSWER else read, "judge", self.label, log)
                self._store(key, asdict(result))
                return result
        label = fallback_pick(options, seed_key, prediction) if spec.fallback == "random_option" else None
        result = Extraction(label, "judge_fallback", self.label, log)
        if not api_failed:
            self._store(key, asdict(result))
        return result


def make_answer_judge(spec: str | None, protocol: Protocol, cache_dir: str | Path | None = None,
                      client: Any = None) -> ExactMatching:
    """The extractor ``answer_judge`` names: ``exact_matching`` (default, offline), ``openai`` (model
    ``G2U_JUDGE_MODEL`` or the protocol's reference model) or ``openai:<model>``, through
    ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``. Raises InputError naming ``answer_judge``."""
    name, _, suffix = (spec or EXACT_MATCHING).partition(":")
    if name in (EXACT_MATCHING, "none"):
        return ExactMatching()
    if name != "openai":
        raise InputError("answer_judge", f"unknown answer judge {spec!r}; choose exact_matching, openai or "
                                         "openai:<model>")
    missing = [k for k in KINDS if protocol.judge.prompt(k) is None]
    if missing:
        raise InputError("answer_judge", f"protocol {protocol.label} has no judge prompt for {', '.join(missing)}: "
                                         "it reads answers by exact matching only")
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    api_key = os.environ.get("OPENAI_API_KEY") or None
    if client is None and not (base_url or api_key):
        raise InputError("answer_judge", "openai needs OPENAI_API_KEY (or OPENAI_BASE_URL for a local server)")
    model = suffix or os.environ.get("G2U_JUDGE_MODEL") or protocol.judge.reference_model or "gpt-4o-mini"
    return OpenAIAnswerJudge(protocol, model, base_url, api_key, cache_dir=cache_dir, client=client)


def extract_record(record: dict[str, Any], sample: Any, extractor: ExactMatching) -> dict[str, Any]:
    """Read one MCQ / yes-no record with ``extractor``: its ``extracted``/``extraction``/``answer_judge``
    fields and ``correct``. Errors, splits without gold and open answers are left as they are."""
    if sample.answer_kind not in KINDS or record.get("error") or record.get("no_gold"):
        return record
    read = extractor.extract(sample.answer_kind, sample.prompt_question, sample.options,
                             str(record.get("prediction", "")), seed_key=str(sample.id))
    record.pop("judge_log", None)
    record.update(read.fields())
    gold = sample.answer if sample.answer_kind == "mcq" else sample.answer.strip().lower()
    record["correct"] = read.extracted == gold
    return record


def extract_records(pairs: Sequence[tuple[dict[str, Any], Any]], extractor: ExactMatching,
                    workers: int = 4) -> None:
    """``extract_record`` over (record, sample) pairs; judge calls run ``workers`` at a time (the
    reference's ``nproc``)."""
    if isinstance(extractor, OpenAIAnswerJudge) and len(pairs) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda pair: extract_record(pair[0], pair[1], extractor), pairs))
        return
    for record, sample in pairs:
        extract_record(record, sample, extractor)


class OpenAnswerJudge:
    """MM-Vet's grader (``scoring.mmvet_judge``) with the model it asks named: records and runs carry
    ``label``."""

    def __init__(self, model: str, base_url: str | None = None, client: Any = None):
        self.model = model
        self.client = client
        self.label = f"openai:{model}@{base_url or 'api.openai.com'}"

    def __call__(self, question: str, answer: str, prediction: str) -> float | None:
        from g2u.eval.scoring import mmvet_judge

        return mmvet_judge(question, answer, prediction, client=self.client, model=self.model)


def make_open_judge(spec: str | None, client: Any = None) -> OpenAnswerJudge | None:
    """The open-answer grader ``judge`` names: none, ``openai`` (model ``G2U_JUDGE_MODEL`` or gpt-4o-mini) or
    ``openai:<model>``; None without ``OPENAI_API_KEY`` (the rule score stands, and the run says none)."""
    name, _, suffix = (spec or "none").partition(":")
    if name == "none":
        return None
    if name != "openai":
        raise InputError("judge", f"unknown judge {spec!r}; choose none, openai or openai:<model>")
    if client is None and not os.environ.get("OPENAI_API_KEY"):
        return None
    return OpenAnswerJudge(suffix or os.environ.get("G2U_JUDGE_MODEL") or "gpt-4o-mini",
                           os.environ.get("OPENAI_BASE_URL") or None, client)
