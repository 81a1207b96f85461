"""Benchmark loading: format detection, gold normalisation, MMBench circular groups, clear errors."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from g2u.eval.datasets import load_dataset

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _png(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, format="PNG")
    return buf.getvalue()


def _jsonl(folder: Path, rows: list[dict]) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        (folder / row["image"]).write_bytes(_png())
    path = folder / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_manifest_letters_values_and_extra_fields(tmp_path):
    path = _jsonl(tmp_path, [
        {"id": "k1", "image": "images/k1.png", "question": "Which?", "options": ["A", "B", "C"], "answer": "B",
         "category": "Colour", "param": "x"},
        {"id": "p1", "image": "images/p1.png", "question": "Missing number?", "options": ["5", "3", "1", "2"],
         "answer": "1", "category": "numbers"},
        {"id": "o1", "image": "images/o1.png", "question": "Is it red?", "options": None, "answer": "Yes"},
        {"id": "o2", "image": "images/o2.png", "question": "What colour?", "answer": "red"},
    ])
    samples = load_dataset(tmp_path)  # a folder with one manifest works as well as the file
    assert [s.id for s in samples] == ["k1", "p1", "o1", "o2"]
    assert samples[0].answer == "B" and samples[0].extra == {"param": "x"} and samples[0].answer_kind == "mcq"
    assert samples[1].answer == "C"  # the option's value "1" becomes its letter
    assert samples[2].answer_kind == "yesno" and samples[3].answer_kind == "open"
    assert samples[0].load_image().size == (32, 24)
    assert [s.id for s in load_dataset(path, limit=2)] == ["k1", "p1"]


@pytest.mark.parametrize("row, field", [
    ({"id": "x", "image": "images/x.png", "question": "q", "options": ["a", "b"], "answer": "zebra"}, "answer"),
    ({"id": "x", "image": "images/x.png", "options": ["a", "b"], "answer": "A"}, "question"),
    ({"id": "x", "image": "images/x.png", "question": "q", "options": "a,b", "answer": "A"}, "options"),
])
def test_jsonl_bad_rows_name_the_line_and_field(tmp_path, row, field):
    path = _jsonl(tmp_path, [row])
    with pytest.raises(ValueError, match=rf"bench.jsonl:1: field '{field}'"):
        load_dataset(path)


def test_missing_image_is_a_clear_error(tmp_path):
    path = _jsonl(tmp_path, [{"id": "x", "image": "images/x.png", "question": "q", "answer": "red"}])
    (tmp_path / "images" / "x.png").unlink()
    [sample] = load_dataset(path)
    with pytest.raises(ValueError, match="sample 'x': cannot read its image"):
        sample.load_image()


def test_unknown_source_and_format(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        load_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown format '.csv'"):
        load_dataset(tmp_path / "data.csv")


def _tsv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def test_vlmevalkit_tsv_mmbench_circular_hint_and_shared_images(tmp_path):
    img = base64.b64encode(_png()).decode()
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
    rows = [["7", "What is it?", "Look closely", "cat", "dog", "", "", "A", "animals", "perception", img],
            ["1000007", "What is it?", "Look closely", "dog", "cat", "", "", "B", "animals", "perception", "7"],
            ["8", "Colour?", "", "red", "blue", "green", "", "green", "colour", "perception", img]]
    samples = load_dataset(_tsv(tmp_path / "mmbench.tsv", header, rows))
    assert [s.group for s in samples] == ["7", "7", "8"]
    assert samples[0].options == ["cat", "dog"] and samples[2].options == ["red", "blue", "green"]
    assert samples[0].question == "Hint: Look closely\nQuestion: What is it?"
    assert samples[2].question == "Colour?" and samples[2].answer == "C"
    assert samples[1].load_image().size == (32, 24)  # "7" points at row 7's image
    assert samples[0].extra["l2-category"] == "perception"


def test_vlmevalkit_tsv_yes_no_with_image_path_groups_per_image(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(_png())
    header = ["index", "question", "answer", "category", "image_path"]
    rows = [["0", "Is it red? Please answer yes or no.", "Yes", "color", "img/a.png"],
            ["1", "Is it blue? Please answer yes or no.", "No", "color", "img/a.png"]]
    samples = load_dataset(_tsv(tmp_path / "mme.tsv", header, rows))
    assert [s.answer for s in samples] == ["yes", "no"] and {s.answer_kind for s in samples} == {"yesno"}
    assert samples[0].group == samples[1].group == "img/a.png"
    assert samples[0].load_image().size == (32, 24)


def test_tsv_without_required_columns(tmp_path):
    with pytest.raises(ValueError, match="field .question. is missing"):
        load_dataset(_tsv(tmp_path / "x.tsv", ["index", "image"], [["0", "abc"]]))


def test_tsv_without_answers_is_a_split_to_predict_not_an_error(tmp_path):
    [sample] = load_dataset(_tsv(tmp_path / "x.tsv", ["index", "question", "image"], [["0", "q", "A" * 100]]))
    assert sample.extra["no_gold"] is True and sample.answer == ""


def test_mmvet_json(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "v1_0.png").write_bytes(_png())
    (tmp_path / "mm-vet.json").write_text(json.dumps({"v1_0": {
        "imagename": "v1_0.png", "question": "What is x?", "answer": "5<OR>five", "capability": ["ocr", "math"]}}))
    [sample] = load_dataset(tmp_path / "mm-vet.json")
    assert sample.answer_kind == "open" and sample.answer == "5<OR>five" and sample.category == "math,ocr"
    assert sample.load_image().size == (32, 24)


def test_easy_vqa_and_builtin_sample_work_offline():
    builtin = load_dataset("sample")
    assert len(builtin) == 8 and {s.category for s in builtin} <= {"shape", "color", "yes/no"}
    assert builtin[0].load_image().mode == "RGB"
    full = load_dataset("easy-vqa:test", limit=50)
    assert [s.id for s in full[:8]] == [s.id for s in builtin]
    assert all(s.answer_kind == ("yesno" if s.answer in ("yes", "no") else "open") for s in full)
    with pytest.raises(ValueError, match="split must be"):
        load_dataset("easy-vqa:val")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not on this machine")
def test_shared_benchmarks_load_with_letter_answers():
    kiva = load_dataset(SHARED / "kiva")
    puzzle = load_dataset(SHARED / "puzzlevqa" / "puzzlevqa.jsonl")
    assert len(kiva) == 150 and len(puzzle) == 200
    for s in kiva + puzzle:
        assert s.answer_kind == "mcq" and s.answer in "ABCDEFGH"[: len(s.options)]
    assert {s.category for s in kiva} == {"2DRotation", "Colour", "Counting", "Reflect", "Resize"}
    first = puzzle[0]
    assert first.options[ord(first.answer) - 65] == json.loads(
        (SHARED / "puzzlevqa" / "puzzlevqa.jsonl").read_text().splitlines()[0])["answer"]


def test_hallusionbench_reference_layout_string_index_groups_and_text_only_rows(tmp_path):
    img = base64.b64encode(_png()).decode()
    header = ["index", "category", "l2-category", "question", "answer", "image"]
    rows = [["VD_chart_x_0_0_0", "VD", "chart", "Is the bar red?", "Yes", img],
            ["VD_chart_x_0_1_0", "VD", "chart", "Is the bar red?", "No", img],
            ["VD_table_x_0_0_0", "VD", "table", "Is 3 the total?", "Yes", img],   # set 0 again, other l2
            ["VS_chart_x_1_0_0", "VS", "chart", "Is Paris in France?", "Yes", ""]]  # text-only: skipped
    samples = load_dataset(_tsv(tmp_path / "HallusionBench.tsv", header, rows))
    assert [s.id for s in samples] == ["VD_chart_x_0_0_0", "VD_chart_x_0_1_0", "VD_table_x_0_0_0"]
    assert [s.extra["figure_group"] for s in samples] == ["chart/0/0", "chart/0/1", "table/0/0"]
    assert [s.extra["question_group"] for s in samples] == ["chart/0/0", "chart/0/0", "table/0/0"]
    assert {s.answer for s in samples} == {"yes", "no"} and {s.answer_kind for s in samples} == {"yesno"}


def test_text_only_row_outside_hallusionbench_is_still_an_error(tmp_path):
    header = ["index", "question", "answer", "category", "image"]
    with pytest.raises(ValueError, match="field 'image' is empty"):
        load_dataset(_tsv(tmp_path / "mme.tsv", header, [["0", "Is it red?", "Yes", "color", ""]]))


def test_mmvet_tsv_answers_are_open_even_when_yes(tmp_path):
    img = base64.b64encode(_png()).decode()
    header = ["index", "question", "answer", "category", "image"]
    rows = [["0", "Is it safe to cross?", "yes", "rec,know", img],
            ["1", "What is x?", "-1<AND>-5", "ocr,math", img]]
    samples = load_dataset(_tsv(tmp_path / "MMVet.tsv", header, rows))
    assert {s.answer_kind for s in samples} == {"open"} and samples[0].answer == "yes"
    assert samples[1].category == "ocr,math"
