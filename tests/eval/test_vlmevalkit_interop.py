"""Interop with VLMEvalKit, both ways, one prediction file per dataset layout (MMBench circular, MMStar,
MME, HallusionBench), each with failed predictions:

- what our evaluation writes (``write_prediction_files``) is, cell for cell, the file in
  ``tests/golden/vlmevalkit/predictions/`` that VLMEvalKit's own scorer (``ImageMCQDataset.evaluate`` /
  ``ImageYORNDataset.evaluate`` at e8e78f05, exact matching, run outside the repo by
  ``scripts/vlmevalkit_golden/gen_scores.py``) scored into ``scores.json``;
- ``score_prediction_file`` (``g2u eval score``) on those files gives the reference's numbers.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from g2u.eval.datasets import load_dataset
from g2u.eval.scoring import MME_COGNITION, MME_PERCEPTION
from g2u.eval.vlmevalkit_io import score_prediction_file, write_prediction_files

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "vlmevalkit" / "predictions"


def _png(colour) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


IMG = _png((200, 30, 30))
FAIL = None  # a failed prediction


def _tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


def benchmarks(folder: Path) -> dict[str, tuple[Path, dict[str, str | None]]]:
    """Per layout: a benchmark TSV and the scripted predictions (``None``: the prediction failed)."""
    out = {}
    mmb = [["index", "question", "hint", "A", "B", "C", "answer", "category", "l2-category", "image"]]
    preds: dict[str, str | None] = {}
    for q in range(6):
        options = ["red", "blue", "green"]
        for k in range(3):  # three circular copies: options shifted, answer follows its option
            shifted = options[k:] + options[:k]
            answer = "ABC"[shifted.index("red")]
            idx = q + k * 1_000_000
            mmb.append([idx, f"Colour {q}?", "Look" if q % 2 else "", *shifted, answer, f"cat{q % 2}",
                        "perception", IMG if k == 0 else str(q)])
            preds[str(idx)] = {0: answer, 1: f"the answer is {answer.lower()}", 2: "I think it is red"}[k] \
                if q < 4 else (FAIL if k == 1 else answer)
    preds["1000001"] = "B or C"                 # question 1: one copy unreadable → the group is wrong
    out["MMBench_DEV_EN"] = (_tsv(folder / "MMBench_DEV_EN.tsv", mmb[0], mmb[1:]), preds)

    star = [["index", "question", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]]
    spreds: dict[str, str | None] = {}
    for i in range(8):
        star.append([i, f"Count {i}?", "1", "2", "3", "4", "ABCD"[i % 4], ["coarse", "fine"][i % 2], "l2x", IMG])
        spreds[str(i)] = ["ABCD"[i % 4], "The answer is dog", FAIL, "(C)", "b", "Answer: D", "4", "A"][i]
    out["MMStar"] = (_tsv(folder / "MMStar.tsv", star[0], star[1:]), spreds)

    mme = [["index", "question", "answer", "category", "image"]]
    mpreds: dict[str, str | None] = {}
    n = 0
    for c, cat in enumerate(MME_PERCEPTION + MME_COGNITION):
        owner = n
        for gold in ("Yes", "No"):
            image = IMG if n == owner else str(owner)
            mme.append([n, f"Is it {cat} {gold}? Please answer yes or no.", gold, cat, image])
            said = gold if (c + n) % 3 else ("Yes" if gold == "No" else "No")
            mpreds[str(n)] = {5: FAIL, 9: "**Yes**", 20: "yes, it is", 27: FAIL}.get(n, said)
            n += 1
    out["MME"] = (_tsv(folder / "MME.tsv", mme[0], mme[1:]), mpreds)

    hb = [["index", "category", "l2-category", "question", "answer", "image"]]
    hpreds: dict[str, str | None] = {}
    for l2 in ("chart", "table"):
        for fig in range(2):
            for q in range(2):
                idx = f"VD_{l2}_x_0_{fig}_{q}"
                gold = "Yes" if (fig + q) % 2 else "No"
                hb.append([idx, "VD" if q == 0 else "VS", l2, f"Is {l2} {q} true?", gold, IMG])
                hpreds[idx] = gold
    hpreds["VD_chart_x_0_0_1"] = FAIL              # the case: figure chart/0/0 has an errored question
    hpreds["VD_table_x_0_1_0"] = "Yes/No"           # no answer
    out["HallusionBench"] = (_tsv(folder / "HallusionBench.tsv", hb[0], hb[1:]), hpreds)
    return out


def write_files(folder: Path) -> dict[str, Path]:
    """Our evaluation's VLMEvalKit prediction files for the four benchmarks (one mode)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, (path, preds) in benchmarks(folder).items():
        samples = load_dataset(path)
        records = [{"id": s.id, "mode": "baseline", "prediction": preds[s.id] or ""} |
                   ({"error": {"reason": "CUDA out of memory"}} if preds[s.id] is None else {}) for s in samples]
        [files[name]] = write_prediction_files(records, samples, folder, "g2u-demo", name).values()
    return files


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    return write_files(tmp_path_factory.mktemp("pred"))


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((GOLDEN / "scores.json").read_text())


