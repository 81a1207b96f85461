"""The paper's tables: layout (on synthetic cells), cells and intervals (on synthetic records), the modes
from g2u.modes, judges never mixed in one table, and one small `mlflow run . -e paper_table` on the demo."""

from __future__ import annotations

import json
import math

import pytest

from g2u.errors import InputError
from g2u.eval.paper_table import (
    build_tables,
    cell,
    column_for,
    flat_metrics,
    load_spec,
    to_markdown,
    wilson_interval,
)
from g2u.modes import MODES, modes_for
from mlflow_project.paper_table import table_modes

EXACT = {"answer_judge": "exact_matching", "judge": "none"}


def _cell(value, n=100, lo=None, hi=None, judges=EXACT, protocol="vlmevalkit@v1"):
    return {"value": value, "ci": [lo if lo is not None else value - 2, hi if hi is not None else value + 2], "n": n,
            "metric": "acc/baseline/overall", "interval": "Wilson 95 % over 100 questions", "n_errors": 0,
            "protocol": protocol, "partial": False, **judges}


def _run(benchmark, values: dict, judges=EXACT):
    return {"benchmark": benchmark, "protocol": "vlmevalkit@v1", "judges": judges,
            "cells": {m: _cell(v, judges=judges) for m, v in values.items()}}


def test_paper_numbers_are_the_published_ones():
    paper = {c["name"]: c["paper"] for c in load_spec()["benchmarks"]}
    assert paper == {"MMB": {"baseline": 83.7, "g2u": 85.5}, "MME-P": {"baseline": 1686, "g2u": 1662},
                     "MMVet": {"baseline": 62.7, "g2u": 62.1}, "MMStar": {"baseline": 66.7, "g2u": 67.9},
                     "HallBench": {"baseline": 50.9, "g2u": 55.1}, "KiVA": {"baseline": 32.9, "g2u": 35.2}}
    assert [column_for(b)["name"] for b in ("data/MMBench_DEV_EN.tsv", "MME.tsv", "mm-vet/", "MMStar.tsv",
                                            "HallusionBench.tsv", "../shared/data/kiva", "tiny.jsonl")] == [
        "MMB", "MME-P", "MMVet", "MMStar", "HallBench", "KiVA", "tiny"]


def test_main_and_ablation_tables_are_laid_out_as_the_papers():
    modes = {"baseline": 80.0, "g2u": 83.0, "replace": 70.0, "textual_cot": 79.0}
    runs = [_run("KiVA", {"baseline": 30.0, "g2u": 36.0}), _run("MMBench_DEV_EN.tsv", modes),
            _run("MME.tsv", {"baseline": 1600.0, "g2u": 1650.0})]
    [table] = build_tables(runs)
    assert table["columns"] == ["MMB", "MME-P", "KiVA"]  # the paper's column order, whatever the given order
    assert table["modes"] == [m for m in MODES if m in modes]  # ablation rows in g2u.modes order
    md = to_markdown([table])
    lines = md.splitlines()
    main = lines[lines.index(next(x for x in lines if x.startswith("### Main table"))) + 2:]
    assert main[0] == "| | MMB | MME-P | KiVA |"
    assert main[2] == ("| baseline (ours) | 80.0 [78.0, 82.0] n=100 | 1600 [1598, 1602] n=100 "
                       "| 30.0 [28.0, 32.0] n=100 |")
    assert main[3] == "| baseline (paper) | 83.7 | 1686 | 32.9 |"
    assert main[5] == "| G→U (paper) | 85.5 | 1662 | 35.2 |"
    assert main[6] == "| Δ G→U − baseline (ours) | +3.0 | +50 | +6.0 |"
    assert main[7] == "| Δ G→U − baseline (paper) | +1.8 | -24 | +2.3 |"
    ablation = [x for x in lines if x.startswith("| replace:")]
    assert ablation == [f"| replace: {MODES['replace'].help} | 70.0 [68.0, 72.0] n=100 (Δ -10.0) | — | — |"]
    assert "protocol `vlmevalkit@v1`, answer judge `exact_matching`, open-answer judge `none`" in md
    flat = flat_metrics([table])
    assert flat["paper_table/MMB/g2u/value"] == 83.0 and flat["paper_table/MMB/g2u/paper"] == 85.5
    assert flat["paper_table/KiVA/baseline/ci_low"] == 28.0 and flat["paper_table/MME-P/g2u/n"] == 100
    json.dumps(table)  # the JSON artifact


def test_numbers_from_different_judges_go_to_separate_tables():
    judged = {"answer_judge": "openai:gpt-4o-mini@api.openai.com", "judge": "none"}
    tables = build_tables([_run("MMStar.tsv", {"baseline": 60.0, "g2u": 61.0}),
                           _run("MMBench.tsv", {"baseline": 80.0, "g2u": 81.0}, judges=judged)])
    assert [(t["answer_judge"], t["columns"]) for t in tables] == [("exact_matching", ["MMStar"]),
                                                                  (judged["answer_judge"], ["MMB"])]
    md = to_markdown(tables)
    assert md.startswith("2 tables: these runs were made with different protocols or judges")
    assert md.count("### Main table") == 2


def _mcq(sid, mode, right, group=None, error=False):
    r = {"id": sid, "mode": mode, "answer_kind": "mcq", "answer": "A", "options": ["x", "y"], "category": "c",
         "prediction": "A" if right else "B", "group": group}
    if error:
        r["error"] = {"reason": "boom"}
    return r


