"""Evaluation report maths on hand-made records: accuracies, paired deltas, fidelity→gain fit, gallery."""

from __future__ import annotations

import math

import pytest

from g2u.eval.report import (
    accuracy_table,
    compute_metrics,
    fidelity_gain_cells,
    fidelity_gain_correlation,
    paired_gains,
    plot_fidelity_gain,
    transfer_markdown,
    write_gallery,
)


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
    # one of MME's ten perception categories: a partial sum, never the total; no cognition category at all
    assert "mme/g2u/perception" not in flat and "mme/g2u/cognition" not in flat
    assert flat["mme/g2u/perception_partial"] == 200.0 and flat["mme/g2u/perception_missing"] == 9
    assert flat["mme/g2u/category/color/acc_plus"] == 1.0
    assert flat["acc/g2u/overall"] == 0.8 and flat["acc/g2u/category/color"] == 1.0


def _mcq(sid, mode, prediction, answer="B", error=None, **kw):
    rec = {"id": sid, "mode": mode, "prediction": prediction, "answer": answer, "options": ["cat", "dog", "bird"],
           "answer_kind": "mcq", "category": "c", "correct": False, **kw}
    if error:
        rec["error"] = {"field": "prompt_name", "reason": error}
    return rec


def test_a_failed_prediction_is_a_miss_in_the_headline_and_left_out_in_excl_errors():
    recs = [_mcq("1", "baseline", "A"), _mcq("1", "g2u", "B"),
            _mcq("2", "baseline", "B"), _mcq("2", "g2u", "", error="leaks the answer"),
            _mcq("3", "baseline", "B"), _mcq("3", "g2u", "B")]
    metrics = compute_metrics(recs)
    flat = metrics["flat"]
    assert flat["acc/g2u/overall"] == pytest.approx(2 / 3)       # as VLMEvalKit: the failure is a miss
    assert flat["excl_errors/acc/g2u/overall"] == 1.0           # 2 of 2 answered
    assert flat["acc/baseline/overall"] == pytest.approx(2 / 3)
    assert flat["n_scored/g2u"] == 2 and flat["n_errors/g2u"] == 1 and flat["n_errors/baseline"] == 0
    assert flat["n_scored"] == 5 and flat["n_errors"] == 1
    assert flat["delta/g2u/n_paired"] == 3 and flat["delta/g2u/overall"] == 0.0           # +1, −1, 0
    assert flat["excl_errors/delta/g2u/n_paired"] == 2 and flat["excl_errors/delta/g2u/overall"] == 0.5


def test_primary_accuracy_uses_the_reference_rules_and_lenient_is_logged_beside():
    recs = [_mcq("1", "g2u", "B or C"), _mcq("2", "g2u", "B"), _mcq("3", "g2u", "b")]
    flat = compute_metrics(recs)["flat"]
    assert flat["acc/g2u/overall"] == pytest.approx(1 / 3)
    assert flat["lenient/acc/g2u/overall"] == 1.0


def test_a_circular_group_with_an_errored_copy_is_wrong_and_l2_is_reported():
    recs = [_mcq("7", "g2u", "B", group="7", l2_category="perception"), _mcq("1000007", "g2u", "B", group="7"),
            _mcq("8", "g2u", "B", group="8", l2_category="perception"),
            _mcq("1000008", "g2u", "", group="8", error="boom"),
            _mcq("9", "g2u", "A", group="9", l2_category="reasoning"), _mcq("1000009", "g2u", "B", group="9")]
    flat = compute_metrics(recs)["flat"]
    assert flat["circular/g2u/acc"] == pytest.approx(1 / 3)    # 7 right; 8 (an errored copy) and 9 wrong
    assert flat["excl_errors/circular/g2u/acc"] == 0.5          # 8 left out: 7 right, 9 wrong
    assert flat["circular/g2u/l2/perception"] == 0.5 and flat["circular/g2u/l2/reasoning"] == 0.0
    assert flat["lenient/circular/g2u/acc"] == pytest.approx(1 / 3)


def test_hallusionbench_figure_with_an_errored_question_is_wrong():
    """The issue's case: with the errors left out, fAcc judged the figure on its one answered question (0.5
    overall); the reference gives that figure 0."""
    def yn(sid, pred, fig, error=False):
        rec = {"id": sid, "mode": "g2u", "prediction": pred, "answer": "yes", "answer_kind": "yesno",
               "category": "VD", "figure_group": fig, "question_group": sid, "group": "x"}
        return dict(rec, error={"reason": "boom"}) if error else rec
    recs = [yn("a", "Yes", "chart/0/0"), yn("b", "", "chart/0/0", error=True), yn("c", "No", "chart/0/1")]
    flat = compute_metrics(recs)["flat"]
    assert flat["hallusionbench/g2u/fAcc"] == 0.0 and flat["hallusionbench/g2u/aAcc"] == pytest.approx(1 / 3)
    assert flat["excl_errors/hallusionbench/g2u/fAcc"] == 0.5


