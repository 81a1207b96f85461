"""``g2u sandbox report``: the known G→U effect, measured through the real pipeline.

Conditions, each answered through the core's one batch path (``g2u.batch.run_batch``) on the trained demo
checkpoint:

- ``clean``: baseline mode on the clean image (the ceiling),
- ``degraded``: baseline mode on the degraded image,
- ``g2u_oracle``: g2u mode, [degraded I, q, Î] with Î the clean image (the oracle thought),
- ``replace_oracle``: replace mode, [Î, q] with the oracle thought,
- ``g2u_own``: g2u mode with the thoughts the checkpoint's own editor imagines (stage I for real, with the
  edit prompt family the degradation calls for),
- ``blind``: baseline mode on a blank canvas (the scene's background, no shapes): the answerer without the
  image, what it knows from the question alone,
- ``prior``: no model: the majority answer per question text learned on the training draws (per question
  kind for a text training never asked), ``g2u.sandbox.recipe.majority_prior``.

Accuracy per degradation type and severity with Wilson 95% intervals (scipy), and the paired oracle gain
(g2u_oracle − degraded on the same samples) with a bootstrap 95% interval.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import stats

from g2u.batch import RawItem, run_batch
from g2u.eval.datasets import Sample, load_dataset
from g2u.eval.scoring import score_sample
from g2u.measures import edit_measures
from g2u.sandbox.build import MANIFEST, build_sandbox
from g2u.types import EditRecord, Thought

BLEND_STRENGTHS = (0.25, 0.5, 0.75)
"""Dose-response: g2u with thoughts blended from the (aligned) degraded image towards the oracle."""
BLENDS = tuple(f"g2u_blend_{round(100 * a)}" for a in BLEND_STRENGTHS)
TRANSFER = ("own_enhancement", "own_extension")
"""Transfer: g2u with the checkpoint's own thought under each prompt family's default, whatever the
degradation (finding 3: the matching family should beat the other on the diagonal)."""
GAIN_CONDITIONS = ("g2u_own", "g2u_oracle", "replace_oracle", *BLENDS, *TRANSFER)
"""Conditions whose paired gain over ``degraded`` the report gives."""
THOUGHT_CONDITIONS = ("g2u_own", "g2u_oracle", *BLENDS, *TRANSFER)
"""Conditions answering from [I, q, Î]: their thoughts' fidelity to the clean scene is measured."""
CONDITIONS = ("clean", "degraded", "g2u_own", "g2u_oracle", "replace_oracle", *BLENDS, *TRANSFER, "blind", "prior")
CONDITION_MODES = {"clean": "baseline", "degraded": "baseline", "g2u_oracle": "g2u", "replace_oracle": "replace",
                   "g2u_own": "g2u", "blind": "baseline"}
CONDITION_MODES.update({b: "g2u" for b in (*BLENDS, *TRANSFER)})

ORACLE_PROMPT = "oracle thought: the clean image"


@dataclass(frozen=True)
class ReportConfig:
    n: int = 280
    seed: int = 0
    batch_size: int = 16
    editor_steps: int = 8
    max_new_tokens: int = 4
    conditions: tuple[str, ...] = CONDITIONS
    threads: int = 1
    """Torch CPU threads (1: on a shared CPU two spinning threads stall each other)."""


