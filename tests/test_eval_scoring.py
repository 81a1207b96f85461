"""Scoring rules on hand-checked cases, including the edge cases of the reference harnesses."""

from __future__ import annotations

import pytest

from g2u.eval.datasets import Sample
from g2u.eval.scoring import (
    circular_accuracy,
    extract_choice,
    extract_yesno,
    hallusionbench_scores,
    llm_judge,
    match_open,
    mme_scores,
    score_sample,
)

OPTIONS = ["cat", "dog", "bird"]


@pytest.mark.parametrize("prediction, expected", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B)", "B"), ("B: dog", "B"), ("Answer: B", "B"),
    ("The answer is (B) dog", "B"), ("The correct option is C.", "C"), ("Option A", "A"),
    ("b", "B"), ("b.", "B"),
    ("dog", "B"), ("Dog!", "B"), ("It is a dog.", "B"),
    ("A dog runs in the park", "B"),  # "A" is the article here, the option is named by its text
    ("A", "A"), ("A. cat", "A"),
    ("I think it is B or C", None), ("cat and dog", None), ("", None), ("no idea", None),
    ("The answer is (D)", None),  # not a valid letter for three options
])
def test_extract_choice(prediction, expected):
    assert extract_choice(prediction, OPTIONS) == expected


def test_extract_choice_with_value_options_and_nested_texts():
    assert extract_choice("The missing number is 1", ["5", "3", "1", "2"]) == "C"
    assert extract_choice("10", ["1", "10"]) == "B"  # whole words: "1" is not inside "10"
    assert extract_choice("dark red", ["red", "dark red"]) == "B"  # the longer option wins
    assert extract_choice("red", ["red", "dark red"]) == "A"


@pytest.mark.parametrize("prediction, expected", [
    ("Yes", "yes"), ("yes, there is one.", "yes"), ("No.", "no"), ("NO", "no"), ("No, yes", "no"),
    ("maybe", None), ("I cannot tell", None), ("Nope", None),
])
def test_extract_yesno(prediction, expected):
    assert extract_yesno(prediction) == expected


@pytest.mark.parametrize("prediction, answer, expected", [
    ("There are two cats.", "2", True),
    ("It is a circle", "circle", True),
    ("circles everywhere", "circle", False),  # whole words only
    ("red and blue", "red<AND>blue", True),
    ("only red", "red<AND>blue", False),
    ("It is blue", "red<OR>blue", True),
    ("It is green", "red<OR>blue", False),
    ("The Eiffel Tower.", "eiffel tower", True),
])
def test_match_open(prediction, answer, expected):
    assert match_open(prediction, answer) is expected


def _sample(kind: str, answer: str, options=None) -> Sample:
    return Sample(id="s", question="q", options=options, answer=answer, category="c", answer_kind=kind)


def test_score_sample_dispatches_by_kind():
    assert score_sample(_sample("mcq", "B", OPTIONS), "The answer is B")
    assert not score_sample(_sample("mcq", "B", OPTIONS), "A. cat")
    assert score_sample(_sample("yesno", "no"), "No, there is none.")
    assert not score_sample(_sample("yesno", "no"), "Yes")
    assert score_sample(_sample("open", "blue<OR>navy"), "navy blue")


def test_circular_accuracy_needs_every_copy_right():
    records = [{"id": "1", "group": "1", "correct": True}, {"id": "1000001", "group": "1", "correct": True},
               {"id": "2", "group": "2", "correct": True}, {"id": "1000002", "group": "2", "correct": False}]
    assert circular_accuracy(records) == 0.5


def test_mme_acc_plus_and_score():
    records = [{"id": "1", "group": "img1", "category": "color", "correct": True},
               {"id": "2", "group": "img1", "category": "color", "correct": True},
               {"id": "3", "group": "img2", "category": "color", "correct": True},
               {"id": "4", "group": "img2", "category": "color", "correct": False}]
    scores = mme_scores(records)
    assert scores["color"]["acc"] == 0.75 and scores["color"]["acc_plus"] == 0.5
    assert scores["color"]["score"] == pytest.approx(125.0) and scores["total"]["score"] == pytest.approx(125.0)


def test_hallusionbench_figure_and_question_accuracy():
    records = [{"id": "1", "figure_group": "f1", "question_group": "q1", "correct": True},
               {"id": "2", "figure_group": "f1", "question_group": "q2", "correct": False},
               {"id": "3", "figure_group": "f2", "question_group": "q1", "correct": True},
               {"id": "4", "figure_group": "f2", "question_group": "q2", "correct": True}]
    scores = hallusionbench_scores(records)
    assert scores == {"aAcc": 0.75, "fAcc": 0.5, "qAcc": 0.5}


class _FakeClient:
    def __init__(self, reply: str | Exception):
        self.reply = reply
        self.chat = self
        self.completions = self

    def create(self, **kwargs):
        if isinstance(self.reply, Exception):
            raise self.reply
        message = type("M", (), {"content": self.reply})
        return type("R", (), {"choices": [type("C", (), {"message": message})]})


def test_llm_judge_reads_the_verdict_and_never_raises(monkeypatch):
    assert llm_judge("q", "blue", "navy", client=_FakeClient("Correct")) is True
    assert llm_judge("q", "blue", "red", client=_FakeClient("incorrect.")) is False
    assert llm_judge("q", "blue", "red", client=_FakeClient("hmm")) is None
    assert llm_judge("q", "blue", "red", client=_FakeClient(TimeoutError("slow"))) is None
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert llm_judge("q", "blue", "red") is None  # no key: no call, the caller keeps the match score
