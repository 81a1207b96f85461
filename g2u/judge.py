"""Judged fidelity of a visual thought, VIEScore-style (the paper's fidelity measure).

A multimodal judge rates, on 0–10:
- semantic consistency (SC), both images shown: did the edit follow the instruction (editing success),
  and did it leave the rest alone (no over-editing);
- perceptual quality (PQ), the edited image alone: naturalness, and freedom from artefacts.
SC and PQ are each the minimum of their two sub-scores, and overall = sqrt(SC × PQ), as in VIEScore.

The judge is any OpenAI-compatible chat endpoint (images as data URLs), or ``self``: the served model's
own understanding pathway (any object with ``answer(contents, params)``, as ``g2u.backends.base``).
Judgements are cached on disk by (input image, thought image, instruction, judge, prompt version), and
never raise into a prediction: a failed judgement has ``None`` scores and its reason.

Hand-written: VIEScore is a research repository, not an installable library; its rule is two prompts and
a square root. The prompts here are our own wording of that protocol.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from g2u.schema import answer_params

PROMPT_VERSION = "viescore-tie-v1"
_CONTEXT = ("You are a careful rater of AI-edited images. Rate on integers 0–10 and explain briefly. "
            "Reply with a JSON object only: {\"score\": [s1, s2], \"reasoning\": \"...\"}.")
SC_PROMPT = _CONTEXT + """
Two images follow: the first is the original, the second is the same image after an AI edit made with the
instruction below.
s1 (editing success): 0 = the instruction was not followed at all, 10 = it was followed perfectly.
s2 (over-editing): 0 = the edited image no longer resembles the original, 10 = nothing was changed beyond
what the instruction asks.
Instruction: {instruction}"""
PQ_PROMPT = _CONTEXT + """
One AI-edited image follows.
s1 (naturalness): 0 = looks entirely unnatural (wrong lighting, impossible shapes, fake-looking), 10 =
looks like a natural photograph or drawing.
s2 (artefacts): 0 = heavy distortion, noise, blur, watermarks or broken parts, 10 = no artefacts at all."""


class Asker(Protocol):
    """One judge call: the images and a text in, the judge's raw reply out (may raise)."""

    label: str

    def __call__(self, images: Sequence[Image.Image], text: str) -> str: ...


@dataclass
class Judgement:
    """One judged thought. Scores are None when the judgement failed; ``reason`` then says why."""

    semantic_consistency: float | None
    perceptual_quality: float | None
    overall: float | None
    sc_scores: list[float] = field(default_factory=list)
    pq_scores: list[float] = field(default_factory=list)
    reason: str | None = None
    judge: str = ""
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def viescore(sc_scores: Sequence[float], pq_scores: Sequence[float]) -> tuple[float, float, float]:
    """(SC, PQ, overall): each the minimum of its sub-scores, overall = sqrt(SC × PQ)."""
    sc, pq = min(sc_scores), min(pq_scores)
    return sc, pq, math.sqrt(sc * pq)


class _Unreadable(ValueError):
    pass


def parse_scores(reply: str, count: int = 2) -> tuple[list[float], str]:
    """The ``score`` list (``count`` numbers in 0–10) and ``reasoning`` of a judge reply; the JSON object
    may sit inside prose or a code fence."""
    start, end = reply.find("{"), reply.rfind("}")
    if start < 0 or end <= start:
        raise _Unreadable(f"no JSON object in the reply {reply[:120]!r}")
    try:
        data = json.loads(reply[start:end + 1])
    except json.JSONDecodeError as exc:
        raise _Unreadable(f"reply is not valid JSON ({exc.msg}): {reply[:120]!r}") from exc
    scores = data.get("score") if isinstance(data, dict) else None
    if (not isinstance(scores, list) or len(scores) != count
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores)):
        raise _Unreadable(f"'score' must be a list of {count} numbers, got {scores!r}")
    if not all(0 <= s <= 10 for s in scores):
        raise _Unreadable(f"scores must lie in 0..10, got {scores!r}")
    return [float(s) for s in scores], str(data.get("reasoning", ""))


