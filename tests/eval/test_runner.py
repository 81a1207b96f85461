"""The evaluation runner with a scripted predictor: scoring, resume, torn lines, the optional judge."""

from __future__ import annotations

import json

from PIL import Image

from g2u.eval.datasets import Sample
from g2u.eval.runner import EvalConfig, evaluate, read_records


class ScriptedPredictor:
    label = "scripted"

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def predict(self, samples, modes, config, thought_dir, reuse):
        out = []
        for sample, sample_modes in zip(samples, modes):
            for mode in sample_modes:
                self.calls.append((sample.id, mode))
                out.append({"id": sample.id, "mode": mode, "prediction": self.answers[sample.id]})
        return out


def samples(tmp_path) -> list[Sample]:
    Image.new("RGB", (8, 8)).save(tmp_path / "i.png")
    path = str(tmp_path / "i.png")
    return [Sample("q1", "Colour?", ["red", "blue"], "B", "c", "mcq", image_path=path),
            Sample("q2", "Is it dark?", None, "yes", "c", "yesno", image_path=path),
            Sample("q3", "What is it?", None, "a navy square", "c", "open", image_path=path)]


def test_scores_resumes_and_skips_a_torn_line(tmp_path):
    predictor = ScriptedPredictor({"q1": "The answer is (B)", "q2": "No.", "q3": "a dark blue square"})
    config = EvalConfig(modes=("baseline", "g2u"))
    first = evaluate(samples(tmp_path), predictor, config, tmp_path / "out", batch_size=2, progress=False)
    assert first.computed == 6 and first.reused == 0
    assert {(r["id"], r["correct"]) for r in first.records} == {("q1", True), ("q2", False), ("q3", False)}

    path = tmp_path / "out" / "predictions.jsonl"
    with path.open("a") as f:
        f.write('{"id": "q9", "mode": "g2')  # a crash mid-write
    predictor.calls.clear()
    again = evaluate(samples(tmp_path), predictor, config, tmp_path / "out", progress=False)
    assert predictor.calls == [] and again.computed == 0 and again.reused == 6

    other = EvalConfig.create(("baseline", "g2u"), family="extension")  # new thought settings: g2u only reruns
    evaluate(samples(tmp_path), predictor, other, tmp_path / "out", progress=False)
    assert sorted(predictor.calls) == [("q1", "g2u"), ("q2", "g2u"), ("q3", "g2u")]
    lines = path.read_text().splitlines()
    assert len(read_records(path)) == 9 and sum(1 for line in lines if not _parses(line)) == 1


def _parses(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def test_judge_rescores_open_answers_only(tmp_path):
    predictor = ScriptedPredictor({"q1": "B", "q2": "yes", "q3": "a dark blue square"})
    seen = []

    def judge(question, answer, prediction):
        seen.append(question)
        return True

    result = evaluate(samples(tmp_path), predictor, EvalConfig(modes=("baseline",)), tmp_path / "out",
                      progress=False, judge=judge)
    assert seen == ["What is it?"]
    q3 = next(r for r in result.records if r["id"] == "q3")
    assert q3["correct"] is True and q3["judge"] is True
