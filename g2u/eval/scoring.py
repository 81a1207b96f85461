"""Scoring with the reference harnesses' rules (VLMEvalKit exact matching), written here.

Primary (what the paper's tables use, VLMEvalKit ``judge=exact_matching``):
- MCQ (``can_infer``): strip ``.()[],:;!*#{}`` to spaces and split; exactly one option letter among the
  tokens, within the last four tokens → that letter; a refusal phrase → no answer; else "(correct) answer is
  x" (any case of A–D, VLMEvalKit HEAD's rule: "the answer is b" → B); else, when the
  output is at most twice as long as all option texts together, exactly one option text contained in it.
- yes/no (``YOrN_Extraction``): VLMEvalKit's punctuation processing, then the words; "yes" without "no"
  → yes, "no" without "yes" → no, otherwise no answer ("**Yes**", "Yes/No" are no answer).
- open (MM-Vet): an LLM judge grading 0–1 with partial credit (``mmvet_judge``), or the rule fallback
  ``open_score``: ``<OR>`` any part, ``<AND>`` the fraction of parts present, numbers keep sign and decimals.
- aggregates: MMBench circular (only groups whose original row exists), MME acc + acc+ per category with
  perception / cognition sums, HallusionBench aAcc / fAcc / qAcc grouped by l2-category/set/figure and
  l2-category/set/question, MM-Vet per capability.

Secondary: ``extract_choice_lenient`` / ``extract_yesno_lenient``, this project's earlier, more forgiving
reading, logged beside the primary score to show how much the extraction rule moves a number.

Written by hand: VLMEvalKit is not an installable library with these as functions.
"""

from __future__ import annotations

import math
import os
import re
import string
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from g2u.eval.datasets import LETTERS, Sample

# ---------------------------------------------------------------- reference MCQ (VLMEvalKit can_infer)
_OPTION_SEPARATORS = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
             "I'm sorry, but without the image provided", "Cannot determine the answer")
_API_FAILURE = "Failed to obtain answer via API"
# VLMEvalKit HEAD's ``_VERBOSE_ANSWER_RE``, as it is: case-insensitive letters ("the answer is b" → B) and no
# word boundary after the letter, so "The answer is dog." reads as D there too (README: extraction).
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
_NO_ANSWER = "Z"  # the reference's "refused / no answer" sentinel


def _infer_option(text: str, letters: str) -> str | None:
    """The letter named by the output's tokens, ``_NO_ANSWER`` for a refusal, None when undecided."""
    if _API_FAILURE in text:
        return None
    if any(phrase in text for phrase in _REFUSALS):
        return _NO_ANSWER
    tokens = text.translate(_OPTION_SEPARATORS).split()
    named = [c for c in letters if c in tokens]
    if len(named) == 1:
        # only a letter among the last four tokens counts: "B is wrong because ..." names no answer
        if tokens.index(named[0]) > len(tokens) - 5:
            return named[0]
    elif not named and tokens.count(_NO_ANSWER) >= 1 and _NO_ANSWER not in letters:
        return _NO_ANSWER
    match = _ANSWER_IS.search(text)
    if match and match.group(1).upper() in letters:
        return match.group(1).upper()
    return None


def _infer_text(text: str, options: Sequence[str], letters: str) -> str | None:
    """Exactly one option's text inside a short output (substring, case-insensitive)."""
    low = text.lower()
    if len(low) > 2 * sum(len(str(o)) for o in options):
        return None
    hits = [letter for letter, opt in zip(letters, options) if str(opt).lower() in low]
    return hits[0] if len(hits) == 1 else None


def infer_choice(output: str, options: Sequence[str]) -> str | None:
    """VLMEvalKit's ``can_infer``: the option letter, ``"Z"`` when the output refuses or names no option
    (read, but no answer: no judge is asked), or None when exact matching cannot read it (a judge may)."""
    letters = LETTERS[: len(options)]
    text = str(output)
    letter = _infer_option(text, letters)
    if letter is None:
        letter = _infer_text(text, options, letters)
    return letter


def extract_choice(output: str, options: Sequence[str]) -> str | None:
    """The option letter ``output`` chooses by VLMEvalKit's exact-matching rules, or None (no answer)."""
    letter = infer_choice(output, options)
    return None if letter in (None, _NO_ANSWER) else letter


# ---------------------------------------------------------------- reference yes/no (YOrN_Extraction)
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?",
          "!"]
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_LONE_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
_PERIODS_REMOVED = 32  # the reference passes re.UNICODE (32) as ``count``: at most 32 periods go


