"""The confidence gate and answer probabilities in the backend protocol."""

from __future__ import annotations

import pytest

from g2u.backends import load_backend
from g2u.batch import RawItem, outcome_body, run_batch
from g2u.pipeline import G2UPipeline
from g2u.schema import answer_params
from g2u.types import Answer

FAST = {"steps": 2, "max_new_tokens": 3}


class Counting:
    def __init__(self, inner):
        self.inner, self.edit_calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def edit(self, images, prompts, params):
        self.edit_calls += 1
        return self.inner.edit(images, prompts, params)


@pytest.fixture(scope="module")
def backend(demo_root):
    return load_backend(str(demo_root / "qwen_image_edit"))


def _run(pipe, fields, image):
    [out] = run_batch(pipe, [RawItem({"question": "What color is the square?", **FAST, **fields}, image)])
    return out, outcome_body(out)


def test_confident_baseline_skips_stage_one(backend, rgb_image):
    pipe = G2UPipeline(Counting(backend))
    out, body = _run(pipe, {"gate": "confidence", "gate_threshold": 0.0}, rgb_image)
    assert out.ok, body
    assert pipe.backend.edit_calls == 0
    assert body["gate"]["fired"] is True and body["edit"] is None and body["mode"] == "g2u"
    _, baseline = _run(pipe, {"mode": "baseline"}, rgb_image)
    assert body["answer"] == baseline["answer"] == body["gate"]["baseline_answer"]


def test_unsure_baseline_goes_on_to_imagine(backend, rgb_image):
    pipe = G2UPipeline(Counting(backend))
    out, body = _run(pipe, {"gate": "confidence", "gate_threshold": 1.0}, rgb_image)
    assert out.ok, body
    assert pipe.backend.edit_calls == 1
    assert body["gate"]["fired"] is False and body["edit"] is not None
    assert 0.0 < body["gate"]["baseline_prob"] < 1.0
    _, plain = _run(pipe, {}, rgb_image)
    assert body["answer"] == plain["answer"]  # the gate never changes an imagined answer


@pytest.mark.parametrize("fields, field", [
    ({"gate": "always"}, "gate"), ({"gate_threshold": 1.5}, "gate_threshold"),
    ({"gate_threshold": -0.1}, "gate_threshold"), ({"gate_threshold": "high"}, "gate_threshold"),
])
def test_bad_gate_fields_are_4xx(backend, rgb_image, fields, field):
    out, body = _run(G2UPipeline(backend), fields, rgb_image)
    assert out.status == 400 and body["field"] == field, body


@pytest.mark.parametrize("name", ["qwen_image_edit", "decoupled", "bagel"])
def test_backends_return_answer_probabilities(demo_root, rgb_image, name):
    be = load_backend(str(demo_root / name))
    contents = [[rgb_image, "What color is the square?"], [rgb_image, "How many squares?"]]
    plain = be.answer(contents, answer_params(max_new_tokens=3))
    scored = be.answer(contents, answer_params(max_new_tokens=3, return_scores=True))
    assert all(isinstance(a, Answer) for a in scored)
    assert [a.text for a in scored] == [a.text for a in plain], "asking for scores must not change the answers"
    assert all(a.prob is None for a in plain)  # probabilities only when asked
    for a in scored:
        assert 0.0 < a.prob <= 1.0 and 0.0 < a.first_prob <= 1.0
    one = be.answer(contents, answer_params(max_new_tokens=1, return_scores=True))
    for a in one:  # one generated token: its mean is its first
        assert a.prob == pytest.approx(a.first_prob)


def test_gate_decision_travels_with_the_thought_to_a_separate_stage_two(backend, rgb_image):
    """The evaluation and the handler run stage II apart from stage I: the result still reports the gate."""
    from g2u.batch import Batch

    pipe = G2UPipeline(backend)
    fields = {"question": "What color is the square?", **FAST, "gate": "confidence", "gate_threshold": 1.0}
    batch = Batch(pipe)
    batch.parse([RawItem(fields, rgb_image)])
    batch.edit()
    thought = batch.items[0].thought
    [out] = run_batch(pipe, [RawItem(fields, rgb_image, thought=thought)])
    body = outcome_body(out)
    assert body["gate"]["fired"] is False and body["gate"]["baseline_prob"] == thought.gate.to_dict()["baseline_prob"]
