"""Scoring rules on hand-checked tables of tricky model outputs. Primary: VLMEvalKit's exact-matching
semantics (each expected value worked out by hand from the reference rules: tokens after stripping
``.()[],:;!*#{}``, a lone option letter among the last four tokens, "answer is x" in any case, then a short output
holding exactly one option's text; yes/no after VLMEvalKit's punctuation processing). Secondary: the
lenient reading, which answers where the reference says "no answer"."""

from __future__ import annotations

import pytest

from g2u.eval.datasets import Sample
from g2u.eval.scoring import (
    circular_accuracy,
    circular_scores,
    extract_choice,
    extract_choice_lenient,
    extract_yesno,
    extract_yesno_lenient,
    hallusionbench_scores,
    llm_judge,
    match_open,
    mme_scores,
    mmvet_judge,
    mmvet_scores,
    open_score,
    process_punctuation,
    score_record,
    score_sample,
)

OPTIONS = ["cat", "dog", "bird"]           # total option text: 10 characters → outputs ≤ 20 chars may match by text
FOUR = ["cat", "dog", "bird", "fish"]      # 14 characters → ≤ 28

# (output, options, reference, lenient)
MCQ = [
    ("B", OPTIONS, "B", "B"),
    ("(B)", OPTIONS, "B", "B"),
    ("B.", OPTIONS, "B", "B"),
    ("B)", OPTIONS, "B", "B"),
    ("**B**", OPTIONS, "B", "B"),                                   # markdown stripped as separators
    ("[C]", OPTIONS, "C", "C"),
    ("Answer: B", OPTIONS, "B", "B"),
    ("The answer is (B) dog", OPTIONS, "B", "B"),                  # B is token 4 of 5: among the last four
    ("After looking closely, the answer is B", OPTIONS, "B", "B"),
    ("A", OPTIONS, "A", "A"),
    ("A. cat", OPTIONS, "A", "A"),
    ("(C) bird", OPTIONS, "C", "C"),
    ("dog", OPTIONS, "B", "B"),                                     # text match: short output, one option
    ("Dog!", OPTIONS, "B", "B"),
    ("It is a dog.", OPTIONS, "B", "B"),
    ("b", OPTIONS, None, "B"),                                      # lowercase letters are not option tokens
    ("b.", OPTIONS, None, "B"),
    ("I think it is B or C", OPTIONS, None, None),                  # two letters
    ("B or C", OPTIONS, None, "B"),
    ("N/A", OPTIONS, None, "A"),
    ("A dog runs in the park", OPTIONS, None, "B"),                 # A is token 1 of 6; 22 chars > 20
    ("B. The cat is sitting on the mat next to the window", OPTIONS, None, "B"),  # letter only at the start
    ("The correct answer is **C**. Here's why: a bird has feathers and wings", OPTIONS, "C", "C"),
    ("The answer is dog", FOUR, "D", "B"),                          # HEAD's rule: no boundary after the letter
    ("the answer is b", OPTIONS, "B", "B"),                         # HEAD's rule is case-insensitive
    ("My answer is c.", OPTIONS, "C", "C"),
    ("The answer is a cat", FOUR, "A", "A"),                        # by the option text, not by "a"
    ("The answer is D", OPTIONS, None, None),                       # D is not an option here
    ("The answer is (D)", OPTIONS, None, None),
    ("I choose B, definitely not A", OPTIONS, None, None),
    ("cat and dog", OPTIONS, None, None),
    ("Cannot determine the answer", OPTIONS, None, None),            # a refusal
    ("Z", OPTIONS, None, None),
    ("Failed to obtain answer via API", OPTIONS, None, None),
    ("", OPTIONS, None, None),
    ("no idea", OPTIONS, None, None),
    ("1", ["5", "3", "1", "2"], "C", "C"),
    ("The missing number is 1", ["5", "3", "1", "2"], None, "C"),   # 23 chars > 2 × 4: too long for text
    ("10", ["1", "10"], None, "B"),                                 # substring: "1" is inside "10" too
    ("dark red", ["red", "dark red"], None, "B"),
    ("red", ["red", "dark red"], "A", "A"),
    ("D", FOUR, "D", "D"),
    ("C is the bird", FOUR, "C", "C"),                              # token 1 of 4: among the last four
    ("C is the bird that sits on a branch", FOUR, None, "C"),       # token 1 of 8, 35 chars > 28
]


@pytest.mark.parametrize("output, options, reference, lenient", MCQ)
def test_extract_choice_reference_and_lenient(output, options, reference, lenient):
    assert extract_choice(output, options) == reference
    assert extract_choice_lenient(output, options) == lenient


