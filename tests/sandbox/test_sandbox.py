"""The sandbox: answers known by construction, controlled degradations, a leak-free manifest the
evaluation reads as is, and a report whose statistics are right."""

from __future__ import annotations

import argparse
import json
import random

import numpy as np
import pytest

from g2u.eval.datasets import load_dataset
from g2u.sandbox.build import MANIFEST, LeakError, build_sandbox
from g2u.sandbox.degrade import DEGRADATIONS, SEVERITIES, degrade
from g2u.sandbox.leaks import check_manifest, question_leak
from g2u.sandbox.questions import ask
from g2u.sandbox.report import format_table, summarise, wilson
from g2u.sandbox.samples import draw_sample
from g2u.sandbox.scenes import COLORS, POSITIONS, SCENE_SIZE, draw_scene, render

N_CELLS = len(DEGRADATIONS) * len(SEVERITIES)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sandbox")
    facts = build_sandbox(folder, N_CELLS, seed=3)
    return folder, facts


def test_build_writes_a_benchmark_folder_the_evaluation_loads(sandbox):
    folder, facts = sandbox
    samples = load_dataset(folder)
    assert facts["n"] == len(samples) == N_CELLS
    cells = {(s.extra["degradation"], s.extra["severity"]) for s in samples}
    assert cells == {(d, k) for d in DEGRADATIONS for k in SEVERITIES}
    for s in samples:
        assert s.load_image().size[0] <= SCENE_SIZE
        assert (folder / s.extra["oracle_thought"]).is_file()
        assert s.extra["expected_family"] == DEGRADATIONS[s.extra["degradation"]].family
        if s.options:
            assert s.answer_kind == "mcq" and s.answer in "ABC"


def test_build_is_deterministic_per_seed(tmp_path, sandbox):
    folder, _ = sandbox
    build_sandbox(tmp_path / "again", N_CELLS, seed=3)
    assert (tmp_path / "again" / MANIFEST).read_text() == (folder / MANIFEST).read_text()
    assert (tmp_path / "again" / "images" / "00004.png").read_bytes() == (folder / "images" / "00004.png").read_bytes()
    build_sandbox(tmp_path / "other", N_CELLS, seed=4)
    assert (tmp_path / "other" / MANIFEST).read_text() != (folder / MANIFEST).read_text()


def test_answers_follow_from_the_scene():
    for i in range(200):
        s = draw_sample(0, i)
        q, objs = s.question, s.scene.objects
        if q.kind == "count":
            assert q.answer == str(len(objs))
        elif q.kind in ("color", "color_choice"):
            shape = q.text.split("the ")[1].split()[0].rstrip("?")
            (obj,) = [o for o in objs if o.shape == shape]
            assert q.answer_text == obj.color
            if q.options:
                assert q.options["ABC".index(q.answer)] == obj.color
        elif q.kind == "shape_at":
            obj = s.scene.at(q.text.split("at the ")[1].rstrip("?"))
            assert q.answer == (obj.shape if obj else "none")
        elif q.kind == "exists":
            name = q.text.removeprefix("Is there a ").rstrip("?")
            assert q.answer == ("yes" if name in {o.name for o in objs} else "no")
        elif q.kind == "larger":
            big = q.options["AB".index(q.answer)]
            assert {o.size for o in objs if o.name == big} == {"large"}


def test_every_question_kind_is_drawn_and_mcq_letters_are_balanced():
    samples = [draw_sample(1, i) for i in range(400)]
    assert {s.question.kind for s in samples} == {"count", "color", "shape_at", "larger", "exists", "color_choice"}
    letters = [s.question.answer for s in samples if s.question.options]
    assert min(letters.count(x) for x in "AB") > len(letters) / 5


def test_degradations_change_the_image_more_with_severity():
    rng = random.Random(0)
    scene = draw_scene(rng)
    clean = render(scene)
    base = np.asarray(clean, dtype=float)
    for name in ("blur", "noise", "under_exposure", "low_contrast", "downscale"):
        target = [(scene.objects[0].position, scene.objects[0].center)]
        errors = [np.abs(np.asarray(degrade(clean, name, k, target, random.Random(1))[0], dtype=float)
                         - base).mean() for k in SEVERITIES]
        assert 0 < errors[0] < errors[2], name