def _image_digest(img: Image.Image) -> str:
    h = hashlib.sha256(f"{img.mode}|{img.size[0]}x{img.size[1]}|".encode())
    h.update(img.tobytes())
    return h.hexdigest()


class FidelityJudge:
    """Judges (original, thought, instruction) triples with an ``Asker``; remembers every successful
    judgement in memory and, given ``cache_dir``, as JSON files (so re-runs of an evaluation pay nothing)."""

    def __init__(self, ask: Asker, cache_dir: str | Path | None = None):
        self.ask = ask
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[str, Judgement] = {}
        self._lock = threading.Lock()

    def key(self, original: Image.Image, thought: Image.Image, instruction: str) -> str:
        payload = json.dumps([_image_digest(original), _image_digest(thought), instruction, self.ask.label,
                              PROMPT_VERSION])
        return hashlib.sha256(payload.encode()).hexdigest()

    def __call__(self, original: Image.Image, thought: Image.Image, instruction: str) -> Judgement:
        """The judgement; never raises (a failed one has None scores and a reason, and is not cached)."""
        try:
            key = self.key(original, thought, instruction)
        except Exception as exc:  # noqa: BLE001 - e.g. an unreadable image: report, never raise
            return Judgement(None, None, None, reason=f"cannot hash the images: {exc}", judge=self.ask.label)
        hit = self._lookup(key)
        if hit is not None:
            return hit
        try:
            sc_scores, sc_why = parse_scores(self.ask([original.convert("RGB"), thought.convert("RGB")],
                                                      SC_PROMPT.replace("{instruction}", instruction)))
            pq_scores, pq_why = parse_scores(self.ask([thought.convert("RGB")], PQ_PROMPT))
        except _Unreadable as exc:
            return Judgement(None, None, None, reason=f"unreadable judgement: {exc}", judge=self.ask.label)
        except Exception as exc:  # noqa: BLE001 - endpoint down, timeout, backend fault: never fail a prediction
            return Judgement(None, None, None, reason=f"judge failed: {type(exc).__name__}: {exc}"[:500],
                             judge=self.ask.label)
        sc, pq, overall = viescore(sc_scores, pq_scores)
        result = Judgement(sc, pq, round(overall, 4), sc_scores, pq_scores,
                           reason=f"SC: {sc_why} | PQ: {pq_why}", judge=self.ask.label)
        self._store(key, result)
        return result

    def _lookup(self, key: str) -> Judgement | None:
        with self._lock:
            if key in self._memory:
                return self._memory[key]
        if self.cache_dir is None:
            return None
        try:
            data = json.loads((self.cache_dir / f"{key}.json").read_text())
            found = Judgement(**{**data, "cached": True})
            viescore(found.sc_scores, found.pq_scores)  # a hand-edited or torn file is ignored
        except (OSError, ValueError, TypeError):
            return None
        with self._lock:
            self._memory[key] = found
        return found

    def _store(self, key: str, result: Judgement) -> None:
        with self._lock:
            self._memory[key] = Judgement(**{**result.to_dict(), "cached": True})
        if self.cache_dir is None:
            return
        tmp = None
        try:  # atomic and best effort: a full or read-only disk only loses the cache
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(result.to_dict(), f)
            os.replace(tmp, self.cache_dir / f"{key}.json")
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------- askers
class OpenAIAsker:
    """Any OpenAI-compatible chat endpoint; images go as PNG data URLs (longest side ``max_side``)."""

    def __init__(self, model: str = "gpt-4o-mini", base_url: str | None = None, api_key: str | None = None,
                 timeout_s: float = 60.0, max_side: int = 768, client=None):
        import openai

        self.model = model
        self.max_side = max_side
        self.client = client or openai.OpenAI(api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                                              base_url=base_url, timeout=timeout_s, max_retries=1)
        self.label = f"openai:{model}@{base_url or os.environ.get('OPENAI_BASE_URL') or 'api.openai.com'}"

    def __call__(self, images: Sequence[Image.Image], text: str) -> str:
        from g2u.writers.openai_writer import data_url

        content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": data_url(img, self.max_side)}}
                                         for img in images]
        content.append({"type": "text", "text": text})
        reply = self.client.chat.completions.create(model=self.model, temperature=0, max_tokens=300,
                                                    messages=[{"role": "user", "content": content}])
        return reply.choices[0].message.content or ""