# (output, reference, lenient)
YESNO = [
    ("Yes", "yes", "yes"), ("yes.", "yes", "yes"), ("No.", "no", "no"), ("NO", "no", "no"),
    ("Yes!", "yes", "yes"), ("Yes?", "yes", "yes"),
    ("Yes, there is a dog.", "yes", "yes"), ("The answer is yes", "yes", "yes"),
    ("There is no cat", "no", "no"), ("Yes (the cat)", "yes", "yes"), ('"Yes"', "yes", "yes"),
    ("no-one is there", "no", "no"),                  # "-" between letters becomes a space
    ("**Yes**", None, "yes"),                          # "*" is not reference punctuation
    ("Yes/No", None, "yes"),
    ("yes,no", None, "yes"),
    ("No, yes", None, "no"),
    ("Yes: there is one", None, "yes"),                # ":" is not reference punctuation: "yes:"
    ("'Yes'", None, "yes"),                            # nor the apostrophe
    ("I cannot say yes or no", None, None),
    ("Nope", None, None), ("maybe", None, None), ("", None, None),
]


@pytest.mark.parametrize("output, reference, lenient", YESNO)
def test_extract_yesno_reference_and_lenient(output, reference, lenient):
    assert extract_yesno(output) == reference
    assert extract_yesno_lenient(output) == lenient


@pytest.mark.parametrize("text, expected", [
    ("yes, no", "yes no"),        # a mark touching a space is deleted
    ("yes/no", "yes no"),         # else replaced by a space
    ("1,000 cats.", "1000 cats"),  # digit,digit anywhere: marks are deleted; a lone period goes
    ("3.5", "3.5"),               # a period between digits stays
])
def test_process_punctuation(text, expected):
    assert process_punctuation(text) == expected


@pytest.mark.parametrize("prediction, answer, expected", [
    ("x = -1", "-1<AND>-5", 0.5),
    ("x = -1 or x = -5", "-1<AND>-5", 1.0),
    ("x = 3", "-1<AND>-5", 0.0),
    ("x = 1", "-1", 0.0),                 # the sign is kept
    ("3.5 meters", "3.5", 1.0),
    ("3 meters", "3.5", 0.0),             # decimals are kept
    ("35", "3.5", 0.0),
    ("1,000 people", "1000", 1.0),
    ("There are two cats.", "2", 1.0),
    ("It is blue", "red<OR>blue", 1.0),
    ("It is green", "red<OR>blue", 0.0),
    ("circles everywhere", "circle", 0.0),  # whole words only
    ("The Eiffel Tower.", "eiffel tower", 1.0),
    ("red and blue", "red<AND>blue<AND>green", 2 / 3),
])
def test_open_score_keeps_signs_and_decimals(prediction, answer, expected):
    assert open_score(prediction, answer) == pytest.approx(expected)
    assert match_open(prediction, answer) is (expected == 1.0)


def _sample(kind: str, answer: str, options=None) -> Sample:
    return Sample(id="s", question="q", options=options, answer=answer, category="c", answer_kind=kind)


def test_score_sample_uses_the_reference_rules():
    assert score_sample(_sample("mcq", "B", OPTIONS), "The answer is B")
    assert not score_sample(_sample("mcq", "B", OPTIONS), "B or C")
    assert score_sample(_sample("yesno", "no"), "No, there is none.")
    assert not score_sample(_sample("yesno", "yes"), "**Yes**")
    assert score_sample(_sample("open", "blue<OR>navy"), "navy blue")


def test_score_record_errors_judge_and_lenient():
    rec = {"answer_kind": "mcq", "answer": "B", "options": OPTIONS, "prediction": "B or C"}
    assert score_record(rec) == 0.0 and score_record(rec, lenient=True) == 1.0
    assert score_record(dict(rec, error={"field": "prompt", "reason": "leaks"})) is None
    open_rec = {"answer_kind": "open", "answer": "-1<AND>-5", "prediction": "x = -1"}
    assert score_record(open_rec) == 0.5
    assert score_record(dict(open_rec, judge=0.7)) == 0.7     # the judge's grade wins
    assert score_record(dict(open_rec, judge=None)) == 0.5    # no grade: the rule stands


def _r(sid, score, **kw):
    return {"id": sid, "score": score, **kw}