def test_crop_and_occluder_hide_the_subject():
    scene = draw_scene(random.Random(5))
    subject = scene.objects[0]
    clean = render(scene)
    target = [(subject.position, subject.center)]
    cropped, _ = degrade(clean, "crop", 3, target, random.Random(0))
    assert cropped.size[0] * cropped.size[1] == SCENE_SIZE * SCENE_SIZE // 2
    occluded, params = degrade(clean, "occluder", 3, target, random.Random(0))
    assert params["blocks"] == [list(subject.center)]
    x, y = subject.center
    assert occluded.getpixel((x, y)) not in COLORS.values()
    assert clean.getpixel((x, y)) in COLORS.values()
    assert POSITIONS.index(subject.position) >= 0


def test_unknown_degradation_or_severity_is_refused():
    clean = render(draw_scene(random.Random(0)))
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(clean, "rain", 1, [("top left", (28, 28))], random.Random(0))
    with pytest.raises(ValueError, match="severity"):
        degrade(clean, "blur", 4, [("top left", (28, 28))], random.Random(0))


def test_no_question_names_its_answer():
    for i in range(300):
        q = draw_sample(2, i).question
        assert question_leak(q.text, q.answer_text) is None, q


def test_leak_check_catches_question_and_prompt_leaks(sandbox):
    folder, _ = sandbox
    rows = [json.loads(line) for line in (folder / MANIFEST).read_text().splitlines()]
    assert check_manifest(rows) == {}
    leaky = dict(rows[0], question=f"Is it {rows[0]['answer_text']}?")
    assert "names the answer" in check_manifest([leaky])[leaky["id"]][0]

    from g2u.prompts import PromptLibrary, default_library

    lib = default_library()
    data = {"version": "x", "families": {f: {"default": lib.family_defaults[f]} for f in lib.family_defaults},
            "prompts": [{"name": p.name, "family": p.family, "text": p.text} for p in lib.prompts.values()]}
    data["prompts"][0]["text"] += " Paint it red."
    bad_lib = PromptLibrary.from_dict(data)
    red = dict(rows[0], answer_text="red", question="What color is the circle?",
               expected_family=data["prompts"][0]["family"])
    assert any("edit prompt" in p for p in check_manifest([red], bad_lib)[red["id"]])


def test_build_refuses_a_leaking_sandbox(tmp_path, monkeypatch):
    import g2u.sandbox.build as build

    monkeypatch.setattr(build, "check_manifest", lambda rows: {"sandbox-00000": ["the question names it"]})
    with pytest.raises(LeakError, match="leak"):
        build.build_sandbox(tmp_path / "sb", 3)
    assert not (tmp_path / "sb" / MANIFEST).exists()


def test_ask_refuses_an_impossible_kind():
    scene = draw_scene(random.Random(0))
    while len(scene.objects) != 1:
        scene = draw_scene(random.Random(len(scene.objects) * 7 + 1))
    with pytest.raises(ValueError, match="impossible"):
        ask(scene, random.Random(0), "larger")


def test_wilson_interval_and_summary():
    low, high = wilson(8, 10)
    assert 0.49 < low < 0.8 < high < 0.95
    records = []
    for i in range(40):
        for cond, ok in (("clean", True), ("degraded", i % 2 == 0), ("g2u_oracle", i % 4 != 1)):
            records.append({"id": str(i), "condition": cond, "degradation": "blur" if i < 20 else "crop",
                            "severity": 1 + i % 3, "category": "count", "correct": ok})
    summary = summarise(records, ("clean", "degraded", "g2u_oracle"))
    table = summary["table"]
    assert table["all"]["clean"]["acc"] == 1.0 and table["all"]["degraded"]["acc"] == 0.5
    assert table["all"]["g2u_oracle"]["acc"] == 0.75 and table["blur"]["degraded"]["n"] == 20
    assert table["family:extension"]["clean"]["n"] == 20 and table["question:count"]["clean"]["n"] == 40
    gain = summary["oracle_gain"]
    assert gain["gain"] == pytest.approx(0.25) and gain["low"] < 0.25 < gain["high"]
    assert gain["recovered_share"] == pytest.approx(0.5)
    text = format_table(summary, ("clean", "degraded", "g2u_oracle"))
    assert "| blur/2 |" in text and "+25.0 points" in text and "50% of the clean−degraded gap" in text


