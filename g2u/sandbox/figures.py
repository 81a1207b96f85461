"""One picture per finding, drawn from a report summary (matplotlib, Agg backend): logged to MLflow.

- ``conditions.png`` (finding 1): accuracy per condition with 95% intervals, blind and prior included;
- ``dose_response.png`` and ``fidelity_gain.png`` (finding 2): gain against blend strength, and each
  thought's gain against its SSIM to the clean scene with the fitted line;
- ``transfer.png`` (finding 3): the prompt-family × degradation-kind table, when the report has one.
"""

from __future__ import annotations

from pathlib import Path


def draw_figures(summary: dict, records: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out)
    paths = []
    overall = summary["table"]["all"]
    conds = [c for c in overall if overall[c]["n"]]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    acc = [100 * overall[c]["acc"] for c in conds]
    err = [[100 * (overall[c]["acc"] - overall[c]["low"]) for c in conds],
           [100 * (overall[c]["high"] - overall[c]["acc"]) for c in conds]]
    ax.bar(conds, acc, yerr=err, capsize=3, color="#4c72b0")
    ax.set_ylabel("accuracy %")
    ax.set_title("finding 1: accuracy per condition (95% Wilson)")
    ax.tick_params(axis="x", rotation=40)
    fig.tight_layout()
    paths.append(out / "conditions.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    dose = summary.get("dose_response") or []
    if len(dose) > 2:
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        x = [d["strength"] for d in dose]
        y = [100 * d["gain"] for d in dose]
        ax.errorbar(x, y, yerr=[[100 * (d["gain"] - d["low"]) for d in dose],
                                [100 * (d["high"] - d["gain"]) for d in dose]], marker="o", capsize=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("thought strength (0 degraded → 1 oracle)")
        ax.set_ylabel("paired gain, points")
        ax.set_title("finding 2: dose-response")
        fig.tight_layout()
        paths.append(out / "dose_response.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)

    fit = (summary.get("fidelity_gain") or {}).get("ssim")
    if fit and fit["n"] and fit["slope"] == fit["slope"]:
        base = {r["id"]: r["correct"] for r in records if r["condition"] == "degraded"}
        pts = [(r["ssim"], int(r["correct"]) - int(base[r["id"]])) for r in records if "ssim" in r and r["id"] in base]
        xs, ys = np.array(pts).T
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.scatter(xs, ys + np.random.default_rng(0).normal(0, 0.05, len(ys)), s=4, alpha=0.3)
        grid = np.linspace(xs.min(), xs.max(), 20)
        ax.plot(grid, fit["intercept"] + fit["slope"] * grid, color="C3",
                label=f"R²={fit['r2']:.3f}, p={fit['p']:.1g}")
        ax.set_xlabel("SSIM of the thought vs the clean scene")
        ax.set_ylabel("gain (−1, 0, +1)")
        ax.set_title("finding 2: fidelity bounds the gain")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "fidelity_gain.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)

    transfer = summary.get("transfer")
    if transfer:
        families = sorted(transfer)
        kinds = sorted({k for row in transfer.values() for k in row})
        grid = np.array([[100 * transfer[f].get(k, {}).get("gain", np.nan) for k in kinds] for f in families])
        fig, ax = plt.subplots(figsize=(7, 2.6))
        im = ax.imshow(grid, cmap="RdBu", vmin=-30, vmax=30)
        ax.set_xticks(range(len(kinds)), kinds, rotation=40)
        ax.set_yticks(range(len(families)), families)
        fig.colorbar(im, ax=ax, label="gain, points")
        ax.set_title("finding 3: prompt family × degradation")
        fig.tight_layout()
        paths.append(out / "transfer.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
