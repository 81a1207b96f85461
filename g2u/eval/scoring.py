"""Scoring as the reference harnesses do it (VLMEvalKit, lmms-eval, MME, HallusionBench, MM-Vet).

- MCQ: the chosen letter is read from "B", "(B)", "B.", "Answer: B", "the answer is (B) cat", or an
  option's text; several candidates → no answer (VLMEvalKit counts that wrong rather than guessing).
- yes/no: a standalone "yes" or "no"; with both, the first word decides, else no answer.
- open: normalised match (case, punctuation, articles, number words), MM-Vet ``<AND>``/``<OR>``; an
  optional LLM judge through any OpenAI-compatible endpoint.
- aggregates: MMBench circular accuracy, MME acc / acc+ / score, HallusionBench aAcc / fAcc / qAcc.

Written here rather than imported: the reference harnesses are not installable libraries with these as
functions, and their rules are short.
"""

from __future__ import annotations

import os
import re
import string
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from g2u.eval.datasets import LETTERS, Sample

# "answer: B", "answer is (B)", "option B", "choice (c)": a keyword, then the letter.
_KEYWORD_LETTER = re.compile(r"(?:answer|option|choice)\s*(?:is|:|-)?\s*[:\s]*\(?([A-Za-z])\)?(?![A-Za-z])",
                             re.IGNORECASE)
# "B", "(B)", "B.", "B)", "B:" at the very start, followed by the end or a space.
_LEADING_LETTER = re.compile(r"^\s*\(?([A-Za-z])\s*[).:]?(?:\s|$)")
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_ARTICLES = {"a", "an", "the"}


def _norm_words(text: str) -> list[str]:
    table = str.maketrans({c: " " for c in string.punctuation})
    words = str(text).lower().translate(table).split()
    return [_NUMBER_WORDS.get(w, w) for w in words if w not in _ARTICLES]


