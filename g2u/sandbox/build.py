"""``g2u sandbox build``: write N samples as a benchmark folder the evaluation reads as is.

Layout: ``DIR/sandbox.jsonl`` (the project's JSONL manifest: id, image, question, options, answer,
category, plus the sandbox's own fields), ``DIR/images/NNNNN.png`` (the degraded input) and
``DIR/thoughts/NNNNN.png`` (the clean image: the oracle thought). Build facts go to
``DIR/meta/sandbox_build.json``, below the top level, since a benchmark folder must hold exactly one
manifest.

An evaluation sandbox shares no content with training: its seed may not be a training seed
(``g2u.sandbox.recipe.check_seed``), and samples whose content a training stream holds, or that repeat an
earlier sample of the set, are skipped (``g2u.sandbox.samples.draw_disjoint``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from g2u.sandbox.leaks import check_manifest
from g2u.sandbox.recipe import check_seed, training_content
from g2u.sandbox.samples import SandboxSample, draw_disjoint

MANIFEST = "sandbox.jsonl"
META = Path("meta") / "sandbox_build.json"


class LeakError(ValueError):
    """The sandbox would leak answers: never written silently."""


def manifest_row(sample: SandboxSample, image: str, thought: str) -> dict:
    q = sample.question
    return {
        "id": f"sandbox-{Path(image).stem}",
        "draw": sample.index,
        "image": image,
        "question": q.text,
        "options": q.options,
        "answer": q.answer,
        "category": q.kind,
        "answer_text": q.answer_text,
        "degradation": sample.degradation,
        "severity": sample.severity,
        "expected_family": sample.expected_family,
        "oracle_thought": thought,
        "scene": sample.scene.to_dict(),
        "degradation_params": sample.params,
    }


def build_sandbox(folder: str | Path, n: int, seed: int = 0) -> dict:
    """Draw ``n`` samples of ``seed`` new by content (against training and each other), check them for
    leaks, write the folder; returns the build facts. Raises ValueError naming the field for a training
    seed, LeakError (nothing written) when a sample leaks."""
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    check_seed(seed)
    start = time.perf_counter()
    folder = Path(folder)
    samples = draw_disjoint(seed, n, exclude=training_content())
    rows = [manifest_row(s, f"images/{k:05d}.png", f"thoughts/{k:05d}.png") for k, s in enumerate(samples)]
    leaks = check_manifest(rows)
    if leaks:
        first = next(iter(leaks))
        raise LeakError(f"{len(leaks)} sandbox samples leak their answer, e.g. {first}: {leaks[first]}")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "thoughts").mkdir(parents=True, exist_ok=True)
    for sample, row in zip(samples, rows):
        sample.degraded.save(folder / row["image"])
        sample.clean.save(folder / row["oracle_thought"])
    (folder / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    facts = {"n": n, "seed": seed, "build_s": round(time.perf_counter() - start, 3), "leaks_checked": len(rows),
             "draws": samples[-1].index + 1, "disjoint_from_training": True}
    (folder / META).parent.mkdir(exist_ok=True)
    (folder / META).write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def read_build_facts(folder: str | Path) -> dict | None:
    path = Path(folder) / META
    return json.loads(path.read_text()) if path.is_file() else None
