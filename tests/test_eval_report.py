"""Evaluation report maths on hand-made records: accuracies, paired deltas, fidelity→gain fit, gallery."""

from __future__ import annotations

import math

import pytest

from g2u.eval.report import accuracy_table, compute_metrics, fidelity_gain_correlation, paired_gains, write_gallery


def _rec(sid, mode, correct, category="c1", family=None, ssim=None):
    return {"id": sid, "mode": mode, "correct": correct, "category": category, "prediction": "x",
            "edit": {"family": family, "prompt": "p"} if family else None,
            "fidelity": {"ssim": ssim, "psnr": 20.0} if ssim is not None else None,
            "timings_ms": {"understand": 10.0 if mode == "baseline" else 30.0}}


RECORDS = [
    _rec("1", "baseline", False, "c1"), _rec("1", "g2u", True, "c1", "enhancement", 0.9),
    _rec("2", "baseline", True, "c1"), _rec("2", "g2u", True, "c1", "enhancement", 0.8),
    _rec("3", "baseline", True, "c2"), _rec("3", "g2u", False, "c2", "extension", 0.2),
    _rec("4", "baseline", False, "c2"), _rec("4", "g2u", False, "c2", "extension", 0.3),
]


def test_accuracy_per_mode_and_category():
    acc = accuracy_table(RECORDS)
    assert acc["baseline"] == {"overall": 0.5, "c1": 0.5, "c2": 0.5}
    assert acc["g2u"] == {"overall": 0.5, "c1": 1.0, "c2": 0.0}


def test_paired_gains():
    gains = {g["id"]: g["gain"] for g in paired_gains(RECORDS)}
    assert gains == {"1": 1, "2": 0, "3": -1, "4": 0}


def test_deltas_overall_category_family():
    flat = compute_metrics(RECORDS)["flat"]
    assert flat["delta/g2u/overall"] == 0.0
    assert flat["delta/g2u/category/c1"] == 0.5 and flat["delta/g2u/category/c2"] == -0.5
    assert flat["delta/g2u/family/enhancement"] == 0.5 and flat["delta/g2u/family/extension"] == -0.5
    assert flat["time_ms/g2u/understand/p50"] == 30.0


def test_fidelity_gain_correlation_matches_hand_computation():
    # gains (1, 0, -1, 0) against ssim (0.9, 0.8, 0.2, 0.3): Pearson r computed by hand.
    xs, ys = [0.9, 0.8, 0.2, 0.3], [1, 0, -1, 0]
    mx, my = sum(xs) / 4, sum(ys) / 4
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    corr = fidelity_gain_correlation(paired_gains(RECORDS))
    assert corr["r2"] == pytest.approx(sxy**2 / (sxx * syy))
    assert corr["n"] == 4 and 0 < corr["p"] < 1 and corr["slope"] > 0


def test_correlation_undefined_without_variation():
    same = [{"ssim": 0.5, "gain": 0}] * 5
    assert math.isnan(fidelity_gain_correlation(same)["r2"])


def test_gallery_escapes_text_and_embeds_its_images(tmp_path):
    from PIL import Image

    (tmp_path / "thoughts").mkdir()
    (tmp_path / "originals").mkdir()
    Image.new("RGB", (600, 300), (10, 200, 30)).save(tmp_path / "thoughts" / "1.png")
    Image.new("RGB", (64, 64), (200, 10, 30)).save(tmp_path / "originals" / "1.jpg")
    recs = [dict(r, question="<script>alert(1)</script>", answer="A", options=["x", "y"]) for r in RECORDS]
    recs[1]["thought_path"] = "thoughts/1.png"
    page = write_gallery(recs, {"1": "originals/1.jpg"}, tmp_path / "gallery.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    # both pictures are inside the page (MLflow shows HTML artifacts from a blob URL: no relative links)
    assert page.count("src='data:image/jpeg;base64,") == 2 and "src='thoughts/" not in page


def test_compute_metrics_adds_the_harness_aggregates_where_records_carry_groups():
    recs = [  # MMBench circular: question 7 has two copies, one wrong
        {"id": "7", "group": "7", "mode": "g2u", "answer_kind": "mcq", "correct": True, "category": "c"},
        {"id": "1000007", "group": "7", "mode": "g2u", "answer_kind": "mcq", "correct": False, "category": "c"},
        {"id": "8", "group": "8", "mode": "g2u", "answer_kind": "mcq", "correct": True, "category": "c"},
        # MME: two questions on one image, both right
        {"id": "m1", "group": "img", "mode": "g2u", "answer_kind": "yesno", "correct": True, "category": "color"},
        {"id": "m2", "group": "img", "mode": "g2u", "answer_kind": "yesno", "correct": True, "category": "color"},
    ]
    flat = compute_metrics(recs)["flat"]
    assert flat["circular/g2u/acc"] == 0.5
    assert flat["mme/g2u/score"] == 200.0 and flat["mme/g2u/acc_plus"] == 1.0
    assert flat["acc/g2u/overall"] == 0.8 and flat["acc/g2u/category/color"] == 1.0
