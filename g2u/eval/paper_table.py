"""The paper's tables from our runs: the main table (baseline and G→U per benchmark, the paper's published
numbers beside ours) and the ablation table (every mode the backend offers), each cell with its n and 95 %
interval, each table made by one protocol and one set of judges (runs read by other judges go to a table of
their own: numbers from different judges are never compared in one).

Columns, metrics and the paper's numbers are data (``g2u/data/paper_table.yaml``). Intervals:
- a proportion (MMBench circular groups, MMStar / KiVA questions): Wilson's score interval
  (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``), failed predictions counted as misses;
- a sum or a mean of group scores (MME perception, HallusionBench's mean of aAcc/fAcc/qAcc, MM-Vet's 0–1
  grades): a percentile bootstrap over the benchmark's groups (MME: the questions of one image; HallusionBench:
  one figure; MM-Vet: one sample), resampled within each category so every category stays in the sum,
  the metric recomputed by the same scorer as the run's (``report.benchmark_scores``).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from g2u.eval.report import accuracy_table, benchmark_scores
from g2u.modes import MODES

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "paper_table.yaml"
BOOTSTRAP_RESAMPLES = 1000
MAIN_MODES = ("baseline", "g2u")
LABELS = {"baseline": "baseline", "g2u": "G→U"}


@functools.lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def column_for(benchmark: str) -> dict[str, Any]:
    """The column a benchmark file or folder fills: the first whose ``match`` is in its name, else a
    column of its own named after it (its accuracy)."""
    spec = load_spec()
    name = Path(str(benchmark).rstrip("/")).stem
    for column in spec["benchmarks"]:
        if any(m in name.lower() for m in column["match"]):
            return column
    return {**spec["other"], "name": name, "paper": {}}


def _flat(records: Sequence[dict]) -> dict[str, float]:
    """The run's own numbers for these records (errors as misses), plus HallusionBench's mean score."""
    flat = dict(benchmark_scores(records))
    for mode, row in accuracy_table(records).items():
        flat[f"acc/{mode}/overall"] = row["overall"]
    for key in [k for k in flat if k.startswith("hallusionbench/") and k.count("/") == 2 and k.endswith("/aAcc")]:
        base = key[: -len("/aAcc")]
        flat[f"{base}/score"] = sum(flat[f"{base}/{m}"] for m in ("aAcc", "fAcc", "qAcc")) / 3
    return flat


def _units(records: Sequence[dict], unit: str) -> int:
    if unit == "circular_group":
        return sum(1 for r in records if str(r["id"]) == str(r.get("group") or r["id"]))
    return len(records)


def _cluster(record: dict, column: str) -> str:
    if column == "HallBench" or record.get("figure_group"):
        return str(record.get("figure_group") or record["id"])
    return str(record.get("group") or record["id"])


def _relabel(record: dict, draw: int) -> dict:
    """A resampled copy is a group of its own: its ids and group keys carry the draw."""
    out = dict(record)
    for key in ("id", "group", "figure_group", "question_group"):
        if out.get(key) is not None:
            out[key] = f"{out[key]}#{draw}"
    return out


def bootstrap_interval(records: Sequence[dict], metric: str, column: str, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % interval of ``metric`` over resamples of the records' groups within each category."""
    strata: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        strata[str(r.get("category") or "all")][_cluster(r, column)].append(r)
    groups = {cat: list(clusters.values()) for cat, clusters in strata.items()}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        sample, draw = [], 0
        for clusters in groups.values():
            for i in rng.integers(0, len(clusters), len(clusters)):
                draw += 1
                sample.extend(_relabel(r, draw) for r in clusters[i])
        value = _flat(sample).get(metric)
        if value is not None and not math.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def wilson_interval(value: float, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0 or math.isnan(value):
        return float("nan"), float("nan")
    ci = binomtest(round(value * n), n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def cell(records: Sequence[dict], benchmark: str, mode: str, protocol: str, judges: dict[str, str],
         resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any] | None:
    """One table cell: the benchmark's headline for ``mode`` (scaled as printed), its 95 % interval, n
    (units of the interval: questions or circular groups; MME and the bootstrap columns: questions), the
    metric it is, and the protocol and judges that made it. None when the records give no such number."""
    column = column_for(benchmark)
    rows = [r for r in records if r["mode"] == mode and not r.get("no_gold")]
    flat = _flat(rows)
    metric = next((m.format(mode=mode) for m in column["metrics"] if m.format(mode=mode) in flat), None)
    if metric is None or math.isnan(flat[metric]):
        return None
    scale = column["scale"]
    if column["interval"] == "wilson":
        n = _units([r for r in rows if r.get("answer_kind") == "mcq"] if column.get("unit") == "circular_group"
                   else rows, column.get("unit", "question"))
        low, high = wilson_interval(flat[metric], n)
        how = f"Wilson 95 % over {n} {'circular groups' if column.get('unit') == 'circular_group' else 'questions'}"
    else:
        n = len(rows)
        low, high = bootstrap_interval(rows, metric, column["name"], resamples)
        how = f"bootstrap 95 % ({resamples} resamples of groups within categories)"
    out = {"value": flat[metric] * scale, "ci": [low * scale, high * scale], "n": n, "metric": metric,
           "interval": how, "n_errors": sum(1 for r in rows if r.get("error")), "protocol": protocol,
           "answer_judge": judges.get("answer_judge", "exact_matching"), "judge": judges.get("judge", "none"),
           "partial": metric.endswith("_partial")}
    if out["partial"]:
        out["missing"] = flat.get(metric.replace("_partial", "_missing"))
    if column["name"] == "HallBench":
        out["parts"] = {m: flat[f"hallusionbench/{mode}/{m}"] * scale for m in ("aAcc", "fAcc", "qAcc")}
    return out


def table_modes(modes: Sequence[str]) -> list[str]:
    """The modes in ``g2u.modes.MODES`` order (the ablation table's rows)."""
    return [m for m in MODES if m in set(modes)]


def build_tables(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group runs (``{"benchmark", "protocol", "judges", "cells": {mode: cell}}``) into tables, one per
    (protocol, answer judge, open-answer judge): a table never holds numbers from two judges."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for run in runs:
        key = (run["protocol"], run["judges"].get("answer_judge", "exact_matching"), run["judges"].get("judge", "none"))
        groups.setdefault(key, []).append(run)
    tables = []
    for (protocol, answer_judge, judge), members in groups.items():
        columns, cells, paper = [], {}, {}
        for run in members:
            column = column_for(run["benchmark"])
            name = column["name"] if column["name"] not in cells else f"{column['name']} ({run['benchmark']})"
            columns.append(name)
            cells[name] = run["cells"]
            paper[name] = column.get("paper", {})
        order = {c["name"]: i for i, c in enumerate(load_spec()["benchmarks"])}
        columns.sort(key=lambda c: order.get(c, len(order)))
        modes = table_modes({m for run in members for m in run["cells"]})
        tables.append({"protocol": protocol, "answer_judge": answer_judge, "judge": judge, "columns": columns,
                       "modes": modes, "cells": cells, "paper": paper})
    return tables


def _num(value: float | None, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.0f}" if column.startswith("MME") else f"{value:.1f}"


def _cell_text(c: dict | None, column: str) -> str:
    if not c:
        return "—"
    text = f"{_num(c['value'], column)} [{_num(c['ci'][0], column)}, {_num(c['ci'][1], column)}] n={c['n']}"
    if c.get("partial"):
        text += f" (partial: {c.get('missing'):.0f} categories missing)"
    return text


def _delta(cells: dict, mode: str, column: str) -> str:
    a, b = cells.get(mode), cells.get("baseline")
    if not a or not b:
        return "—"
    return f"{a['value'] - b['value']:+.0f}" if column.startswith("MME") else f"{a['value'] - b['value']:+.1f}"


def to_markdown(tables: Sequence[dict[str, Any]]) -> str:
    """The main table (ours and the paper's, baseline and G→U, Δ) and the ablation table (every mode, Δ
    against baseline) of each (protocol, judges) group, with what each column's number and interval are."""
    spec = load_spec()
    out = []
    if len(tables) > 1:
        out.append(f"{len(tables)} tables: these runs were made with different protocols or judges, whose numbers "
                   "are not compared with each other.\n")
    for t in tables:
        cols = t["columns"]
        head = "| | " + " | ".join(cols) + " |\n|---" + "|---" * len(cols) + "|"
        out.append(f"### Main table — protocol `{t['protocol']}`, answer judge `{t['answer_judge']}`, "
                   f"open-answer judge `{t['judge']}`\n")
        out.append(head)
        for mode in MAIN_MODES:
            out.append(f"| {LABELS[mode]} (ours) | " + " | ".join(_cell_text(t["cells"][c].get(mode), c) for c in cols)
                       + " |")
            out.append(f"| {LABELS[mode]} (paper) | " + " | ".join(_num(t["paper"][c].get(mode), c) for c in cols)
                       + " |")
        out.append("| Δ G→U − baseline (ours) | " + " | ".join(_delta(t["cells"][c], "g2u", c) for c in cols) + " |")
        paper_delta = [_num(t["paper"][c]["g2u"] - t["paper"][c]["baseline"], c) if t["paper"][c] else "—"
                       for c in cols]
        out.append("| Δ G→U − baseline (paper) | " + " | ".join(p if p == "—" or p.startswith("-") else f"+{p}"
                                                              for p in paper_delta) + " |")
        out.append("")
        out.append(f"### Ablation table — protocol `{t['protocol']}`, answer judge `{t['answer_judge']}`, "
                   f"open-answer judge `{t['judge']}`\n")
        out.append("| mode | " + " | ".join(cols) + " |\n|---" + "|---" * len(cols) + "|")
        for mode in t["modes"]:
            cells = [_cell_text(t["cells"][c].get(mode), c) + ("" if mode == "baseline" or not t["cells"][c].get(mode)
                                                                 else f" (Δ {_delta(t['cells'][c], mode, c)})")
                     for c in cols]
            out.append(f"| {mode}: {MODES[mode].help} | " + " | ".join(cells) + " |")
        out.append("")
        notes = []
        for c in cols:
            mode, first = next(((m, v) for m, v in t["cells"][c].items() if v), (None, None))
            if first:
                notes.append(f"- {c}: `{first['metric'].replace(f'/{mode}/', '/MODE/')}`, {first['interval']}")
        out.extend(notes)
        if (t["protocol"].split("@")[0] != spec["protocol"]
                or t["answer_judge"] == "exact_matching" or t["judge"] == "none"):
            out.append(f"- The paper's numbers: {spec['source']}, protocol `{spec['protocol']}`, judges "
                       f"{spec['judges']['answer_judge']} (MCQ, yes/no) and {spec['judges']['judge']} (MM-Vet); "
                       "where ours differ, so may the numbers.")
        out.append("")
    return "\n".join(out)


def flat_metrics(tables: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``paper_table/<column>/<mode>/{value,ci_low,ci_high,n}`` and ``…/paper`` for MLflow (the first table:
    one invocation makes one)."""
    flat: dict[str, float] = {}
    for t in tables[:1]:
        for c in t["columns"]:
            for mode, v in t["cells"][c].items():
                if v:
                    flat.update({f"paper_table/{c}/{mode}/value": v["value"], f"paper_table/{c}/{mode}/n": v["n"],
                                 f"paper_table/{c}/{mode}/ci_low": v["ci"][0],
                                 f"paper_table/{c}/{mode}/ci_high": v["ci"][1]})
            for mode, value in t["paper"][c].items():
                flat[f"paper_table/{c}/{mode}/paper"] = value
    return {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not math.isnan(v)}
