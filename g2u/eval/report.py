"""What an evaluation shows: accuracy per mode and category (primary: the reference rules; secondary: the
lenient reading), how many predictions were scored and how many failed, G→U − baseline deltas on paired
samples (overall, per category, per prompt family, and the paper's transfer table: task category × prompt
family), the benchmarks' own aggregates, the fidelity→gain regression beside the paper's, plots and an HTML
gallery.

Failed predictions are counted as the reference counts them (VLMEvalKit scores a failed inference as a
miss): every headline number (``acc/…``, ``delta/…``, ``circular/…``, ``mme/…``, ``hallusionbench/…``,
``mmvet/…``) counts a record with ``error`` as wrong, and ``n_errors/<mode>`` stands beside it. A group
(MMBench circular copies, the questions of one MME image, a HallusionBench figure or question) with an errored
member is therefore wrong. The errors-excluded numbers stay as secondary metrics named so:
``excl_errors/…`` (errors left out; a group with an errored member left out). A benchmark total whose
categories are not all there (MME perception needs its 10, cognition its 4: a ``limit=`` subset, or, with
errors excluded, a category whose every answer failed) is logged as ``…/perception_partial`` with
``…/perception_missing`` (how many categories it lacks), never as the total.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from scipy import stats

from g2u.eval.datasets import MMVET_CAPABILITIES
from g2u.eval.scoring import (
    circular_scores,
    hallusionbench_scores,
    mme_scores,
    mmvet_scores,
    score_record,
)

PAPER_FIDELITY_GAIN = {"r2": 0.27, "p": "<0.01"}
"""The paper's fidelity→gain fit (VIEScore fidelity against accuracy gain), printed beside ours."""


ERRORS = ("miss", "exclude")
"""How a failed prediction counts: ``miss`` (the reference's headline: wrong) or ``exclude`` (left out)."""


def _score(record: dict, lenient: bool = False, errors: str = "exclude") -> float | None:
    """Primary (reference-rule) score; records without their scoring fields keep their ``correct``. A
    failed prediction: 0 with ``errors="miss"``, None (no score) with ``errors="exclude"``."""
    if record.get("error"):
        return 0.0 if errors == "miss" else None
    if "answer_kind" in record and "answer" in record:
        return score_record(record, lenient=lenient)
    return None if lenient else float(record["correct"])


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def scored(records: Sequence[dict], lenient: bool = False, errors: str = "exclude") -> list[dict]:
    """The records that have a score, each a copy with ``score`` (0–1) added."""
    out = []
    for r in records:
        s = _score(r, lenient, errors)
        if s is not None:
            out.append(dict(r, score=s))
    return out


def _by_mode(records: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["mode"]].append(r)
    return groups


def accuracy_table(records: Sequence[dict], lenient: bool = False, errors: str = "miss") -> dict[str, dict[str, float]]:
    """{mode: {"overall": acc, "<category>": acc, ...}}; failed predictions count as ``errors`` says."""
    table = {}
    for mode, rows in _by_mode(scored(records, lenient, errors)).items():
        cats: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            cats[str(r.get("category") or "all")].append(r["score"])
        table[mode] = {"overall": _mean([r["score"] for r in rows]),
                       **{c: _mean(v) for c, v in sorted(cats.items())}}
    return table


def counts(records: Sequence[dict]) -> dict[str, dict[str, int]]:
    """{mode: {"n_scored", "n_errors"}}."""
    out = {}
    for mode, rows in _by_mode(records).items():
        errors = sum(1 for r in rows if r.get("error"))
        out[mode] = {"n_scored": len(rows) - errors, "n_errors": errors}
    return out


def _prompt_label(edit: dict) -> str | None:
    return edit.get("prompt_name") or edit.get("prompt")


