"""From files in VLMEvalKit's layouts (MMBench circular, MME, HallusionBench, MMStar, MM-Vet) through the
runner (scripted predictions, some refused) to the logged metrics. Expected values are worked out by hand
from the reference rules in each test's comments."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from g2u.eval.datasets import load_dataset
from g2u.eval.report import compute_metrics
from g2u.eval.runner import EvalConfig, evaluate


def _png(colour) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


IMG, IMG2 = _png((200, 30, 30)), _png((30, 200, 30))


def _tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


class Scripted:
    """Predictions by (id, mode); ``None`` is a refusal (the leak guard or a failed request)."""

    label = "scripted"

    def __init__(self, answers: dict[tuple[str, str], str | None]):
        self.answers = answers

    def predict(self, samples, modes, config, thought_dir, reuse):
        out = []
        for sample, sample_modes in zip(samples, modes):
            for mode in sample_modes:
                said = self.answers.get((sample.id, mode), self.answers.get((sample.id, "*"), ""))
                if said is None:
                    out.append({"id": sample.id, "mode": mode, "prediction": "",
                                "error": {"field": "prompt_name", "reason": "leaks the answer"}})
                else:
                    out.append({"id": sample.id, "mode": mode, "prediction": said,
                                "edit": {"family": "enhancement", "prompt_name": "denoise"} if mode == "g2u" else None})
        return out


def _run(tmp_path, path: Path, answers) -> dict[str, float]:
    samples = load_dataset(path)
    result = evaluate(samples, Scripted(answers), EvalConfig(modes=("baseline", "g2u")), tmp_path / "out",
                      progress=False)
    return compute_metrics(result.records, samples)["flat"]


def test_mmbench_circular(tmp_path):
    path = _tsv(tmp_path / "MMBench.tsv", ["index", "question", "A", "B", "answer", "category", "l2-category", "image"],
                [[0, "Colour?", "red", "green", "A", "color", "perception", IMG],
                 [1000000, "Colour?", "green", "red", "B", "color", "perception", "0"],
                 [1, "Shape?", "square", "circle", "A", "shape", "perception", IMG2],
                 [1000001, "Shape?", "circle", "square", "B", "shape", "perception", "1"],
                 [2000002, "Orphan?", "x", "y", "A", "shape", "perception", IMG2]])
    flat = _run(tmp_path, path, {
        ("0", "*"): "A", ("1000000", "*"): "B",                       # question 0: both copies right
        ("1", "*"): "A", ("1000001", "baseline"): "B or A",           # baseline: two letters → no answer
        ("1000001", "g2u"): "B", ("2000002", "*"): "A"})
    # baseline: 0 right, 1 wrong → 0.5; g2u: both right → 1.0; the orphan's group (2) is not scored
    assert flat["circular/baseline/acc"] == 0.5 and flat["circular/g2u/acc"] == 1.0
    assert flat["circular/baseline/category/shape"] == 0.0 and flat["circular/g2u/category/shape"] == 1.0
    assert flat["lenient/circular/baseline/acc"] == 1.0           # the lenient reading takes "B or A" as B
    assert flat["circular/baseline/l2/perception"] == 0.5 and flat["circular/g2u/l2/perception"] == 1.0


def test_mme_perception_and_cognition(tmp_path):
    path = _tsv(tmp_path / "MME.tsv", ["index", "question", "answer", "category", "image"],
                [[0, "Red?", "Yes", "color", IMG], [1, "Blue?", "No", "color", "0"],
                 [2, "Text?", "No", "OCR", IMG2], [3, "Cat?", "No", "OCR", "2"],
                 [4, "2+2=4?", "Yes", "numerical_calculation", IMG], [5, "2+2=5?", "No", "numerical_calculation", "4"]])
    flat = _run(tmp_path, path, {("0", "*"): "Yes", ("1", "*"): "No.", ("2", "*"): "**No**", ("3", "*"): "No",
                                 ("4", "*"): "Yes", ("5", "baseline"): "Yes", ("5", "g2u"): None})
    # color: acc 1, acc+ 1 → 200; OCR: "**No**" is no answer → acc 0.5, acc+ 0 → 50; 2 of 10 perception
    # categories, 1 of 4 cognition ones: partial sums, never the totals
    assert "mme/baseline/perception" not in flat and "mme/baseline/cognition" not in flat
    assert flat["mme/baseline/perception_partial"] == 250.0 and flat["mme/baseline/perception_missing"] == 8
    assert flat["mme/baseline/category/color/score"] == 200.0
    # numerical_calculation: baseline acc 0.5, acc+ 0 → 50; g2u: the refused question is a miss → acc 0.5,
    # acc+ 0 → 50; with the errors left out, image 4 goes whole → category absent → no cognition sum at all
    assert flat["mme/baseline/cognition_partial"] == 50.0 and flat["mme/g2u/cognition_partial"] == 50.0
    assert flat["mme/g2u/category/numerical_calculation/score"] == 50.0
    assert "excl_errors/mme/g2u/cognition_partial" not in flat
    assert flat["excl_errors/mme/g2u/perception_partial"] == 250.0
    assert flat["n_errors/g2u"] == 1 and flat["n_scored/g2u"] == 5
    assert flat["lenient/mme/baseline/perception_partial"] == 400.0        # lenient reads "**No**" as no


def test_hallusionbench(tmp_path):
    path = _tsv(tmp_path / "HallusionBench.tsv", ["index", "category", "l2-category", "question", "answer", "image"],
                [["VD_chart_x_0_0_0", "VD", "chart", "Red bar?", "Yes", IMG],
                 ["VD_chart_x_0_1_0", "VD", "chart", "Red bar?", "No", IMG2],
                 ["VD_table_x_0_0_0", "VD", "table", "Total 3?", "Yes", IMG],
                 ["VD_table_x_0_0_1", "VD", "table", "Total 4?", "No", IMG],
                 ["VS_chart_x_1_0_0", "VS", "chart", "Paris in France?", "Yes", ""]])  # text-only: skipped
    flat = _run(tmp_path, path, {("VD_chart_x_0_0_0", "*"): "Yes", ("VD_chart_x_0_1_0", "*"): "Yes",
                                 ("VD_table_x_0_0_0", "*"): "Yes", ("VD_table_x_0_0_1", "*"): "No"})
    # aAcc 3/4; figures chart/0/0 ✓, chart/0/1 ✗, table/0/0 ✓ → 2/3; questions chart/0/0 ✗ (two figures),
    # table/0/0 ✓, table/0/1 ✓ → 2/3
    assert flat["hallusionbench/g2u/aAcc"] == 0.75
    assert flat["hallusionbench/g2u/fAcc"] == pytest.approx(2 / 3)
    assert flat["hallusionbench/g2u/qAcc"] == pytest.approx(2 / 3)
    assert flat["hallusionbench/g2u/l2/table/fAcc"] == 1.0 and flat["hallusionbench/g2u/l2/chart/qAcc"] == 0.0
    assert flat["n_records"] == 8


def test_mmstar_plain_accuracy_per_category(tmp_path):
    path = _tsv(tmp_path / "MMStar.tsv",
                ["index", "question", "A", "B", "C", "D", "answer", "category", "l2-category", "image"],
                [[0, "Colour?", "red", "green", "blue", "black", "A", "coarse perception", "image scene", IMG],
                 [1, "Count?", "0", "1", "2", "3", "B", "instance reasoning", "counting", IMG2]])
    flat = _run(tmp_path, path, {("0", "*"): "A", ("1", "baseline"): "The answer is B because there is one",
                                 ("1", "g2u"): "b"})
    assert flat["acc/baseline/overall"] == 1.0 and flat["acc/g2u/overall"] == 0.5
    assert flat["delta/g2u/category/instance reasoning"] == -1.0
    assert flat["acc/g2u/l2/counting"] == 0.0 and flat["acc/g2u/l2/image scene"] == 1.0


def test_mmvet_rule_fallback_per_capability(tmp_path):
    path = _tsv(tmp_path / "MMVet.tsv", ["index", "question", "answer", "category", "image"],
                [[0, "Values?", "-1<AND>-5", "ocr,math", IMG], [1, "Safe?", "yes", "rec,know", IMG2],
                 [2, "Colour?", "red<OR>crimson", "rec", IMG]])
    flat = _run(tmp_path, path, {("0", "*"): "x = -1 and x = 5", ("1", "*"): "Yes, it is safe.",
                                 ("2", "*"): "crimson"})
    # -1 present, -5 not (5 is not -5) → 0.5; yes → 1; crimson → 1
    assert flat["mmvet/g2u/overall"] == pytest.approx(2.5 / 3)
    assert flat["mmvet/g2u/capability/math"] == 0.5 and flat["mmvet/g2u/capability/rec"] == 1.0
