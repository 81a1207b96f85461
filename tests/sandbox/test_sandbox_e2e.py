"""End to end on the sandbox: a trained demo answerer, the real pipeline, the known G→U effect.

The effect is known by construction: answering from a degraded image is worse than from the clean one,
and g2u with the clean image as its thought ([degraded I, q, clean Î]) beats the degraded baseline. A
change that breaks scoring, the pairing of samples and conditions, the [I, q, Î] ordering or the delta
computation makes these fail. Training is deterministic (seeded, one CPU thread), so the model is the
same on every run; the margins are about half the smallest effect measured over sandbox seeds 1–3 at
n=700 with the default training: clean − degraded 5.1–6.0 points, oracle g2u − degraded 4.0–5.1 points
(paired bootstrap 95% intervals from +1.6), clean accuracy 45–50% (answer-prior chance ≈ 35–38%).
The first run trains (≈5 min on the shared 2-core machine); later runs reuse pytest's cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from g2u.sandbox.train import TrainConfig, read_training_facts, train_demo_answerer

E2E_TRAIN = TrainConfig(max_seconds=1800)
E2E_N = 700
E2E_SEED = 1
CLEAN_OVER_DEGRADED = 0.025
ORACLE_OVER_DEGRADED = 0.02
ABOVE_CHANCE_CLEAN = 0.42
CODE = ("g2u/sandbox/train.py", "g2u/sandbox/scenes.py", "g2u/sandbox/questions.py", "g2u/sandbox/degrade.py",
        "g2u/sandbox/samples.py", "g2u/backends/qwen_vl.py", "g2u/demo/qwen.py")


@pytest.fixture(scope="session")
def trained_answerer(request, tmp_path_factory) -> Path:
    """The answerer trained once and cached in pytest's cache, keyed by its config and the code that
    draws its data and builds it (a change to either retrains); without the cache plugin, in a temp dir."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256(json.dumps(E2E_TRAIN.__dict__, sort_keys=True).encode())
    for name in CODE:
        digest.update((root / name).read_bytes())
    cache = getattr(request.config, "cache", None)
    base = Path(cache.mkdir("g2u-sandbox-answerer")) if cache is not None else tmp_path_factory.mktemp("answerer")
    folder = base / digest.hexdigest()[:16]
    if read_training_facts(folder) is None:
        train_demo_answerer(folder, E2E_TRAIN, eval_n=0, log=lambda m: None)
    return folder


@pytest.mark.e2e
def test_sandbox_report_shows_the_known_effect(trained_answerer, tmp_path):
    from g2u.sandbox.report import ReportConfig, run_report

    config = ReportConfig(n=E2E_N, seed=E2E_SEED, conditions=("clean", "degraded", "g2u_oracle"))
    summary = run_report(tmp_path, config, checkpoint=trained_answerer, log=lambda m: None)
    acc = {cond: cell["acc"] for cond, cell in summary["table"]["all"].items()}
    assert acc["clean"] >= ABOVE_CHANCE_CLEAN, acc
    assert acc["clean"] - acc["degraded"] >= CLEAN_OVER_DEGRADED, acc
    assert acc["g2u_oracle"] - acc["degraded"] >= ORACLE_OVER_DEGRADED, acc
    gain = summary["oracle_gain"]
    assert gain["gain"] == pytest.approx(acc["g2u_oracle"] - acc["degraded"])
    assert gain["low"] > 0, gain  # the paired interval excludes no gain
    assert (tmp_path / "table.md").read_text().count("\n") > 20