def paired_gains(records: Sequence[dict], mode: str = "g2u", base: str = "baseline",
                 errors: str = "exclude") -> list[dict]:
    """Per sample scored in both modes: gain = score(mode) − score(base) ∈ [−1, 1], with the thought's
    prompt and family, its edit magnitude (SSIM/PSNR) and its judged fidelity when there is one.
    ``errors="miss"``: a failed side scores 0 (every sample is a pair); ``"exclude"``: no pair."""
    by_key = {(r["id"], r["mode"]): r for r in records}
    out = []
    for (sid, m), r in by_key.items():
        if m != mode or (sid, base) not in by_key:
            continue
        b = by_key[(sid, base)]
        s_mode, s_base = _score(r, errors=errors), _score(b, errors=errors)
        if s_mode is None or s_base is None:
            continue  # an error on either side: not a pair
        edit = r.get("edit") or {}
        fid = _measures(r)
        judged = fid.get("judged") or {}
        out.append({"id": sid, "category": r.get("category"), "family": edit.get("family"),
                    "prompt": _prompt_label(edit), "ssim": fid.get("ssim"), "psnr": fid.get("psnr"),
                    "viescore": judged.get("overall"), "sc": judged.get("semantic_consistency"),
                    "pq": judged.get("perceptual_quality"), "judge_reason": judged.get("reason"),
                    "gain": s_mode - s_base})
    return out


def _mean_by(rows: Sequence[dict], key: str) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        groups[str(row.get(key) or "none")].append(row["gain"])
    return {k: _mean(v) for k, v in sorted(groups.items())}


def transfer_table(gains: Sequence[dict]) -> dict[str, dict[str, float]]:
    """The paper's transfer table: mean accuracy delta per task category × prompt family
    ({category: {family: delta}}), over paired samples."""
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for g in gains:
        if g.get("family"):
            cells[str(g.get("category") or "all")][g["family"]].append(g["gain"])
    return {cat: {fam: _mean(v) for fam, v in sorted(fams.items())} for cat, fams in sorted(cells.items())}


def fidelity_metric(gains: Sequence[dict]) -> str:
    """The judged VIEScore when any sample has one (the paper's fidelity), else SSIM (edit magnitude)."""
    return "viescore" if any(g.get("viescore") is not None for g in gains) else "ssim"


def _fit(pts: Sequence[tuple[float, float]]) -> dict[str, float]:
    if len(pts) < 3 or len({x for x, _ in pts}) < 2 or len({y for _, y in pts}) < 2:
        return {"r2": float("nan"), "p": float("nan"), "slope": float("nan"), "intercept": float("nan"),
                "n": len(pts)}
    fit = stats.linregress([x for x, _ in pts], [y for _, y in pts])
    return {"r2": float(fit.rvalue**2), "p": float(fit.pvalue), "slope": float(fit.slope),
            "intercept": float(fit.intercept), "n": len(pts)}


def fidelity_gain_correlation(gains: Sequence[dict], metric: str = "ssim") -> dict[str, float]:
    """Per-sample linear fit of gain on fidelity (the paper: fidelity bounds the gain): R², p, slope, n."""
    return _fit([(g[metric], g["gain"]) for g in gains if g.get(metric) is not None])


def fidelity_gain_cells(gains: Sequence[dict], metric: str = "ssim") -> dict[str, Any]:
    """The aggregated fit: one point per (prompt × category) cell, mean fidelity against mean gain."""
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for g in gains:
        if g.get(metric) is not None:
            cells[(str(g.get("prompt") or g.get("family") or "none"), str(g.get("category") or "all"))].append(g)
    points = {f"{p} × {c}": (_mean([g[metric] for g in v]), _mean([g["gain"] for g in v]), len(v))
              for (p, c), v in sorted(cells.items())}
    return {"fit": _fit([(x, y) for x, y, _ in points.values()]),
            "cells": {k: {"fidelity": x, "gain": y, "n": n} for k, (x, y, n) in points.items()}}


def _group_key(r: dict) -> str:
    return str(r.get("group") or r["id"])


def _whole_groups(rows: Sequence[dict], lenient: bool) -> list[dict]:
    """Scored records of the groups (circular copies, questions of one image) none of whose members
    failed: a group with an error cannot be judged all-right or not, so it is not scored."""
    failed = {_group_key(r) for r in rows if _score(r, lenient) is None}
    return scored([r for r in rows if _group_key(r) not in failed], lenient)


def _is_mmvet(rows: Sequence[dict]) -> bool:
    return bool(rows) and all(
        set(str(r.get("category") or "?").split(",")) <= MMVET_CAPABILITIES for r in rows)


