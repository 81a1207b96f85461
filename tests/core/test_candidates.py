"""Candidate thoughts: N thoughts in one batched edit call, a selection policy, and a result
that reports every candidate and which was chosen."""

from __future__ import annotations

import pytest

from g2u.backends import load_backend
from g2u.batch import RawItem, outcome_body, run_batch
from g2u.pipeline import G2UPipeline
from g2u.selection import Candidate, select
from g2u.types import Answer, EditRecord, Thought

FAST = {"steps": 2, "max_new_tokens": 3}


class Counting:
    """Wraps a backend and records every edit call's batch size."""

    def __init__(self, inner):
        self.inner, self.edit_batches = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def edit(self, images, prompts, params):
        self.edit_batches.append(list(prompts))
        return self.inner.edit(images, prompts, params)


@pytest.fixture(scope="module")
def backend(demo_root):
    return load_backend(str(demo_root / "qwen_image_edit"))


@pytest.fixture
def pipe(backend):
    return G2UPipeline(Counting(backend))


def _run(pipe, fields, image):
    [out] = run_batch(pipe, [RawItem({"question": "What color is the square?", **FAST, **fields}, image)])
    return out, outcome_body(out)


def test_candidates_are_made_in_one_edit_call_and_reported(pipe, rgb_image):
    out, body = _run(pipe, {"candidates": 3, "selection": "confidence"}, rgb_image)
    assert out.ok, body
    assert len(pipe.backend.edit_batches) == 1 and len(pipe.backend.edit_batches[0]) == 3
    cands = body["candidates"]
    assert len(cands) == 3
    assert len({(c["prompt"], c["seed"]) for c in cands}) == 3, "candidates must differ in prompt or seed"
    assert {c["family"] for c in cands} == {"enhancement", "extension"}
    chosen = [c for c in cands if c["chosen"]]
    assert len(chosen) == 1 and body["selection"]["policy"] == "confidence"
    assert chosen[0]["answer_prob"] == max(c["answer_prob"] for c in cands)
    assert body["answer"] == chosen[0]["answer"]
    assert body["edit"]["prompt"] == chosen[0]["prompt"] and body["edit"]["seed"] == chosen[0]["seed"]


def test_candidate_prompts_come_first_and_set_the_count(pipe, rgb_image):
    prompts = ["Make the image brighter.", "Zoom in on the detail."]
    out, body = _run(pipe, {"candidate_prompts": prompts}, rgb_image)
    assert out.ok, body
    assert [c["prompt"] for c in body["candidates"]] == prompts


def test_default_request_has_no_candidates(pipe, rgb_image):
    out, body = _run(pipe, {}, rgb_image)
    assert out.ok and "candidates" not in body and "gate" not in body
    assert len(pipe.backend.edit_batches[0]) == 1


@pytest.mark.parametrize("fields, field", [
    ({"candidates": 9}, "candidates"),
    ({"candidates": 0}, "candidates"),
    ({"candidates": 1, "candidate_prompts": ["a b", "c d"]}, "candidates"),
    ({"candidate_prompts": []}, "candidate_prompts"),
    ({"candidate_prompts": "not json"}, "candidate_prompts"),
    ({"candidate_prompts": ["ok", 3]}, "candidate_prompts[1]"),
    ({"selection": "vote"}, "selection"),
    ({"candidates": 2, "selection": "judge"}, "selection"),
])
def test_bad_candidate_fields_are_4xx_naming_the_field(pipe, rgb_image, fields, field):
    out, body = _run(pipe, fields, rgb_image)
    assert out.status == 400 and body["field"] == field, body
    assert not pipe.backend.edit_batches


def test_candidate_prompt_that_leaks_an_option_is_refused(pipe, rgb_image):
    [out] = run_batch(pipe, [RawItem({"question": "Which colour?", "options": ["crimson", "teal"], **FAST,
                                      "candidate_prompts": ["Paint the square crimson."]}, rgb_image)])
    assert out.status == 400 and out.error["field"] == "candidate_prompts[0]"


def test_judge_selection_uses_the_configured_judge(backend, rgb_image):
    seen = []

    def judge(original, thought, prompt):
        seen.append(prompt)
        return 1.0 if "Extend" in prompt else 0.1

    pipe = G2UPipeline(backend, judge=judge)
    out, body = _run(pipe, {"candidates": 2, "selection": "judge"}, rgb_image)
    assert out.ok, body
    assert len(seen) == 2
    chosen = [c for c in body["candidates"] if c["chosen"]][0]
    assert chosen["family"] == "extension" and chosen["judge"] == 1.0
    assert body["edit"]["family"] == "extension"


def test_agreement_votes_with_the_baseline(pipe, rgb_image):
    out, body = _run(pipe, {"candidates": 2, "selection": "agreement"}, rgb_image)
    assert out.ok, body
    sel = body["selection"]
    assert sel["policy"] == "agreement" and "baseline_answer" in sel
    assert sum(sel["votes"].values()) == 3  # two candidates and the baseline


def _cand(text, prob, prompt="p"):
    rec = EditRecord(prompt=prompt, prompt_name=None, family=None, writer="library", steps=1, text_cfg=1.0,
                     image_cfg=1.0, seed=0, size=(8, 8))
    return Candidate(Thought(image=None, edit=rec), Answer(text, prob, prob))  # type: ignore[arg-type]


def test_policies_pick_as_documented():
    cands = [_cand("cat", 0.2), _cand("Dog.", 0.9), _cand("dog", 0.3)]
    assert select("confidence", cands).index == 1
    # "Dog." and "dog" vote together (2) against "cat" and the baseline "cat" (2): tie → the more confident group
    assert select("agreement", cands, Answer("cat", 0.5, 0.5)).index == 1
    won = select("agreement", [_cand("cat", 0.2), _cand("dog", 0.9)], Answer("cat", 0.1, 0.1))
    assert won.index == 0 and won.answer == "cat"
    baseline_wins = select("agreement", [_cand("a", 0.9), _cand("b", 0.9)], Answer("c", 0.95, 0.95))
    assert baseline_wins.index is None and baseline_wins.answer == "c"
    cands[0].judge, cands[2].judge = 0.7, 0.4
    assert select("judge", cands).index == 0
    unscored = [_cand("x", 0.1), _cand("y", 0.8)]
    verdict = select("judge", unscored)
    assert verdict.index == 1 and verdict.note