def test_cli_commands_build_a_sandbox(tmp_path, capsys):
    from g2u.sandbox.cli import add_commands, add_demo_train

    parser = argparse.ArgumentParser(prog="g2u")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    add_demo_train(sub.add_parser("demo").add_subparsers(dest="demo_command", required=True))
    args = parser.parse_args(["sandbox", "build", str(tmp_path / "sb"), "--n", "5", "--seed", "1"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 5
    assert len(load_dataset(tmp_path / "sb")) == 5
    assert parser.parse_args(["demo", "train", str(tmp_path / "ck"), "--steps", "3"]).steps == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["sandbox", "build", str(tmp_path / "x"), "--n", "0"])


def test_report_pairs_conditions_per_sample(demo_root, tmp_path):
    """replace with the oracle thought sends [clean Î, q], exactly what baseline on the clean image
    sends: their answers must agree sample by sample (a pairing or ordering bug breaks this)."""
    from g2u.sandbox.report import ReportConfig, run_report

    build_sandbox(tmp_path / "sb", N_CELLS, seed=5)
    (tmp_path / "ck").mkdir()
    import shutil

    shutil.copytree(demo_root / "qwen_image_edit", tmp_path / "ck", dirs_exist_ok=True)
    (tmp_path / "ck" / "g2u_trained.json").write_text("{}")  # use the random demo as the answerer
    config = ReportConfig(n=N_CELLS, batch_size=8, conditions=("clean", "degraded", "replace_oracle"))
    summary = run_report(tmp_path / "out", config, sandbox=tmp_path / "sb", checkpoint=tmp_path / "ck",
                         log=lambda m: None)
    records = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    by = {(r["id"], r["condition"]): r["prediction"] for r in records}
    ids = {r["id"] for r in records}
    assert len(ids) == N_CELLS and len(records) == 3 * N_CELLS
    assert all(by[(i, "clean")] == by[(i, "replace_oracle")] for i in ids)
    table = summary["table"]["all"]
    assert table["clean"]["acc"] == table["replace_oracle"]["acc"]
    assert (tmp_path / "out" / "table.md").read_text().startswith("| row | n |")


def test_fidelity_gain_regression_and_dose_response():
    """Thoughts closer to the clean scene gain more: a planted positive slope is found, a flat one is not."""
    from g2u.sandbox.report import fidelity_gain

    records = []
    for i in range(200):
        records.append({"id": str(i), "condition": "degraded", "degradation": "blur", "severity": 1,
                        "category": "count", "correct": False})
        for cond, ssim in (("g2u_blend_25", 0.3), ("g2u_blend_75", 0.8), ("g2u_oracle", 1.0)):
            records.append({"id": str(i), "condition": cond, "degradation": "blur", "severity": 1,
                            "category": "count", "correct": (i % 10) < 10 * ssim - 2, "ssim": ssim, "psnr": 20 * ssim})
    fit = fidelity_gain(records, "ssim")
    assert fit["slope"] > 0 and fit["p"] < 1e-6 and fit["n"] == 600
    flat = [dict(r, correct=(int(r["id"]) % 2 == 0)) if r["condition"] != "degraded" else r for r in records]
    assert fidelity_gain(flat, "ssim")["p"] > 0.5
    summary = summarise(records, ("degraded", "g2u_blend_25", "g2u_blend_75", "g2u_oracle"))
    gains = [d["gain"] for d in summary["dose_response"]]
    assert gains == sorted(gains) and gains[-1] == pytest.approx(0.8)


def test_aligned_degraded_puts_a_crop_back_in_place():
    from g2u.sandbox.report import aligned_degraded

    s = next(draw_sample(7, i) for i in range(50) if draw_sample(7, i).degradation == "crop")
    canvas = aligned_degraded(s.degraded, s.params, s.clean.size)
    assert canvas.size == s.clean.size
    diff = np.abs(np.asarray(canvas, dtype=int) - np.asarray(s.clean, dtype=int)).sum(axis=2)
    assert (diff == 0).mean() > 0.5  # the kept part lines up with the clean scene pixel for pixel