def process_punctuation(text: str) -> str:
    """VLMEvalKit's VQA punctuation rule: a mark touching a space (or any text with a digit,digit) is
    deleted, otherwise replaced by a space; periods not next to a digit are deleted."""
    out = text
    numeric = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCT:
        out = out.replace(p, "" if (f"{p} " in text or f" {p}" in text or numeric) else " ")
    return _LONE_PERIOD.sub("", out, count=_PERIODS_REMOVED)


def extract_yesno(output: str) -> str | None:
    """"yes" / "no" by VLMEvalKit's ``YOrN_Extraction``; None when neither or both words occur."""
    words = process_punctuation(str(output).lower()).split()
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes != has_no:
        return "yes" if has_yes else "no"
    return None


# ---------------------------------------------------------------- lenient reading (secondary metric)
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


def extract_choice_lenient(prediction: str, options: Sequence[str]) -> str | None:
    """The earlier, forgiving reading: a keyword letter, a leading letter (lowercase too), a lone capital
    letter or one option's words. Answers where the reference says "no answer" ("B or C" → B)."""
    letters = LETTERS[: len(options)]
    text = str(prediction).strip()
    if not text:
        return None
    keyword = {m.group(1).upper() for m in _KEYWORD_LETTER.finditer(text)} & set(letters)
    if len(keyword) == 1:
        return keyword.pop()
    lead = _LEADING_LETTER.match(text)
    if lead and lead.group(1).upper() in letters and not _is_article(text, lead):
        if lead.group(1).isupper() or len(text.rstrip(".):")) <= 2:
            return lead.group(1).upper()
    tokens = [m for m in re.finditer(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", text)]
    standalone = {m.group(1) for m in tokens if m.group(1) in letters and not _is_article(text, m)}
    words = _norm_words(text)
    by_text = {letters[i] for i, opt in enumerate(options) if _contains(words, _norm_words(opt))}
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
    return bool(re.match(r"\s+[a-z]", text[match.end(1):]))


def extract_yesno_lenient(prediction: str) -> str | None:
    """The earlier reading: with both words, the first word decides; markdown and slashes are ignored."""
    words = _norm_words(prediction)
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes != has_no:
        return "yes" if has_yes else "no"
    if has_yes and words[0] in ("yes", "no"):
        return words[0]
    return None


# ---------------------------------------------------------------- open answers (MM-Vet rule fallback)
# Numbers stay whole with their sign and decimals: "-1" is not "1", "3.5" is not "3" and "5".
_TOKEN = re.compile(r"[-+]?\d+(?:[.,]\d+)*|[^\W_]+")


def _open_tokens(text: str) -> list[str]:
    out = []
    for tok in _TOKEN.findall(str(text).lower()):
        if tok[0] in "+-" or tok[0].isdigit():
            out.append(tok.lstrip("+").replace(",", ""))
        elif tok not in _ARTICLES:
            out.append(_NUMBER_WORDS.get(tok, tok))
    return out


def open_score(prediction: str, answer: str) -> float:
    """Rule score in [0, 1]: ``a<OR>b`` 1 when any part is present, ``a<AND>b`` the fraction of parts
    present (the judge's partial credit), otherwise 1 when the gold phrase appears as whole tokens."""
    words = _open_tokens(prediction)
    if "<AND>" in answer:
        parts = [p for p in answer.split("<AND>") if p.strip()]
        return sum(_contains(words, _open_tokens(p)) for p in parts) / len(parts) if parts else 0.0
    if "<OR>" in answer:
        return float(any(_contains(words, _open_tokens(p)) for p in answer.split("<OR>")))
    return float(_contains(words, _open_tokens(answer)))


def match_open(prediction: str, answer: str) -> bool:
    """Full credit by the rule fallback (``open_score`` == 1)."""
    return open_score(prediction, answer) == 1.0


# ---------------------------------------------------------------- one sample, one record
def score_sample(sample: Sample, prediction: str) -> bool:
    """Reference rules: right or wrong (open answers: full rule credit)."""
    return score_answer(sample.answer_kind, sample.answer, sample.options, prediction) == 1.0


def score_answer(kind: str, answer: str, options: Sequence[str] | None, prediction: str,
                 lenient: bool = False) -> float:
    """Score in [0, 1] of ``prediction`` against the gold ``answer`` (a letter for MCQ, yes/no, or open)."""
    if kind == "mcq":
        pick = (extract_choice_lenient if lenient else extract_choice)(prediction, options or [])
        return float(pick == answer)
    if kind == "yesno":
        said = (extract_yesno_lenient if lenient else extract_yesno)(prediction)
        return float(said == str(answer).strip().lower())
    return open_score(prediction, answer)


JUDGED = ("judge", "judge_fallback")
"""Record ``extraction`` values whose label came from an answer judge (its reply, or the fallback rule)."""


def score_record(record: dict, lenient: bool = False) -> float | None:
    """A prediction record's score, re-read from its own fields (so old files are rescored with today's
    rules): None for a failed or refused prediction (an error, not a wrong answer); an MCQ / yes-no answer an
    answer judge read: its label (``record["extracted"]``); an open answer's judge grade when the judge gave
    one (``record["judge"]``: bool or 0–1), else the rule score."""
    if record.get("error"):
        return None
    kind = record.get("answer_kind") or "open"
    if kind in ("mcq", "yesno") and not lenient and record.get("extraction") in JUDGED:
        # read by an answer judge (g2u.eval.answer_judge): its label, not the rules, decides
        gold = str(record.get("answer", ""))
        return float(record.get("extracted") == (gold if kind == "mcq" else gold.strip().lower()))
    if kind == "open" and not lenient and isinstance(record.get("judge"), (bool, int, float)):
        return float(record["judge"])
    return score_answer(kind, str(record.get("answer", "")), record.get("options"),
                        str(record.get("prediction", "")), lenient=lenient)


# ---------------------------------------------------------------- aggregates over scored records
# Each record here has a numeric ``score`` (records with errors are left out by the caller).
def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _all_right_by(records: Sequence[dict], key: Callable[[dict], Any]) -> float:
    groups: dict[Any, bool] = {}
    for r in records:
        g = key(r)
        groups[g] = groups.get(g, True) and r["score"] == 1.0
    return _mean([float(v) for v in groups.values()])


def _l2(record: dict) -> str | None:
    return record.get("l2_category") or record.get("l2-category")


def circular_scores(records: Sequence[dict]) -> dict[str, float]:
    """MMBench CircularEval as the reference scores it: one question per original row (``id == group``);
    it is right only when it and all its shifted copies are right. Groups without their original row
    are not scored. Keys: ``overall``, ``category/<c>``, ``l2/<l2>`` (category of the original row)."""
    members: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        members[str(r.get("group") or r["id"])].append(r)
    hits: list[tuple[dict, float]] = []
    for r in records:
        if str(r["id"]) == str(r.get("group") or r["id"]):
            hits.append((r, float(all(m["score"] == 1.0 for m in members[str(r["id"])]))))
    out = {"overall": _mean([h for _, h in hits])}
    for name, key in (("category", lambda r: r.get("category")), ("l2", _l2)):
        split: dict[str, list[float]] = defaultdict(list)
        for r, h in hits:
            if key(r):
                split[str(key(r))].append(h)
        out.update({f"{name}/{k}": _mean(v) for k, v in sorted(split.items())})
    return out


def circular_accuracy(records: Sequence[dict]) -> float:
    """Overall MMBench circular accuracy (see ``circular_scores``)."""
    return circular_scores(records)["overall"]


MME_PERCEPTION = ("OCR", "artwork", "celebrity", "color", "count", "existence", "landmark", "position",
                  "posters", "scene")
MME_COGNITION = ("code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation")


def mme_scores(records: Sequence[dict]) -> dict[str, Any]:
    """MME: per category score = 100·acc + 100·acc+ (acc+: every question on one image right), and the
    reference's two sums: ``perception`` (10 categories) and ``cognition`` (4), over the categories
    present (``missing`` lists the absent ones, so a partial sum is never mistaken for a full one)."""
    cats: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        cats[str(r.get("category") or "all")].append(r)
    per = {}
    for cat, rows in sorted(cats.items()):
        acc = _mean([r["score"] for r in rows])
        acc_plus = _all_right_by(rows, lambda r: r.get("group") or r["id"])
        per[cat] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * acc + 100 * acc_plus}
    sums = {name: sum(per[c]["score"] for c in cats_ if c in per)
            for name, cats_ in (("perception", MME_PERCEPTION), ("cognition", MME_COGNITION))}
    missing = [c for c in MME_PERCEPTION + MME_COGNITION if c not in per]
    return {"categories": per, **sums, "missing": missing}


def _hallusion_l2(record: dict) -> str | None:
    return _l2(record) or (str(record["figure_group"]).split("/")[0] if record.get("figure_group") else None)


def _hallusion_split(records: Sequence[dict]) -> dict[str, float]:
    return {"aAcc": _mean([r["score"] for r in records]),
            "fAcc": _all_right_by(records, lambda r: r.get("figure_group") or r["id"]),
            "qAcc": _all_right_by(records, lambda r: r.get("question_group") or r["id"])}


def hallusionbench_scores(records: Sequence[dict]) -> dict[str, dict[str, float]]:
    """HallusionBench: aAcc per question; fAcc all questions of one figure right, qAcc one question right
    on all its figures, groups keyed l2-category/set/figure and l2-category/set/question (the records'
    ``figure_group`` / ``question_group``). Keys: ``overall``, ``category/<c>``, ``l2/<l2>``."""
    out = {"overall": _hallusion_split(records)}
    for name, key in (("category", lambda r: r.get("category")), ("l2", _hallusion_l2)):
        split: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            if key(r):
                split[str(key(r))].append(r)
        out.update({f"{name}/{k}": _hallusion_split(v) for k, v in sorted(split.items())})
    return out


MMVET_CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")


def mmvet_scores(records: Sequence[dict]) -> dict[str, float]:
    """MM-Vet: mean 0–1 score overall and per capability (a sample counts in each of its capabilities,
    read from its comma-separated category) and per capability combination (``combo/rec_ocr``)."""
    out = {"overall": _mean([r["score"] for r in records])}
    caps: dict[str, list[float]] = defaultdict(list)
    combos: dict[str, list[float]] = defaultdict(list)
    for r in records:
        listed = [c.strip() for c in str(r.get("category") or "").split(",") if c.strip()]
        for c in listed:
            caps[c].append(r["score"])
        combos["_".join(listed) or "none"].append(r["score"])
    out.update({f"capability/{k}": _mean(v) for k, v in sorted(caps.items())})
    out.update({f"combo/{k}": _mean(v) for k, v in sorted(combos.items())})
    return out


# ---------------------------------------------------------------- LLM judges (any OpenAI-compatible endpoint)
JUDGE_PROMPT = (
    "Compare the model's answer with the ground truth for the question. The ground truth may list "
    "alternatives with <OR> or required parts with <AND>. Reply with one word: correct or incorrect.\n\n"
    "Question: {question}\nGround truth: {answer}\nModel answer: {prediction}\n"
)


def _client(client, timeout_s: float):
    if client is not None:
        return client
    if not os.environ.get("OPENAI_API_KEY"):
        return None
    import openai

    return openai.OpenAI(timeout=timeout_s, max_retries=1)


def llm_judge(question: str, answer: str, prediction: str, client=None, model: str | None = None,
              timeout_s: float = 20.0) -> bool | None:
    """Ask an OpenAI-compatible model (``OPENAI_BASE_URL``/``OPENAI_API_KEY``) whether an open answer is
    right. None when no key is set or the call fails: the caller keeps the rule score."""
    try:
        client = _client(client, timeout_s)
        if client is None:
            return None
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


MMVET_PROMPT = """You grade answers of a vision-language model against a reference answer.
Give a correctness score from 0.0 (wrong) to 1.0 (fully right) in steps of 0.1. In the reference, "<AND>"
joins parts that must all be present (credit in proportion to the parts given) and "<OR>" joins
alternatives of which any one suffices. Signs, units and decimals matter. Reply with the number only.

Question | Reference | Answer | Score
--- | --- | --- | ---
How many apples are on the plate? | 3 | There are three apples. | 1.0
What are the two numbers shown? | 12 <AND> -4 | 12 and 4 | 0.5
Which fruit is shown? | pear <OR> nashi | It is a nashi. | 1.0
What is the temperature on the sign? | -2.5 | 2.5 degrees | 0.0
Describe the weather. | Sunny with a few clouds and a light breeze. | It is sunny. | 0.6
"""


def mmvet_judge(question: str, answer: str, prediction: str, client=None, model: str | None = None,
                timeout_s: float = 30.0, attempts: int = 5) -> float | None:
    """MM-Vet's GPT-4-style grade in [0, 1] with partial credit, from any OpenAI-compatible endpoint. As the
    reference, a reply that is not a number in [0, 1] is asked again (temperature 0, 0.5, 1.0, ...).
    None when there is no key, every call fails or no reply parses: the rule score stands."""
    try:
        client = _client(client, timeout_s)
    except Exception:  # noqa: BLE001
        return None
    if client is None:
        return None
    gold = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    content = MMVET_PROMPT + " | ".join([question, gold, str(prediction).replace("\n", " "), ""])
    for attempt in range(attempts):
        try:
            reply = client.chat.completions.create(
                model=model or os.environ.get("G2U_JUDGE_MODEL", "gpt-4o-mini"), temperature=0.5 * attempt,
                max_tokens=5, messages=[{"role": "user", "content": content}])
            text = (reply.choices[0].message.content or "").strip()
            value = float(text)
        except ValueError:
            continue
        except Exception:  # noqa: BLE001 - a judge failure must never stop an evaluation
            return None
        if 0.0 <= value <= 1.0 and not math.isnan(value):
            return value
    return None