def _contains(haystack: list[str], needle: list[str]) -> bool:
    if not needle:
        return False
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def extract_choice(prediction: str, options: Sequence[str]) -> str | None:
    """The letter the prediction chooses among ``options`` (A, B, ...), or None when it names none or
    several. A capital "A" followed by a lowercase word is read as the article, not option A."""
    letters = LETTERS[: len(options)]
    text = str(prediction).strip()
    if not text:
        return None
    keyword = {m.group(1).upper() for m in _KEYWORD_LETTER.finditer(text)} & set(letters)
    if len(keyword) == 1:
        return keyword.pop()
    lead = _LEADING_LETTER.match(text)
    if lead and lead.group(1).upper() in letters and not _is_article(text, lead):
        # a lowercase lead letter counts only when it is all there is ("b", "b.")
        if lead.group(1).isupper() or len(text.rstrip(".):")) <= 2:
            return lead.group(1).upper()
    tokens = [m for m in re.finditer(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", text)]
    standalone = {m.group(1) for m in tokens if m.group(1) in letters and not _is_article(text, m)}
    words = _norm_words(text)
    by_text = {letters[i] for i, opt in enumerate(options) if _contains(words, _norm_words(opt))}
    # Options whose text is inside another matched option's text ("red" in "dark red") do not count.
    by_text = {x for x in by_text if not any(
        x != y and _contains(_norm_words(options[letters.index(y)]), _norm_words(options[letters.index(x)]))
        for y in by_text)}
    if len(standalone) == 1 and (not by_text or by_text == standalone):
        return standalone.pop()
    if not standalone and len(by_text) == 1:
        return by_text.pop()
    return None


def _is_article(text: str, match: re.Match) -> bool:
    """'A' (or 'a') followed by a lowercase word: "A cat sits", "a dog"."""
    if match.group(1).upper() != "A":
        return False
    rest = text[match.end(1):]
    return bool(re.match(r"\s+[a-z]", rest))


def extract_yesno(prediction: str) -> str | None:
    words = _norm_words(prediction)
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes != has_no:
        return "yes" if has_yes else "no"
    if has_yes and words[0] in ("yes", "no"):
        return words[0]
    return None


def match_open(prediction: str, answer: str) -> bool:
    """Normalised match with MM-Vet semantics: ``a<AND>b`` needs both, ``a<OR>b`` either; otherwise the
    gold phrase must appear in the prediction as whole words."""
    words = _norm_words(prediction)
    if "<AND>" in answer:
        return all(_contains(words, _norm_words(part)) for part in answer.split("<AND>"))
    if "<OR>" in answer:
        return any(_contains(words, _norm_words(part)) for part in answer.split("<OR>"))
    return _contains(words, _norm_words(answer))


def score_sample(sample: Sample, prediction: str) -> bool:
    if sample.answer_kind == "mcq":
        return extract_choice(prediction, sample.options or []) == sample.answer
    if sample.answer_kind == "yesno":
        return extract_yesno(prediction) == sample.answer.strip().lower()
    return match_open(prediction, sample.answer)


# ---------------------------------------------------------------- aggregates over records
def _all_correct_by(records: Sequence[dict], key) -> float:
    groups: dict[Any, bool] = {}
    for r in records:
        g = key(r)
        groups[g] = groups.get(g, True) and bool(r["correct"])
    return sum(groups.values()) / len(groups) if groups else float("nan")


def circular_accuracy(records: Sequence[dict]) -> float:
    """MMBench CircularEval: a question counts only if all its shifted copies (one ``group``) are right."""
    return _all_correct_by(records, lambda r: r.get("group") or r["id"])


def mme_scores(records: Sequence[dict]) -> dict[str, dict[str, float]]:
    """MME per category: acc (per question), acc+ (both questions of an image right), score =
    100·(acc + acc+); plus ``total`` = the sum of category scores."""
    cats: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        cats[str(r.get("category") or "all")].append(r)
    out = {}
    for cat, rows in sorted(cats.items()):
        acc = sum(bool(r["correct"]) for r in rows) / len(rows)
        acc_plus = _all_correct_by(rows, lambda r: r.get("group") or r["id"])
        out[cat] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * (acc + acc_plus)}
    out["total"] = {"score": sum(v["score"] for v in out.values())}
    return out


def hallusionbench_scores(records: Sequence[dict]) -> dict[str, float]:
    """aAcc per question; fAcc: all questions on one figure right; qAcc: one question right on all its
    figures. Groups come from the records' ``figure_group`` / ``question_group``."""
    return {"aAcc": sum(bool(r["correct"]) for r in records) / len(records) if records else float("nan"),
            "fAcc": _all_correct_by(records, lambda r: r.get("figure_group") or r["id"]),
            "qAcc": _all_correct_by(records, lambda r: r.get("question_group") or r["id"])}


# ---------------------------------------------------------------- optional LLM judge
JUDGE_PROMPT = (
    "Compare the model's answer with the ground truth for the question. The ground truth may list "
    "alternatives with <OR> or required parts with <AND>. Reply with one word: correct or incorrect.\n\n"
    "Question: {question}\nGround truth: {answer}\nModel answer: {prediction}\n"
)


def llm_judge(question: str, answer: str, prediction: str, client=None, model: str | None = None,
              timeout_s: float = 20.0) -> bool | None:
    """Ask an OpenAI-compatible model (``OPENAI_BASE_URL``/``OPENAI_API_KEY``) whether an open answer is
    right. None when no key is set or the call fails: the caller keeps the normalised-match score."""
    try:
        if client is None:
            if not os.environ.get("OPENAI_API_KEY"):
                return None
            import openai

            client = openai.OpenAI(timeout=timeout_s, max_retries=1)
        reply = client.chat.completions.create(
            model=model or os.environ.get("G2U_JUDGE_MODEL", "gpt-4o-mini"), temperature=0, max_tokens=3,
            messages=[{"role": "user", "content": JUDGE_PROMPT.format(question=question, answer=answer,
                                                                       prediction=prediction)}])
        verdict = (reply.choices[0].message.content or "").strip().lower()
    except Exception:  # noqa: BLE001 - a judge failure must never stop an evaluation
        return None
    if verdict.startswith("correct"):
        return True
    if verdict.startswith("incorrect"):
        return False
    return None
