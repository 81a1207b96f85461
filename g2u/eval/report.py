"""What an evaluation shows: accuracy per mode and category, G→U − baseline deltas (overall, per
category, per prompt family), the fidelity→gain correlation, plots and an HTML gallery."""

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

from g2u.eval.scoring import circular_accuracy, hallusionbench_scores, mme_scores


def _accuracy(records: Sequence[dict]) -> float:
    return sum(bool(r["correct"]) for r in records) / len(records) if records else float("nan")


def accuracy_table(records: Sequence[dict]) -> dict[str, dict[str, float]]:
    """{mode: {"overall": acc, "<category>": acc, ...}}"""
    by_mode: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_mode[r["mode"]].append(r)
    table = {}
    for mode, rows in by_mode.items():
        cats: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            cats[str(r.get("category") or "all")].append(r)
        table[mode] = {"overall": _accuracy(rows), **{c: _accuracy(v) for c, v in sorted(cats.items())}}
    return table


def paired_gains(records: Sequence[dict], mode: str = "g2u", base: str = "baseline") -> list[dict]:
    """Per sample: gain = correct(mode) − correct(base) ∈ {−1, 0, 1}, with the thought's family and SSIM."""
    by_key = {(r["id"], r["mode"]): r for r in records}
    out = []
    for (sid, m), r in by_key.items():
        if m != mode or (sid, base) not in by_key:
            continue
        b = by_key[(sid, base)]
        out.append({"id": sid, "category": r.get("category"), "family": (r.get("edit") or {}).get("family"),
                    "ssim": (r.get("fidelity") or {}).get("ssim"), "psnr": (r.get("fidelity") or {}).get("psnr"),
                    "gain": int(bool(r["correct"])) - int(bool(b["correct"]))})
    return out


def _mean_by(rows: Sequence[dict], key: str) -> dict[str, float]:
    groups: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        groups[str(row.get(key) or "none")].append(row["gain"])
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def fidelity_gain_correlation(gains: Sequence[dict], metric: str = "ssim") -> dict[str, float]:
    """Linear fit of gain on fidelity (the paper: fidelity bounds the gain): R², p, slope, n."""
    pts = [(g[metric], g["gain"]) for g in gains if g.get(metric) is not None]
    if len(pts) < 3 or len({x for x, _ in pts}) < 2 or len({y for _, y in pts}) < 2:
        return {"r2": float("nan"), "p": float("nan"), "slope": float("nan"), "n": len(pts)}
    fit = stats.linregress([x for x, _ in pts], [y for _, y in pts])
    return {"r2": float(fit.rvalue**2), "p": float(fit.pvalue), "slope": float(fit.slope), "n": len(pts)}


def benchmark_scores(records: Sequence[dict]) -> dict[str, float]:
    """The reference harnesses' own aggregates, where the records carry their groups: MMBench circular
    accuracy, MME acc+/score, HallusionBench fAcc/qAcc."""
    flat: dict[str, float] = {}
    by_mode: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_mode[r["mode"]].append(r)
    for mode, rows in by_mode.items():
        mcq = [r for r in rows if r.get("answer_kind") == "mcq"]
        if any(r.get("group") not in (None, r["id"]) for r in mcq):
            flat[f"circular/{mode}/acc"] = circular_accuracy(mcq)
        yesno = [r for r in rows if r.get("answer_kind") == "yesno"]
        if any(r.get("figure_group") for r in yesno):
            flat.update({f"hallusionbench/{mode}/{k}": v for k, v in hallusionbench_scores(yesno).items()})
        elif any(r.get("group") for r in yesno):
            mme = mme_scores(yesno)
            flat[f"mme/{mode}/score"] = mme.pop("total")["score"]
            flat[f"mme/{mode}/acc_plus"] = sum(v["acc_plus"] for v in mme.values()) / len(mme)
    return flat