def _partial_sums(prefix: str, mme: dict[str, Any]) -> dict[str, float]:
    """MME's sums, named ``…_partial`` (with ``…_missing``: how many categories they lack) unless every
    category of the sum is there: a partial sum is never logged as the benchmark's total."""
    from g2u.eval.scoring import MME_COGNITION, MME_PERCEPTION

    out: dict[str, float] = {}
    for name, cats in (("perception", MME_PERCEPTION), ("cognition", MME_COGNITION)):
        lacking = sum(1 for c in cats if c in mme["missing"])
        if lacking == len(cats):
            continue  # none of its categories: no such sum at all
        if lacking:
            out[f"{prefix}/{name}_partial"] = mme[name]
            out[f"{prefix}/{name}_missing"] = lacking
        else:
            out[f"{prefix}/{name}"] = mme[name]
    return out


def benchmark_scores(records: Sequence[dict], lenient: bool = False, errors: str = "miss") -> dict[str, float]:
    """The reference harnesses' own aggregates, where the records carry what they need: MMBench circular
    accuracy (overall, per category, per l2-category), MME perception / cognition sums and per-category
    scores, HallusionBench aAcc/fAcc/qAcc (overall, per category, per l2-category), MM-Vet per capability.
    ``errors="miss"`` (the reference's rule): a failed prediction is wrong, so its group is wrong;
    ``"exclude"``: failed predictions and the groups they belong to are left out."""
    flat: dict[str, float] = {}

    def grouped(rows: Sequence[dict]) -> list[dict]:
        return scored(rows, lenient, "miss") if errors == "miss" else _whole_groups(rows, lenient)

    for mode, rows in _by_mode(records).items():
        mcq = [r for r in rows if r.get("answer_kind") == "mcq"]
        if any(r.get("group") not in (None, r["id"]) for r in mcq):
            for k, v in circular_scores(grouped(mcq)).items():
                flat[f"circular/{mode}/{'acc' if k == 'overall' else k}"] = v
        yesno = [r for r in rows if r.get("answer_kind") == "yesno"]
        if any(r.get("figure_group") for r in yesno):
            for split, values in hallusionbench_scores(scored(yesno, lenient, errors)).items():
                prefix = f"hallusionbench/{mode}" + ("" if split == "overall" else f"/{split}")
                flat.update({f"{prefix}/{k}": v for k, v in values.items()})
        elif any(r.get("group") for r in yesno):
            mme = mme_scores(grouped(yesno))
            flat.update(_partial_sums(f"mme/{mode}", mme))
            for cat, values in mme["categories"].items():
                flat.update({f"mme/{mode}/category/{cat}/{k}": v for k, v in values.items()})
        openq = [r for r in rows if r.get("answer_kind") == "open"]
        if _is_mmvet(openq):
            flat.update({f"mmvet/{mode}/{k}": v for k, v in mmvet_scores(scored(openq, lenient, errors)).items()})
    return flat


_HEADLINE = ("/acc", "/perception", "/cognition", "/perception_partial", "/cognition_partial", "/aAcc", "/fAcc",
             "/qAcc", "/overall")


def with_sample_fields(records: Sequence[dict], samples: Sequence[Any]) -> list[dict]:
    """Records completed from their samples with what the aggregates need and older records lack
    (``l2_category`` for MMBench/MMStar per-l2 scores)."""
    by_id = {s.id: s for s in samples}
    out = []
    for r in records:
        sample = by_id.get(r["id"])
        l2 = sample.extra.get("l2-category") if sample is not None else None
        out.append(dict(r, l2_category=l2) if l2 and not _has_l2(r) else r)
    return out


def _has_l2(record: dict) -> bool:
    return bool(record.get("l2_category") or record.get("l2-category"))


class MixedJudges(ValueError):
    """Records read by different judges: their numbers cannot stand in one table."""


def judges_of(records: Sequence[dict]) -> dict[str, list[str]]:
    """The judges that read the records' answers: ``answer_judge`` (MCQ and yes/no; records made before
    answer judges were exact matching) and ``judge`` (open answers: the grader, ``none`` for the rule)."""
    answer, graders = set(), set()
    for r in records:
        if r.get("error") or r.get("no_gold"):
            continue
        if r.get("answer_kind") in ("mcq", "yesno"):
            answer.add(str(r.get("answer_judge") or "exact_matching"))
        elif r.get("answer_kind") == "open" and "judge_model" in r:  # older records do not say
            graders.add(str(r["judge_model"] or "none"))
    return {"answer_judge": sorted(answer), "judge": sorted(graders)}


