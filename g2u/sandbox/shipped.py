"""The shipped trained sandbox checkpoint and the check that its recipe reproduces it.

``checkpoints/sandbox/qwen_image_edit_sandbox`` is a complete qwen_image_edit demo checkpoint whose
answerer ``g2u demo train`` trained on sandbox scenes with the default ``TrainConfig`` (the recipe, in
its ``g2u_trained.json`` with the held-out accuracies), and ``train.log`` (the run's log). Tests use it
as is, so no test trains. ``python -m g2u.sandbox.shipped`` (``make sandbox-retrain``) retrains from
the recipe and checks the logged numbers reproduce within ``TOLERANCE``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "sandbox" / "qwen_image_edit_sandbox"
TOLERANCE = {"accuracy": 0.03, "final_loss": 0.02}
"""Largest difference a retrain may show: accuracies on the 300 held-out samples (absolute; one thread,
fixed seeds, so a retrain on the same torch build is expected to be exact, and this allows for another
CPU's kernels) and the final loss (absolute)."""


def compare(logged: dict, again: dict) -> list[str]:
    """Every logged number the retrain misses by more than the tolerance (empty: reproduced)."""
    problems = []
    if logged.get("config") != again.get("config"):
        problems.append(f"config differs: {logged.get('config')} vs {again.get('config')}")
    for key, value in logged.items():
        if not isinstance(value, (int, float)) or key in ("train_s", "vision_s", "steps", "eval_n"):
            continue
        tol = TOLERANCE["final_loss"] if "loss" in key else TOLERANCE["accuracy"]
        if abs(again.get(key, float("nan")) - value) > tol or again.get(key) is None:
            problems.append(f"{key}: logged {value}, retrained {again.get(key)} (tolerance {tol})")
        elif key.startswith("accuracy"):
            for kind, v in logged.get(f"{key}_by_kind", {}).items():
                w = again.get(f"{key}_by_kind", {}).get(kind, float("nan"))
                if not abs(w - v) <= 2 * tol:
                    problems.append(f"{key}/{kind}: logged {v}, retrained {w} (tolerance {2 * tol})")
    return problems


def main(argv: list[str] | None = None) -> int:
    from g2u.sandbox.train import TrainConfig, read_training_facts, train_demo_answerer

    p = argparse.ArgumentParser(description="retrain the shipped sandbox checkpoint and compare")
    p.add_argument("--out", default=None, help="where to retrain (default: a temporary folder)")
    args = p.parse_args(argv)
    logged = read_training_facts(SHIPPED)
    if logged is None:
        print(f"no shipped checkpoint at {SHIPPED}", file=sys.stderr)
        return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="g2u-retrain-"))
    config = TrainConfig(**logged["config"])
    again = train_demo_answerer(out, config, eval_n=logged["eval_n"], log=lambda m: print(m, file=sys.stderr))
    problems = compare(logged, again)
    print(json.dumps({"reproduced": not problems, "problems": problems, "out": str(out)}, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
