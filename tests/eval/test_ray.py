"""Evaluation on Ray (g2u.eval.ray_executor) with a local Ray: the same records and thoughts as the
in-process run for the same seeds, written by the driver alone; a resumed run computes only what is
missing and reuses earlier thoughts."""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from test_mlflow_project import make_benchmark  # noqa: E402

from g2u.eval.datasets import load_dataset  # noqa: E402
from g2u.eval.predictors import LocalPredictor  # noqa: E402
from g2u.eval.runner import EvalConfig, evaluate, read_records  # noqa: E402
from g2u.pipeline import G2UPipeline  # noqa: E402

ray = pytest.importorskip("ray", reason="pip install -e '.[ray]'")
from g2u.eval.ray_executor import RayPredictor, local_predictor, model_label  # noqa: E402

pytestmark = pytest.mark.e2e
CONFIG = EvalConfig.create(("baseline", "g2u"), steps=2, seed=0)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory):
    """The in-process run: samples, checkpoint and its output folder. With one torch thread, as each actor
    (num_cpus=1): CPU float sums follow the thread count, and the comparison below is exact."""
    tmp = tmp_path_factory.mktemp("ray-ref")
    samples = load_dataset(make_benchmark(tmp / "bench", n=4))
    checkpoint = str(demo_root / "qwen_image_edit")
    with one_thread():
        result = evaluate(samples, LocalPredictor(G2UPipeline.from_checkpoint(checkpoint, "qwen_image_edit")),
                          CONFIG, tmp / "local", batch_size=2, progress=False)
    assert result.computed == 8
    return samples, checkpoint, result.out_dir


def _comparable(records: list[dict]) -> dict[tuple[str, str], dict]:
    """Records keyed by (id, mode), without what legitimately differs between runs (wall times)."""
    return {(r["id"], r["mode"]): {k: v for k, v in r.items() if k != "timings_ms"} for r in records}


def _predictor(checkpoint: str, concurrency: int = 2) -> RayPredictor:
    return RayPredictor(functools.partial(local_predictor, checkpoint, "qwen_image_edit"),
                        model_label(checkpoint, "qwen_image_edit"), concurrency=concurrency)


def test_ray_run_gives_the_in_process_records_and_thoughts(local_ray, reference, tmp_path):
    samples, checkpoint, ref_dir = reference
    result = evaluate(samples, _predictor(checkpoint), CONFIG, tmp_path / "ray", batch_size=4, progress=False)
    assert result.computed == 8 and result.reused == 0
    got, want = _comparable(result.records), _comparable(read_records(ref_dir / "predictions.jsonl"))
    assert set(got) == set(want)
    diff = {k: {f: (got[k].get(f), want[k].get(f)) for f in set(got[k]) | set(want[k])
                if got[k].get(f) != want[k].get(f)} for k in want if got[k] != want[k]}
    assert not diff, diff
    for r in result.records:
        if r.get("thought_path"):  # written by the driver, byte-identical to the in-process thought
            assert (tmp_path / "ray" / r["thought_path"]).read_bytes() == (ref_dir / r["thought_path"]).read_bytes()


def test_resumed_ray_run_computes_only_the_missing_and_reuses_earlier_thoughts(local_ray, reference, tmp_path):
    samples, checkpoint, ref_dir = reference
    out = tmp_path / "resume"
    # an in-process run stopped after the first two samples ...
    with one_thread():
        evaluate(samples[:2], LocalPredictor(G2UPipeline.from_checkpoint(checkpoint, "qwen_image_edit")),
                 CONFIG, out, batch_size=2, progress=False)
    # ... resumed on Ray, with a third mode whose answers need the thoughts the first run made
    predictor = _predictor(checkpoint)
    # the model label is part of the settings (evaluate sets it from the predictor): the same as in-process
    config = EvalConfig.create(("baseline", "g2u", "replace"), model=predictor.label, steps=2, seed=0)
    done_before = read_records(out / "predictions.jsonl")
    chunks = [[(s, ["replace"])] for s in samples[:2]]
    reuse = {r["id"]: r for r in done_before if r.get("thought_path")}
    streamed = list(predictor.run_batches(chunks, config, out / "thoughts", reuse))
    assert sorted(c[0][0].id for c, _ in streamed) == [s.id for s in samples[:2]]
    for _, records in streamed:
        [rec] = records
        assert rec["timings_ms"].get("reused") == 1.0  # the earlier thought, not a new stage-I run

    result = evaluate(samples, predictor, CONFIG, out, batch_size=4, progress=False)
    assert result.reused == 4 and result.computed == 4  # samples 3 and 4 only
    assert _comparable(result.records) == _comparable(read_records(ref_dir / "predictions.jsonl"))
    again = evaluate(samples, predictor, CONFIG, out, batch_size=4, progress=False)
    assert again.computed == 0