def one_judge(records: Sequence[dict]) -> dict[str, str]:
    """{"answer_judge", "judge"}: the one judge of each kind behind the records; ``MixedJudges`` when the
    records were read by several (a comparison table never mixes judges)."""
    found = judges_of(records)
    mixed = {k: v for k, v in found.items() if len(v) > 1}
    if mixed:
        raise MixedJudges("records were read by different judges (" + "; ".join(
            f"{k}: {', '.join(v)}" for k, v in mixed.items()) + "): score them with one judge before comparing")
    return {"answer_judge": (found["answer_judge"] or ["exact_matching"])[0],
            "judge": (found["judge"] or ["none"])[0]}


def extraction_counts(records: Sequence[dict]) -> dict[str, float]:
    """Per mode, how the MCQ / yes-no answers were read: ``n_judged`` (an answer judge read it),
    ``n_judge_fallback`` (the judge failed: the protocol's fallback), ``n_unreadable`` (exact matching found
    nothing and no judge was asked: a miss)."""
    flat: dict[str, float] = {}
    for mode, rows in _by_mode(records).items():
        rows = [r for r in rows if r.get("answer_kind") in ("mcq", "yesno") and not r.get("error")]
        if not rows:
            continue
        for name, value in (("n_judged", "judge"), ("n_judge_fallback", "judge_fallback"),
                            ("n_unreadable", "unreadable")):
            flat[f"{name}/{mode}"] = sum(1 for r in rows if r.get("extraction") == value)
    return flat