def test_cells_count_failures_as_misses_with_wilson_intervals():
    records = [_mcq(f"q{i}", "baseline", i < 6, error=i == 9) for i in range(10)]
    c = cell(records, "MMStar.tsv", "baseline", "vlmevalkit@v1", EXACT)
    assert c["value"] == pytest.approx(60.0) and c["n"] == 10 and c["n_errors"] == 1
    low, high = wilson_interval(0.6, 10)
    assert c["ci"] == pytest.approx([100 * low, 100 * high]) and 30 < c["ci"][0] < 60 < c["ci"][1]
    # MMBench: n is the number of circular groups, a group right only when every copy is
    circ = [_mcq("1", "baseline", True, "1"), _mcq("1000001", "baseline", False, "1"),
            _mcq("2", "baseline", True, "2"), _mcq("1000002", "baseline", True, "2")]
    c = cell(circ, "MMBench_DEV_EN.tsv", "baseline", "vlmevalkit@v1", EXACT)
    assert c["value"] == 50.0 and c["n"] == 2 and c["metric"] == "circular/baseline/acc"
    assert cell(records, "MMStar.tsv", "g2u", "vlmevalkit@v1", EXACT) is None  # no such mode in the run


def _mme(cat, image, right):
    return {"id": f"{image}-{right}", "mode": "baseline", "answer_kind": "yesno", "answer": "yes",
            "prediction": "yes" if right else "no", "category": cat, "group": image}


def test_mme_sums_get_a_stratified_bootstrap_and_a_subset_is_partial():
    records = [_mme(cat, f"{cat}{i}", right) for cat in ("color", "count") for i in range(6) for right in (True, i < 3)]
    c = cell(records, "MME.tsv", "baseline", "vlmevalkit@v1", EXACT, resamples=200)
    # per category: acc 9/12, acc+ 3/6 -> 125 points; two categories of the 10: a partial perception sum
    assert c["metric"] == "mme/baseline/perception_partial" and c["partial"] and c["missing"] == 8
    assert c["value"] == pytest.approx(250.0) and c["ci"][0] < 250.0 < c["ci"][1]
    assert "bootstrap" in c["interval"] and "partial: 8 categories missing" in to_markdown(
        build_tables([{"benchmark": "MME.tsv", "protocol": "p", "judges": EXACT, "cells": {"baseline": c}}]))
    again = cell(records, "MME.tsv", "baseline", "vlmevalkit@v1", EXACT, resamples=200)
    assert again["ci"] == c["ci"]  # seeded: reruns agree


def test_hallusionbench_cell_is_the_mean_of_its_three_accuracies():
    def yn(sid, right, fig, q):
        return {"id": sid, "mode": "g2u", "answer_kind": "yesno", "answer": "yes",
                "prediction": "yes" if right else "no", "category": "VD", "figure_group": fig, "question_group": q,
                "group": "x"}
    records = [yn("a", True, "f0", "q0"), yn("b", False, "f0", "q1"), yn("c", True, "f1", "q0"),
               yn("d", True, "f1", "q2")]
    c = cell(records, "HallusionBench.tsv", "g2u", "vlmevalkit@v1", EXACT, resamples=50)
    parts = c["parts"]  # aAcc 3/4, fAcc 1/2 (f1), qAcc 2/3 (q0, q2)
    assert parts == pytest.approx({"aAcc": 75.0, "fAcc": 50.0, "qAcc": 200 / 3})
    assert c["value"] == pytest.approx(sum(parts.values()) / 3) and not math.isnan(c["ci"][0])


def test_table_modes_come_from_g2u_modes():
    assert table_modes("qwen_image_edit") == list(modes_for("qwen_image_edit"))
    assert "vae_concat" in table_modes("bagel") and "vae_concat" not in table_modes("qwen_image_edit")
    assert table_modes(None) == [m for m, spec in MODES.items() if spec.backends is None]
    assert table_modes("qwen_image_edit", "g2u") == ["baseline", "g2u"]  # baseline always: Δ is against it
    with pytest.raises(InputError) as err:
        table_modes("qwen_image_edit", "vae_concat")
    assert err.value.field == "modes"


@pytest.mark.e2e
def test_paper_table_entry_point_on_the_demo(tmp_path, monkeypatch):
    """One tiny benchmark (limit 2, steps 2, short answers) in every mode the demo's backend offers."""
    import os

    import mlflow

    from tests.entry.test_mlflow_project import FAST, VENV_BIN, finished_runs, make_benchmark, mlflow_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    star = make_benchmark(tmp_path / "star", n=2).rename(tmp_path / "star" / "MMStar.jsonl")
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "G2U_OUTPUT_DIR": str(tmp_path / "outputs")}
    mlflow_run(env, "-e", "paper_table", "-P", f"benchmarks={star}", "-P", "limit=2", "-P", "max_new_tokens=4",
               "-P", "reasoning_tokens=4", *FAST)
    runs = finished_runs()
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    [child] = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    modes = list(modes_for("qwen_image_edit"))  # the demo's backend
    assert child.data.params["modes"] == ",".join(modes) and parent.data.params["table_modes"] == ",".join(modes)
    metrics = parent.data.metrics
    table = parent.data.tags["mlflow.note.content"]
    assert "| | MMStar |" in table and "| baseline (paper) | 66.7 |" in table and "| G→U (paper) | 67.9 |" in table
    for mode in modes:
        assert metrics[f"paper_table/MMStar/{mode}/n"] == 2
        assert 0 <= metrics[f"paper_table/MMStar/{mode}/ci_low"] <= metrics[f"paper_table/MMStar/{mode}/ci_high"] <= 100
        assert f"| {mode}: " in table  # the ablation table's row
    assert metrics["paper_table/MMStar/g2u/value"] == pytest.approx(100 * child.data.metrics["acc/g2u/overall"])
    assert metrics["paper_table/MMStar/baseline/paper"] == 66.7
    assert {"paper_table.md", "paper_table.json"} <= {a.path for a in mlflow.MlflowClient().list_artifacts(
        parent.info.run_id)}