@pytest.mark.parametrize("name", ["MMBench_DEV_EN", "MMStar", "MME", "HallusionBench"])
def test_we_write_the_file_the_reference_scored(written, name):
    import pandas as pd

    ours = pd.read_excel(written[name], dtype=str)
    golden = pd.read_excel(GOLDEN / written[name].name, dtype=str)
    pd.testing.assert_frame_equal(ours, golden)
    assert {"index", "question", "answer", "category", "prediction"} <= set(ours.columns)
    assert ours["prediction"].str.startswith("Failed to obtain answer").sum() >= 1


def test_mmbench_circular_round_trip(reference):
    flat = score_prediction_file(GOLDEN / "g2u-demo-baseline_MMBench_DEV_EN.xlsx")["flat"]
    ref = reference["MMBench_DEV_EN"]
    assert flat["circular/baseline/acc"] == pytest.approx(ref["Overall"])
    for cat in ("cat0", "cat1"):
        assert flat[f"circular/baseline/category/{cat}"] == pytest.approx(ref[cat])
    assert flat["n_errors/baseline"] == 2


def test_mmstar_round_trip(reference):
    flat = score_prediction_file(GOLDEN / "g2u-demo-baseline_MMStar.xlsx")["flat"]
    ref = reference["MMStar"]
    assert flat["acc/baseline/overall"] == pytest.approx(ref["Overall"])
    assert flat["acc/baseline/category/coarse"] == pytest.approx(ref["coarse"])
    assert flat["acc/baseline/l2/l2x"] == pytest.approx(ref["l2x"])


def test_mme_round_trip(reference):
    flat = score_prediction_file(GOLDEN / "g2u-demo-baseline_MME.xlsx")["flat"]
    ref = reference["MME"]
    assert flat["mme/baseline/perception"] == pytest.approx(ref["perception"])
    assert flat["mme/baseline/cognition"] == pytest.approx(ref["reasoning"])
    for cat in MME_PERCEPTION + MME_COGNITION:
        assert flat[f"mme/baseline/category/{cat}/score"] == pytest.approx(ref[cat])


def test_hallusionbench_round_trip(reference):
    flat = score_prediction_file(GOLDEN / "g2u-demo-baseline_HallusionBench.xlsx")["flat"]
    ref = reference["HallusionBench"]
    for metric in ("aAcc", "fAcc", "qAcc"):
        assert 100 * flat[f"hallusionbench/baseline/{metric}"] == pytest.approx(ref["Overall"][metric])
        for split in ("VD", "VS"):
            assert 100 * flat[f"hallusionbench/baseline/category/{split}/{metric}"] == pytest.approx(ref[split][metric])
        assert 100 * flat[f"hallusionbench/baseline/l2/chart/{metric}"] == pytest.approx(ref["chart"][metric])


if __name__ == "__main__":  # writes the golden prediction files (then run gen_scores.py on them)
    import sys

    print(write_files(Path(sys.argv[1])))


def test_a_split_without_gold_answers_is_predicted_written_and_not_scored(tmp_path):
    """MMBench's test split has no answers: the run predicts, writes the prediction file (no answer
    column), and says scoring was skipped, never "field 'answer' is missing"."""
    import pandas as pd

    from g2u.eval.report import compute_metrics
    from g2u.eval.runner import EvalConfig, evaluate

    path = _tsv(tmp_path / "MMBench_TEST_EN.tsv", ["index", "question", "A", "B", "category", "image"],
                [[0, "Colour?", "red", "blue", "color", IMG], [1000000, "Colour?", "blue", "red", "color", "0"]])
    samples = load_dataset(path)

    class Say:
        label = "say"

        def predict(self, samples, modes, config, thought_dir, reuse):
            return [{"id": s.id, "mode": m, "prediction": "A"} for s, ms in zip(samples, modes) for m in ms]

    result = evaluate(samples, Say(), EvalConfig(modes=("baseline",)), tmp_path / "out", progress=False)
    assert all(r["correct"] is None for r in result.records)
    metrics = compute_metrics(result.records, samples)
    assert metrics["flat"]["n_no_gold"] == 2 and "acc/baseline/overall" not in metrics["flat"]
    assert "not scored" in metrics["scoring_skipped"]
    [xlsx] = write_prediction_files(result.records, samples, tmp_path / "x", "say", "MMBench_TEST_EN").values()
    frame = pd.read_excel(xlsx, dtype=str)
    assert "answer" not in frame.columns and list(frame["prediction"]) == ["A", "A"]
    noisy = [dict(r, prediction="A\x01\x0b") for r in result.records]   # a demo model's control characters
    [xlsx] = write_prediction_files(noisy, samples, tmp_path / "y", "say", "MMBench_TEST_EN").values()
    assert list(pd.read_excel(xlsx, dtype=str)["prediction"]) == ["A", "A"]


def test_g2u_eval_score_cli_prints_the_reference_numbers(capsys, reference):
    from g2u.cli import main

    assert main(["eval", "score", str(GOLDEN / "g2u-demo-baseline_MME.xlsx")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["mme/baseline/perception"] == pytest.approx(reference["MME"]["perception"])
    assert out["metrics"]["n_errors/baseline"] == 2 and out["params"]["answer_judge"] == "exact_matching"
    assert main(["eval", "score", str(GOLDEN / "scores.json")]) == 2  # not a prediction file: named, exit 2