class SelfAsker:
    """The served model judges its own thoughts through its understanding pathway."""

    def __init__(self, backend, max_new_tokens: int = 200):
        self.backend = backend
        self.params = answer_params(max_new_tokens=max_new_tokens)
        info = getattr(backend, "info", None)
        self.label = f"self:{getattr(info, 'backend', type(backend).__name__)}:{getattr(info, 'checkpoint', '')}"

    def __call__(self, images: Sequence[Image.Image], text: str) -> str:
        [reply] = self.backend.answer([[*images, text]], self.params)
        return reply.text


JUDGES = ("none", "openai", "self")


def make_judge(spec: str | None, backend=None, cache_dir: str | Path | None = None,
               model: str | None = None, base_url: str | None = None) -> FidelityJudge | None:
    """The judge a setting names: ``none``/empty (no judge), ``openai`` (``OPENAI_BASE_URL``,
    ``OPENAI_API_KEY``, model ``G2U_JUDGE_MODEL`` or gpt-4o-mini), ``openai:<model>``, or ``self`` (needs
    ``backend``). Raises ValueError naming the setting when it is unknown or cannot work."""
    name, _, suffix = (spec or "none").partition(":")
    if name == "none":
        return None
    if name == "openai":
        chosen = model or suffix or os.environ.get("G2U_JUDGE_MODEL") or "gpt-4o-mini"
        return FidelityJudge(OpenAIAsker(chosen, base_url or os.environ.get("OPENAI_BASE_URL")), cache_dir)
    if name == "self":
        if backend is None or not callable(getattr(backend, "answer", None)):
            raise ValueError("judge 'self' needs a backend with an answer(contents, params) method")
        return FidelityJudge(SelfAsker(backend), cache_dir)
    raise ValueError(f"judge {spec!r}: choose one of {', '.join(JUDGES)} (or openai:<model>)")


def judge_fidelity(judge: Callable[[Image.Image, Image.Image, str], Judgement] | None, original: Image.Image,
                   thought: Image.Image, instruction: str) -> dict[str, Any] | None:
    """What a prediction's ``fidelity["judged"]`` holds: the judgement as a dict, or None without a judge."""
    return None if judge is None else judge(original, thought, instruction).to_dict()


def attach_judgement(record: dict[str, Any], judge: Callable[[Image.Image, Image.Image, str], Judgement] | None,
                     original: Image.Image, root: str | Path) -> dict[str, Any]:
    """Put the judged fidelity of an evaluation record's thought (``root / record["thought_path"]``) into
    ``record["fidelity"]["judged"]`` (the edit measures stay in ``record["measures"]``). Records without a
    thought, or with an error, are left as they are; a thought that cannot be read is a failed judgement,
    never an exception."""
    if judge is None or record.get("error") or not record.get("thought_path"):
        return record
    fidelity = dict(record.get("fidelity") or {})
    try:
        thought = Image.open(Path(root) / record["thought_path"]).convert("RGB")
    except OSError as exc:
        fidelity["judged"] = Judgement(None, None, None, reason=f"cannot read the thought: {exc}").to_dict()
    else:
        fidelity["judged"] = judge(original, thought, str((record.get("edit") or {}).get("prompt") or ""))
        fidelity["judged"] = fidelity["judged"].to_dict()
    record["fidelity"] = fidelity
    return record