def wilson(correct: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (scipy's binomtest)."""
    if total == 0:
        return (float("nan"), float("nan"))
    ci = stats.binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def paired_gain(better: Sequence[bool], base: Sequence[bool], seed: int = 0) -> dict[str, float]:
    """Mean paired difference (in accuracy points) with a bootstrap 95% interval (scipy.stats.bootstrap)."""
    diff = np.asarray(better, dtype=float) - np.asarray(base, dtype=float)
    if len(diff) < 2:
        return {"gain": float(diff.mean()) if len(diff) else float("nan"), "low": float("nan"), "high": float("nan")}
    res = stats.bootstrap((diff,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                          rng=np.random.default_rng(seed))
    return {"gain": float(diff.mean()), "low": float(res.confidence_interval.low),
            "high": float(res.confidence_interval.high)}


def aligned_degraded(degraded: Image.Image, params: dict, size: tuple[int, int]) -> Image.Image:
    """The degraded image on the clean scene's canvas: a crop pasted back where it was cut from (the cut
    band left as background), anything else as is."""
    from g2u.sandbox.scenes import BACKGROUND

    if params.get("name") != "crop":
        return degraded
    canvas = Image.new("RGB", size, BACKGROUND)
    cut = params["cut"]
    canvas.paste(degraded, {"left": (cut, 0), "top": (0, cut)}.get(params["side"], (0, 0)))
    return canvas


def blend_strength(condition: str) -> float:
    return int(condition.rsplit("_", 1)[1]) / 100


def _oracle_thought(clean: Image.Image, family: str, prompt: str = ORACLE_PROMPT) -> Thought:
    record = EditRecord(prompt=prompt, prompt_name=None, family=family, writer="oracle", steps=0,
                        text_cfg=0.0, image_cfg=0.0, seed=0, size=clean.size)
    return Thought(image=clean, edit=record)


def _raw(sample: Sample, image: Image.Image, mode: str, config: ReportConfig, thought: Thought | None = None,
         family: str | None = None):
    """One item of the batch path: the request fields, its image, the gold answer (the leak guard) and the
    oracle thought where the condition brings one (stage I is skipped for it)."""
    fields = {"question": sample.question, "options": sample.options, "mode": mode,
              "family": family or sample.extra["expected_family"], "steps": config.editor_steps,
              "max_new_tokens": config.max_new_tokens, "id": sample.id}
    return RawItem({k: v for k, v in fields.items() if v is not None}, image, gold_answer=sample.answer,
                   thought=thought)


def evaluate_conditions(pipe, samples: Sequence[Sample], sandbox: Path, config: ReportConfig,
                        log: Callable[[str], None] = print) -> list[dict]:
    """One record per (sample, condition): id, condition, degradation, severity, category, prediction,
    correct."""
    from g2u.sandbox.recipe import majority_prior
    from g2u.sandbox.scenes import BACKGROUND, SCENE_SIZE

    by_text, by_kind = majority_prior()
    blank = Image.new("RGB", (SCENE_SIZE, SCENE_SIZE), BACKGROUND)
    records = []
    for start in range(0, len(samples), config.batch_size):
        chunk = samples[start:start + config.batch_size]
        degraded = [s.load_image() for s in chunk]
        clean = [Image.open(sandbox / s.extra["oracle_thought"]).convert("RGB") for s in chunk]
        for condition in config.conditions:
            if condition == "prior":
                for s in chunk:
                    answer = by_text.get(s.question, by_kind[s.category])
                    records.append(_record(s, condition, answer))
                continue
            mode = CONDITION_MODES[condition]
            images = clean if condition == "clean" else [blank] * len(chunk) if condition == "blind" else degraded
            if condition in ("g2u_oracle", "replace_oracle"):
                thoughts = [_oracle_thought(c, s.extra["expected_family"]) for s, c in zip(chunk, clean)]
            elif condition in BLENDS:
                a = blend_strength(condition)
                thoughts = [_oracle_thought(
                    Image.blend(aligned_degraded(d, s.extra["degradation_params"], c.size), c, a),
                    s.extra["expected_family"], f"oracle blended at {a}")
                            for s, d, c in zip(chunk, degraded, clean)]
            else:  # g2u_own: stage I runs in the batch path; baseline conditions need no thought
                thoughts = [None] * len(chunk)
            family = condition.removeprefix("own_") if condition in TRANSFER else None
            raws = [_raw(s, img, mode, config, t, family) for s, img, t in zip(chunk, images, thoughts)]
            for s, c, t, outcome in zip(chunk, clean, thoughts, run_batch(pipe, raws)):
                if not outcome.ok:  # a failed item is a broken report, never a wrong answer
                    raise RuntimeError(f"sandbox sample {s.id} ({condition}): {outcome.error}")
                record = _record(s, condition, outcome.result.answer)
                if condition in THOUGHT_CONDITIONS:
                    image = t.image if t is not None else _thought_image(outcome.result)
                    if image is not None:
                        record.update(edit_measures(c, image))
                records.append(record)
        log(f"evaluated {min(start + config.batch_size, len(samples))}/{len(samples)} samples")
    return records


def _thought_image(result) -> Image.Image | None:
    thought = getattr(result, "thought", None)
    return getattr(thought, "image", thought) if thought is not None else None


def fidelity_gain(records: Sequence[dict], measure: str = "ssim", within: bool = False) -> dict:
    """Linear regression of the paired gain of each thought (its condition's correctness − the degraded
    baseline's, per sample: −1, 0 or +1) on the thought's ``measure`` against the clean scene (scipy
    linregress): slope, R², two-sided p, n. PSNR ignores identical thoughts (capped at 100 dB).

    ``within``: both centred per sample first (fixed effects), so the slope compares thoughts *of the same
    sample* — pooled over samples, a degradation whose thoughts score a low SSIM whatever their content
    (noise) confounds fidelity with what the degradation hides."""
    base = {r["id"]: r["correct"] for r in records if r["condition"] == "degraded"}
    xs, ys, groups = [], [], []
    for r in records:
        if r["condition"] in THOUGHT_CONDITIONS and measure in r and r["id"] in base:
            if measure == "psnr" and r[measure] >= 100:
                continue
            xs.append(r[measure])
            ys.append(int(r["correct"]) - int(base[r["id"]]))
            groups.append(r["id"])
    if within and xs:
        x, y, g = np.asarray(xs, float), np.asarray(ys, float), np.asarray(groups)
        for key in set(groups):
            m = g == key
            x[m] -= x[m].mean()
            y[m] -= y[m].mean()
        xs, ys = list(x), list(y)
    if len(set(xs)) < 3:
        return {"n": len(xs), "slope": float("nan"), "r2": float("nan"), "p": float("nan")}
    fit = stats.linregress(xs, ys)
    return {"n": len(xs), "slope": float(fit.slope), "intercept": float(fit.intercept),
            "r2": float(fit.rvalue ** 2), "p": float(fit.pvalue)}


def _record(sample: Sample, condition: str, answer: str) -> dict:
    return {"id": sample.id, "condition": condition, "degradation": sample.extra["degradation"],
            "severity": sample.extra["severity"], "category": sample.category, "prediction": answer,
            "correct": bool(score_sample(sample, answer))}


def summarise(records: Sequence[dict], conditions: Sequence[str] = CONDITIONS) -> dict:
    """Accuracy + Wilson interval per (row, condition) — rows: all, each family, each question kind,
    each degradation, each degradation/severity — and the paired oracle gain."""
    cells: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    from g2u.sandbox.degrade import DEGRADATIONS

    for r in records:
        family = DEGRADATIONS[r["degradation"]].family
        rows = ("all", f"family:{family}", f"question:{r['category']}", r["degradation"],
                f"{r['degradation']}/{r['severity']}")
        for row in rows:
            cells[row][r["condition"]].append(r["correct"])
    table = {}
    for row, by_cond in cells.items():
        table[row] = {}
        for cond in conditions:
            hits = by_cond.get(cond, [])
            low, high = wilson(sum(hits), len(hits))
            table[row][cond] = {"acc": sum(hits) / len(hits) if hits else float("nan"), "low": low, "high": high,
                                "n": len(hits)}
    by_id = defaultdict(dict)
    degradation_of = {}
    for r in records:
        by_id[r["id"]][r["condition"]] = r["correct"]
        degradation_of[r["id"]] = r["degradation"]
    overall = table["all"]
    gap = overall["clean"]["acc"] - overall["degraded"]["acc"] if "clean" in overall else float("nan")
    gains = {}
    for cond in GAIN_CONDITIONS:
        paired = [v for v in by_id.values() if cond in v and "degraded" in v]
        if not paired:
            continue
        gain = paired_gain([v[cond] for v in paired], [v["degraded"] for v in paired])
        gain["recovered_share"] = gain["gain"] / gap if gap > 0 else float("nan")
        gains[cond] = gain
    dose = [{"strength": 0.0, "gain": 0.0, "low": 0.0, "high": 0.0}]
    dose += [{"strength": blend_strength(b), **gains[b]} for b in BLENDS if b in gains]
    if "g2u_oracle" in gains:
        dose.append({"strength": 1.0, **gains["g2u_oracle"]})
    fidelity = {m: fidelity_gain(records, m) for m in ("ssim", "psnr")}
    fidelity.update({f"{m}_within": fidelity_gain(records, m, within=True) for m in ("ssim", "psnr")})
    transfer = {}
    for cond in TRANSFER:
        for name in {r["degradation"] for r in records}:
            pairs = [v for i, v in by_id.items() if cond in v and "degraded" in v and degradation_of[i] == name]
            if pairs:
                transfer.setdefault(cond.removeprefix("own_"), {})[name] = paired_gain(
                    [v[cond] for v in pairs], [v["degraded"] for v in pairs])
    return {"transfer": transfer, "table": table, "gains": gains, "oracle_gain": gains.get("g2u_oracle"),
            "dose_response": dose, "fidelity_gain": fidelity}


def _row_order(table: dict) -> list[str]:
    from g2u.sandbox.degrade import DEGRADATIONS
    from g2u.sandbox.questions import KINDS

    rows = ["all", "family:enhancement", "family:extension", *(f"question:{k}" for k in KINDS)]
    for name in DEGRADATIONS:
        rows.append(name)
        rows.extend(sorted(r for r in table if r.startswith(f"{name}/")))
    return [r for r in rows if r in table]


def format_table(summary: dict, conditions: Sequence[str] = CONDITIONS) -> str:
    """Markdown table: accuracy % [Wilson 95%] per row and condition, then the oracle-gain line."""
    table = summary["table"]
    lines = ["| row | n | " + " | ".join(conditions) + " |", "|---|---:|" + "---|" * len(conditions)]
    for row in _row_order(table):
        cells = table[row]
        n = next(iter(cells.values()))["n"]
        lines.append(f"| {row} | {n} | " + " | ".join(
            f"{100 * c['acc']:.1f} [{100 * c['low']:.0f}–{100 * c['high']:.0f}]" for c in
            (cells[k] for k in conditions)) + " |")
    lines.append("")
    for cond, g in summary.get("gains", {}).items():
        lines.append(f"{cond} gain ({cond} − baseline on the degraded image, paired): "
                     f"{100 * g['gain']:+.1f} points [bootstrap 95% {100 * g['low']:+.1f}, {100 * g['high']:+.1f}], "
                     + (f"recovering {100 * g['recovered_share']:.0f}% of the clean−degraded gap"
                        if g["recovered_share"] == g["recovered_share"]
                        else "no clean−degraded gap to recover (the answerer does not read the degradation)"))
    for family, row in (summary.get("transfer") or {}).items():
        lines.append(f"transfer, {family} prompt (own thought − degraded, points): " + ", ".join(
            f"{name}: {100 * g['gain']:+.1f} [{100 * g['low']:+.1f}, {100 * g['high']:+.1f}]"
            for name, g in sorted(row.items())))
    dose = summary.get("dose_response") or []
    if len(dose) > 2:
        lines.append("dose-response (thought blended degraded→oracle; gain over degraded, points): " + ", ".join(
            f"{d['strength']:.2f}: {100 * d['gain']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
            for d in dose))
    for measure, fit in (summary.get("fidelity_gain") or {}).items():
        if fit["n"]:
            lines.append(f"fidelity→gain ({measure} of each thought vs the clean scene, n={fit['n']}): slope "
                         f"{fit['slope']:+.3g}, R² {fit['r2']:.3f}, p {fit['p']:.2g}")
    return "\n".join(lines)


def run_report(out_dir: str | Path, config: ReportConfig = ReportConfig(), sandbox: str | Path | None = None,
               checkpoint: str | Path | None = None, train_config=None,
               log: Callable[[str], None] = print) -> dict:
    """Build (or reuse) the sandbox and the trained answerer under ``out_dir``, evaluate every condition,
    write ``records.jsonl``, ``report.json`` and ``table.md`` there; returns the summary (``table_text``: the
    printable table)."""
    import torch

    from g2u.pipeline import G2UPipeline
    from g2u.sandbox.train import TrainConfig, read_training_facts, train_demo_answerer

    torch.set_num_threads(config.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sandbox = Path(sandbox) if sandbox else out / "sandbox"
    if not (sandbox / MANIFEST).is_file():
        log(f"building the sandbox in {sandbox}: {build_sandbox(sandbox, config.n, config.seed)}")
    checkpoint = Path(checkpoint) if checkpoint else out / "qwen_image_edit_trained"
    if read_training_facts(checkpoint) is None:
        log(f"training the answerer into {checkpoint}")
        train_demo_answerer(checkpoint, train_config or TrainConfig(), log=log)
    pipe = G2UPipeline.from_checkpoint(str(checkpoint), "qwen_image_edit")
    samples = load_dataset(sandbox)
    records = evaluate_conditions(pipe, samples, sandbox, config, log=log)
    summary = summarise(records, config.conditions)
    summary.update(sandbox=str(sandbox), checkpoint=str(checkpoint), n=len(samples),
                   training=read_training_facts(checkpoint), config=config.__dict__)
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = format_table(summary, config.conditions)
    (out / "table.md").write_text(text + "\n")
    summary["table_text"] = text
    return summary