def compute_metrics(records: Sequence[dict], samples: Sequence[Any] | None = None) -> dict[str, Any]:
    """Flat metrics, named as MLflow logs them, plus the nested tables for artifacts. ``samples`` (the
    benchmark's ``Sample`` list) fills in fields the records may lack (l2-category). Records read by
    different judges are refused (``MixedJudges``): modes are compared in one table."""
    if samples is not None:
        records = with_sample_fields(records, samples)
    unscored = [r for r in records if r.get("no_gold")]
    if unscored:  # a split without gold answers: predicted and written, never scored
        records = [r for r in records if not r.get("no_gold")]
    judges = one_judge(records)
    acc = accuracy_table(records)  # headline: failed predictions are misses
    flat: dict[str, float] = {}
    for mode, row in acc.items():
        for cat, value in row.items():
            flat[f"acc/{mode}/overall" if cat == "overall" else f"acc/{mode}/category/{cat}"] = value
    for mode, row in accuracy_table(records, errors="exclude").items():
        for cat, value in row.items():
            flat[f"excl_errors/acc/{mode}/overall" if cat == "overall" else
                 f"excl_errors/acc/{mode}/category/{cat}"] = value
    for mode, rows in _by_mode(scored(records, errors="miss")).items():  # per l2-category, as report_acc
        l2s: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            if _has_l2(r):
                l2s[str(r.get("l2_category") or r.get("l2-category"))].append(r["score"])
        flat.update({f"acc/{mode}/l2/{k}": _mean(v) for k, v in sorted(l2s.items())})
    for mode, row in accuracy_table(records, lenient=True).items():
        flat[f"lenient/acc/{mode}/overall"] = row["overall"]
    n = counts(records)
    for mode, c in n.items():
        flat[f"n_scored/{mode}"], flat[f"n_errors/{mode}"] = c["n_scored"], c["n_errors"]
    flat.update(extraction_counts(records))
    out: dict[str, Any] = {"accuracy": acc, "counts": n, "flat": flat, "judges": judges,
                           "n_errors": sum(1 for r in records if r.get("error"))}
    if "baseline" in acc:
        for mode in acc:
            if mode == "baseline":
                continue
            headline = paired_gains(records, mode, errors="miss")
            gains = paired_gains(records, mode)  # error-free pairs: what a thought did (fidelity, transfer)
            if not headline:
                continue
            flat[f"delta/{mode}/n_paired"] = len(headline)
            flat[f"delta/{mode}/overall"] = _mean([g["gain"] for g in headline])
            for cat, v in _mean_by(headline, "category").items():
                flat[f"delta/{mode}/category/{cat}"] = v
            for fam, v in _mean_by(headline, "family").items():
                if fam != "none":
                    flat[f"delta/{mode}/family/{fam}"] = v
            flat[f"excl_errors/delta/{mode}/n_paired"] = len(gains)
            if not gains:
                continue
            flat[f"excl_errors/delta/{mode}/overall"] = _mean([g["gain"] for g in gains])
            transfer = transfer_table(gains)
            for cat, fams in transfer.items():
                flat.update({f"transfer/{mode}/{fam}/category/{cat}": v for fam, v in fams.items()})
            metric = fidelity_metric(gains)
            per_sample = fidelity_gain_correlation(gains, metric)
            cells = fidelity_gain_cells(gains, metric)
            flat.update({f"fidelity_gain/{mode}/{k}": v for k, v in per_sample.items()})
            flat.update({f"fidelity_gain/{mode}/cells/{k}": v for k, v in cells["fit"].items()})
            out.setdefault("gains", {})[mode] = gains
            out.setdefault("transfer", {})[mode] = transfer
            out.setdefault("fidelity_gain", {})[mode] = {"metric": metric, "per_sample": per_sample,
                                                         "cells": cells, "paper": PAPER_FIDELITY_GAIN}
    flat.update(benchmark_scores(records))

    def top(k: str) -> bool:
        return k.endswith(_HEADLINE) and k.count("/") == 2

    flat.update({f"excl_errors/{k}": v for k, v in benchmark_scores(records, errors="exclude").items()
                 if top(k) or k.endswith(("_missing",))})
    flat.update({f"lenient/{k}": v for k, v in benchmark_scores(records, lenient=True).items() if top(k)})
    timings: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for stage, ms in (r.get("timings_ms") or {}).items():
            timings[f"{r['mode']}/{stage}"].append(ms)
    for name, values in timings.items():
        values.sort()
        flat[f"time_ms/{name}/p50"] = values[len(values) // 2]
    flat["n_records"] = len(records)
    if unscored:
        flat["n_no_gold"] = len(unscored)
        out["scoring_skipped"] = (f"{len(unscored)} predictions have no gold answer (a split without answers, "
                                  "such as MMBench's test split): written, not scored")
    flat["n_scored"] = len(records) - out["n_errors"]
    flat["n_errors"] = out["n_errors"]
    return out


def transfer_markdown(metrics: dict[str, Any], mode: str = "g2u") -> str:
    """The transfer table as Markdown (rows: task categories; columns: prompt families; points)."""
    table = metrics.get("transfer", {}).get(mode) or {}
    families = sorted({f for fams in table.values() for f in fams})
    if not families:
        return ""
    lines = ["| category | " + " | ".join(families) + " |", "|---" * (len(families) + 1) + "|"]
    for cat, fams in table.items():
        cells = [f"{100 * fams[f]:+.1f}" if f in fams else "—" for f in families]
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_deltas(metrics: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of G→U − baseline per category (paired samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {k.split("/category/")[1]: v for k, v in metrics["flat"].items()
            if k.startswith("delta/g2u/category/")}
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(4, len(rows) * 0.8), 3))
    ax.bar(list(rows), [100 * v for v in rows.values()], color=["#2a9d8f" if v >= 0 else "#e76f51"
                                                                 for v in rows.values()])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("G→U − baseline (points)")
    ax.set_title("Gain per category")
    plt.xticks(rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


_AXIS = {"viescore": "judged fidelity (VIEScore overall, 0–10)", "ssim": "edit magnitude: SSIM(thought, input)"}


def plot_fidelity_gain(metrics: dict[str, Any], path: Path, mode: str = "g2u") -> Path | None:
    """Scatter of per-sample gain against fidelity (judged VIEScore when present, else SSIM), with the
    fit; the title puts our R² and p beside the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = metrics.get("fidelity_gain", {}).get(mode)
    gains = metrics.get("gains", {}).get(mode, [])
    if not info:
        return None
    metric = info["metric"]
    pts = [g for g in gains if g.get(metric) is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.4))
    xs, ys = [g[metric] for g in pts], [g["gain"] for g in pts]
    ax.scatter(xs, ys, alpha=0.6)
    fit = info["per_sample"]
    if not math.isnan(fit["slope"]):
        lo, hi = min(xs), max(xs)
        ax.plot([lo, hi], [fit["intercept"] + fit["slope"] * lo, fit["intercept"] + fit["slope"] * hi],
                color="black")
    ax.set_xlabel(_AXIS[metric])
    ax.set_ylabel("gain (G→U − baseline)")
    paper = info["paper"]
    ax.set_title(f"ours: R²={fit['r2']:.3f} p={fit['p']:.3g} n={fit['n']}   "
                 f"paper: R²={paper['r2']} p{paper['p']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _embedded(folder: Path, relative: str | None, side: int = 256) -> str | None:
    """A small JPEG data URI of an image beside the gallery: MLflow's artifact view shows HTML from a blob
    URL, where relative image links do not resolve, so the pictures travel inside the page."""
    if not relative or not (folder / relative).is_file():
        return None
    img = Image.open(folder / relative).convert("RGB")
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _measures(record: dict) -> dict:
    """A record's edit measures (SSIM/PSNR) with its judged fidelity (``judged``) beside them; records
    written before ``measures`` had both under ``fidelity``."""
    return {**(record.get("fidelity") or {}), **(record.get("measures") or {})}


def _fidelity_html(fidelity: dict | None) -> str:
    """Judged scores and the judge's reason when present, then the edit magnitude."""
    esc = html.escape
    fid = fidelity or {}
    parts = []
    judged = fid.get("judged")
    if judged:
        if judged.get("overall") is not None:
            parts.append(f"VIEScore <b>{judged['overall']:.2f}</b> (SC {judged.get('semantic_consistency')}, "
                         f"PQ {judged.get('perceptual_quality')})")
        else:
            parts.append("VIEScore: none")
        if judged.get("reason"):
            parts.append(f"<i>{esc(str(judged['reason'])[:400])}</i>")
    if fid.get("ssim") is not None:
        parts.append(f"edit magnitude: SSIM {fid['ssim']:.3f}, PSNR {fid.get('psnr', float('nan')):.1f} dB")
    return "<br>".join(parts)


def write_gallery(records: Sequence[dict], originals: dict[str, str], path: Path, limit: int = 200) -> Path:
    """An HTML page: original | thought (prompt, judged fidelity and reason, edit magnitude) | question |
    answers of every mode (✅ / ❌, ⚠ for an error), per sample (the first ``limit``). ``originals`` and the
    records' thought paths are relative to ``path``'s folder; the images are embedded, so the page is
    complete on its own and opens from the MLflow UI."""
    by_id: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        by_id[r["id"]][r["mode"]] = r
    esc = html.escape

    def picture(relative: str | None) -> str:
        uri = _embedded(path.parent, relative)
        return f"<img src='{uri}' width='256' title='{esc(relative or '')}'>" if uri else "—"

    def verdict(r: dict) -> str:
        if r.get("error"):
            err = r["error"]
            return f"⚠ error: {esc(str(err.get('reason', err) if isinstance(err, dict) else err)[:200])}"
        s = _score(r)
        return "✅" if s == 1.0 else "❌" if s == 0.0 else f"{s:.2f}"

    rows = []
    for sid, modes in list(by_id.items())[:limit]:
        any_rec = next(iter(modes.values()))
        thought_rec = next((r for r in modes.values() if r.get("thought_path")), None)
        answers = "".join(
            f"<li><b>{esc(m)}</b>: {esc(str(r.get('prediction', ''))[:200])} {verdict(r)}</li>"
            for m, r in sorted(modes.items()))
        edit = next((r.get("edit") for r in modes.values() if r.get("edit")), None) or {}
        fid = next((_measures(r) for r in modes.values() if r.get("measures") or r.get("fidelity")), None)
        opts = any_rec.get("options") or []
        rows.append(
            "<tr>"
            f"<td>{picture(originals.get(sid))}</td>"
            f"<td>{picture(thought_rec['thought_path'] if thought_rec else None)}"
            f"<br><small>{esc(edit.get('prompt', ''))}</small><br><small>{_fidelity_html(fid)}</small></td>"
            f"<td><b>{esc(sid)}</b><br>{esc(any_rec.get('question', ''))}"
            f"<br><small>{esc(' | '.join(map(str, opts)))}</small>"
            f"<br>gold: <b>{esc(str(any_rec.get('answer', '')))}</b></td>"
            f"<td><ul>{answers}</ul></td></tr>")
    page = ("<!doctype html><meta charset='utf-8'><title>G→U gallery</title>"
            "<style>body{font-family:sans-serif}td{vertical-align:top;border-bottom:1px solid #ddd;padding:6px}"
            "</style><h1>G→U gallery</h1><table><tr><th>original</th><th>thought</th><th>question</th>"
            "<th>answers</th></tr>" + "".join(rows) + "</table>")
    path.write_text(page)
    return path
