"""Differential test: our exact-matching extraction against labels VLMEvalKit's own ``can_infer`` and
``YOrN_Extraction`` (HEAD e8e78f05) gave on 3,000 generated MCQ outputs and 1,000 yes/no outputs
(``scripts/vlmevalkit_golden/gen_extraction.py`` ran them outside the repo). 100 % agreement is required."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from g2u.eval.scoring import extract_choice, extract_yesno, infer_choice

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "vlmevalkit" / "extraction.json.gz"


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(gzip.decompress(GOLDEN.read_bytes()))


def test_mcq_extraction_agrees_with_vlmevalkit_on_every_generated_output(golden):
    assert len(golden["mcq"]) == 3000
    # the reference's "Z" (a refusal) is our "no answer", as is its False
    diffs = [(out, opts, label, extract_choice(out, opts)) for out, opts, label in golden["mcq"]
             if (None if label == "Z" else label) != extract_choice(out, opts)]
    assert diffs == []


def test_the_golden_covers_the_lowercase_answer_is_rule(golden):
    """The rule the issue found missing is exercised: without it, these rows would disagree."""
    lower = [row for row in golden["mcq"] if row[2] and "answer is " + row[2].lower() in row[0].lower()
             and row[2] not in row[0].replace("answer is", "")]
    assert len(lower) >= 20


def test_yesno_extraction_agrees_with_vlmevalkit_on_every_generated_output(golden):
    assert len(golden["yesno"]) == 1000
    ours = {"yes": "Yes", "no": "No", None: "Unknown"}
    diffs = [(out, label, extract_yesno(out)) for out, label in golden["yesno"] if ours[extract_yesno(out)] != label]
    assert diffs == []


def test_what_a_judge_would_see_is_what_the_reference_sends_it(golden):
    """``infer_choice`` keeps the reference's three outcomes apart: a letter, "Z" (read: no answer, never
    judged) and unreadable (None: the reference's False, the only outputs an answer judge is asked about)."""
    diffs = [(out, label, infer_choice(out, opts)) for out, opts, label in golden["mcq"]
             if (label or None) != infer_choice(out, opts)]
    assert diffs == []
    assert sum(1 for _, _, label in golden["mcq"] if label == "Z") > 100
    assert sum(1 for _, _, label in golden["mcq"] if not label) > 1000