def compute_metrics(records: Sequence[dict]) -> dict[str, Any]:
    """Flat metrics, named as MLflow logs them, plus the nested tables for artifacts."""
    acc = accuracy_table(records)
    flat: dict[str, float] = {}
    for mode, row in acc.items():
        for cat, value in row.items():
            flat[f"acc/{mode}/overall" if cat == "overall" else f"acc/{mode}/category/{cat}"] = value
    out: dict[str, Any] = {"accuracy": acc, "flat": flat, "n_errors": sum(1 for r in records if r.get("error"))}
    if "baseline" in acc:
        for mode in acc:
            if mode == "baseline":
                continue
            gains = paired_gains(records, mode)
            if not gains:
                continue
            delta = {"overall": sum(g["gain"] for g in gains) / len(gains)}
            flat[f"delta/{mode}/overall"] = delta["overall"]
            for cat, v in _mean_by(gains, "category").items():
                flat[f"delta/{mode}/category/{cat}"] = v
            for fam, v in _mean_by(gains, "family").items():
                if fam != "none":
                    flat[f"delta/{mode}/family/{fam}"] = v
            corr = fidelity_gain_correlation(gains)
            flat.update({f"fidelity_gain/{mode}/{k}": v for k, v in corr.items()})
            out.setdefault("gains", {})[mode] = gains
    flat.update(benchmark_scores(records))
    timings: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for stage, ms in (r.get("timings_ms") or {}).items():
            timings[f"{r['mode']}/{stage}"].append(ms)
    for name, values in timings.items():
        values.sort()
        flat[f"time_ms/{name}/p50"] = values[len(values) // 2]
    flat["n_records"] = len(records)
    flat["n_errors"] = out["n_errors"]
    return out


def plot_deltas(metrics: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of G→U − baseline per category."""
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


def plot_fidelity_gain(metrics: dict[str, Any], path: Path) -> Path | None:
    """Scatter of per-sample gain against SSIM(Î, I), with the linear fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = [g for g in metrics.get("gains", {}).get("g2u", []) if g.get("ssim") is not None]
    if not gains:
        return None
    fig, ax = plt.subplots(figsize=(4, 3))
    xs, ys = [g["ssim"] for g in gains], [g["gain"] for g in gains]
    ax.scatter(xs, ys, alpha=0.6)
    corr = fidelity_gain_correlation(gains)
    if not math.isnan(corr["slope"]):
        fit = stats.linregress(xs, ys)
        lo, hi = min(xs), max(xs)
        ax.plot([lo, hi], [fit.intercept + fit.slope * lo, fit.intercept + fit.slope * hi], color="black")
    ax.set_xlabel("SSIM(thought, input)")
    ax.set_ylabel("gain (G→U − baseline)")
    ax.set_title(f"R²={corr['r2']:.3f}  p={corr['p']:.3g}  n={corr['n']}")
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


def write_gallery(records: Sequence[dict], originals: dict[str, str], path: Path, limit: int = 200) -> Path:
    """An HTML page: original | thought | question | answers of every mode, per sample (the first
    ``limit``). ``originals`` and the records' thought paths are relative to ``path``'s folder; the images
    are embedded, so the page is complete on its own and opens from the MLflow UI."""
    by_id: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        by_id[r["id"]][r["mode"]] = r
    esc = html.escape

    def picture(relative: str | None) -> str:
        uri = _embedded(path.parent, relative)
        return f"<img src='{uri}' width='256' title='{esc(relative or '')}'>" if uri else "—"

    rows = []
    for sid, modes in list(by_id.items())[:limit]:
        any_rec = next(iter(modes.values()))
        thought = next((r["thought_path"] for r in modes.values() if r.get("thought_path")), None)
        answers = "".join(
            f"<li><b>{esc(m)}</b>: {esc(str(r.get('prediction', ''))[:200])} "
            f"{'✅' if r.get('correct') else '❌'}</li>" for m, r in sorted(modes.items()))
        edit = next((r.get("edit") for r in modes.values() if r.get("edit")), None) or {}
        opts = any_rec.get("options") or []
        rows.append(
            "<tr>"
            f"<td>{picture(originals.get(sid))}</td>"
            f"<td>{picture(thought)}<br><small>{esc(edit.get('prompt', ''))}</small></td>"
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