def test_circular_scores_only_groups_with_their_original_row():
    records = [_r("1", 1.0, group="1", category="ocr", l2_category="perception"),
               _r("1000001", 1.0, group="1"),
               _r("2", 1.0, group="2", category="ocr", l2_category="perception"),
               _r("1000002", 0.0, group="2"),
               _r("3", 1.0, group="3", category="logic", l2_category="reasoning"),
               _r("1000004", 1.0, group="4")]  # question 4's original row is missing: not scored
    scores = circular_scores(records)
    assert scores["overall"] == pytest.approx(2 / 3)
    assert scores["category/ocr"] == 0.5 and scores["category/logic"] == 1.0
    assert scores["l2/perception"] == 0.5 and scores["l2/reasoning"] == 1.0
    assert circular_accuracy(records) == pytest.approx(2 / 3)


def test_mme_sums_perception_and_cognition():
    records = [_r("1", 1.0, group="i1", category="color"), _r("2", 1.0, group="i1", category="color"),
               _r("3", 1.0, group="i2", category="color"), _r("4", 0.0, group="i2", category="color"),
               _r("5", 1.0, group="i3", category="OCR"), _r("6", 0.0, group="i3", category="OCR"),
               _r("7", 1.0, group="i4", category="code_reasoning"),
               _r("8", 1.0, group="i4", category="code_reasoning")]
    mme = mme_scores(records)
    assert mme["categories"]["color"] == {"acc": 0.75, "acc_plus": 0.5, "score": 125.0}
    assert mme["categories"]["OCR"]["score"] == 50.0     # acc 0.5, acc+ 0
    assert mme["perception"] == 175.0 and mme["cognition"] == 200.0
    assert "scene" in mme["missing"] and "color" not in mme["missing"]


def test_hallusionbench_groups_by_l2_set_figure_and_question():
    # set 0 restarts in both l2-categories: chart/0/0 and table/0/0 are different figures
    rows = [_r("a", 1.0, category="VD", figure_group="chart/0/0", question_group="chart/0/0"),
            _r("b", 1.0, category="VD", figure_group="chart/0/0", question_group="chart/0/1"),
            _r("c", 0.0, category="VD", figure_group="table/0/0", question_group="table/0/0"),
            _r("d", 1.0, category="VS", figure_group="table/0/1", question_group="table/0/0")]
    scores = hallusionbench_scores(rows)
    assert scores["overall"] == {"aAcc": 0.75, "fAcc": pytest.approx(2 / 3), "qAcc": pytest.approx(2 / 3)}
    assert scores["l2/chart"] == {"aAcc": 1.0, "fAcc": 1.0, "qAcc": 1.0}
    assert scores["l2/table"] == {"aAcc": 0.5, "fAcc": 0.5, "qAcc": 0.0}
    assert scores["category/VD"]["fAcc"] == 0.5 and scores["category/VS"]["aAcc"] == 1.0


def test_mmvet_per_capability_with_partial_credit():
    rows = [_r("1", 1.0, category="ocr,rec"), _r("2", 0.5, category="math,ocr"), _r("3", 0.0, category="rec")]
    scores = mmvet_scores(rows)
    assert scores["overall"] == 0.5
    assert scores["capability/ocr"] == 0.75 and scores["capability/rec"] == 0.5
    assert scores["capability/math"] == 0.5 and scores["combo/ocr_rec"] == 1.0


class _FakeClient:
    def __init__(self, *replies):
        self.replies = list(replies)
        self.calls: list[dict] = []
        self.chat = self
        self.completions = self

    def create(self, **kwargs):
        self.calls.append(kwargs)
        reply = self.replies[min(len(self.calls), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        message = type("M", (), {"content": reply})
        return type("R", (), {"choices": [type("C", (), {"message": message})]})


def test_llm_judge_reads_the_verdict_and_never_raises(monkeypatch):
    assert llm_judge("q", "blue", "navy", client=_FakeClient("Correct")) is True
    assert llm_judge("q", "blue", "red", client=_FakeClient("incorrect.")) is False
    assert llm_judge("q", "blue", "red", client=_FakeClient("hmm")) is None
    assert llm_judge("q", "blue", "red", client=_FakeClient(TimeoutError("slow"))) is None
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert llm_judge("q", "blue", "red") is None  # no key: no call, the caller keeps the match score


def test_mmvet_judge_retries_unparseable_grades_then_gives_up(monkeypatch):
    client = _FakeClient("about half", "1.7", "0.5")
    assert mmvet_judge("What is x?", "-1<AND>-5", "x = -1", client=client) == 0.5
    assert [c["temperature"] for c in client.calls] == [0.0, 0.5, 1.0]   # as the reference: hotter retries
    assert "-1 <AND> -5" in client.calls[0]["messages"][0]["content"]
    assert mmvet_judge("q", "a", "b", client=_FakeClient("n/a")) is None
    assert mmvet_judge("q", "a", "b", client=_FakeClient(ConnectionError("down"))) is None
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert mmvet_judge("q", "a", "b") is None