def test_hallusionbench_and_mmvet_metrics_from_records():
    def yn(sid, pred, answer, fig, q, cat="VD"):
        return {"id": sid, "mode": "g2u", "prediction": pred, "answer": answer, "answer_kind": "yesno",
                "category": cat, "figure_group": fig, "question_group": q, "group": "x"}
    recs = [yn("a", "Yes", "yes", "chart/0/0", "chart/0/0"), yn("b", "**No**", "no", "chart/0/0", "chart/0/1"),
            yn("c", "No", "no", "table/0/0", "table/0/0", "VS")]
    flat = compute_metrics(recs)["flat"]
    assert flat["hallusionbench/g2u/aAcc"] == pytest.approx(2 / 3)
    assert flat["hallusionbench/g2u/fAcc"] == 0.5 and flat["hallusionbench/g2u/l2/table/fAcc"] == 1.0
    assert flat["lenient/hallusionbench/g2u/aAcc"] == 1.0     # "**No**" is read by the lenient rule only
    vet = [{"id": "1", "mode": "g2u", "prediction": "x = -1", "answer": "-1<AND>-5", "answer_kind": "open",
            "category": "ocr,math"},
           {"id": "2", "mode": "g2u", "prediction": "fine", "answer": "yes", "answer_kind": "open",
            "category": "rec", "judge": 0.8}]
    flat = compute_metrics(vet)["flat"]
    assert flat["mmvet/g2u/overall"] == pytest.approx(0.65)
    assert flat["mmvet/g2u/capability/math"] == 0.5 and flat["mmvet/g2u/capability/rec"] == 0.8


def _thought(sid, mode, right, cat, family, name, viescore=None, ssim=0.5):
    judged = {"overall": viescore, "semantic_consistency": viescore, "perceptual_quality": viescore,
              "reason": f"reason {sid}"} if viescore is not None else None
    return {"id": sid, "mode": mode, "correct": right, "category": cat, "prediction": "x",
            "edit": {"family": family, "prompt_name": name, "prompt": "p"} if mode == "g2u" else None,
            "fidelity": {"ssim": ssim, "psnr": 20.0, "judged": judged} if mode == "g2u" else None}


def test_transfer_table_and_cell_regression_use_the_judged_fidelity():
    recs = []
    plan = [("1", "ocr", "enhancement", "denoise", 8.0, 1), ("2", "ocr", "enhancement", "denoise", 7.0, 1),
            ("3", "ocr", "extension", "outpaint", 2.0, -1), ("4", "count", "extension", "outpaint", 3.0, 0),
            ("5", "count", "enhancement", "denoise", 6.0, 1), ("6", "count", "extension", "zoom", 1.0, -1)]
    for sid, cat, fam, name, vs, gain in plan:
        recs += [_thought(sid, "baseline", gain < 0, cat, None, None),
                 _thought(sid, "g2u", gain > 0, cat, fam, name, vs)]
    metrics = compute_metrics(recs)
    assert metrics["transfer"]["g2u"] == {"count": {"enhancement": 1.0, "extension": -0.5},
                                          "ocr": {"enhancement": 1.0, "extension": -1.0}}
    assert metrics["flat"]["transfer/g2u/extension/category/count"] == -0.5
    info = metrics["fidelity_gain"]["g2u"]
    assert info["metric"] == "viescore" and info["paper"] == {"r2": 0.27, "p": "<0.01"}
    cells = fidelity_gain_cells(metrics["gains"]["g2u"], "viescore")
    # cells: denoise×ocr (7.5, 1), outpaint×ocr (2, -1), outpaint×count (3, 0), denoise×count (6, 1), zoom×count (1, -1)
    assert cells["fit"]["n"] == 5 and cells["cells"]["denoise × ocr"] == {"fidelity": 7.5, "gain": 1.0, "n": 2}
    assert metrics["flat"]["fidelity_gain/g2u/cells/r2"] == pytest.approx(cells["fit"]["r2"])
    assert "| count | +100.0 | -50.0 |" in transfer_markdown(metrics)


def test_plot_and_gallery_show_judged_scores_and_reasons(tmp_path):
    recs = [_thought("1", "baseline", False, "ocr", None, None), _thought("1", "g2u", True, "ocr", "enhancement",
                                                                          "denoise", 8.0),
            _thought("2", "baseline", True, "ocr", None, None), _thought("2", "g2u", False, "ocr", "extension",
                                                                         "outpaint", 2.0),
            _thought("3", "baseline", False, "ocr", None, None), _thought("3", "g2u", False, "ocr", "extension",
                                                                          "zoom", 5.0)]
    metrics = compute_metrics(recs)
    assert plot_fidelity_gain(metrics, tmp_path / "fg.png").is_file()
    page = write_gallery(recs, {}, tmp_path / "g.html").read_text()
    assert "VIEScore <b>8.00</b>" in page and "reason 2" in page and "edit magnitude: SSIM 0.500" in page


def test_mme_total_only_with_every_category_and_errors_counted_as_misses():
    from g2u.eval.scoring import MME_PERCEPTION

    def yn(cat, n, pred, error=False):
        rec = {"id": f"{cat}{n}", "group": f"{cat}-img", "mode": "g2u", "answer_kind": "yesno", "answer": "yes",
               "prediction": pred, "category": cat}
        return dict(rec, error={"reason": "boom"}) if error else rec
    recs = [r for cat in MME_PERCEPTION for r in (yn(cat, 0, "Yes"), yn(cat, 1, "Yes"))]
    recs[-1] = yn("scene", 1, "", error=True)   # scene: one of its two questions failed
    flat = compute_metrics(recs)["flat"]
    # nine categories 200 each; scene acc 0.5, acc+ 0 → 50
    assert flat["mme/g2u/perception"] == 9 * 200 + 50 and flat["n_errors/g2u"] == 1
    # errors excluded, scene's image is left out whole: scene is absent, so the sum is partial
    assert "excl_errors/mme/g2u/perception" not in flat
    assert flat["excl_errors/mme/g2u/perception_partial"] == 9 * 200
    assert flat["excl_errors/mme/g2u/perception_missing"] == 1
