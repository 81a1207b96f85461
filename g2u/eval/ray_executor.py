"""Evaluation on Ray: the runner's batches spread over Ray Data actors, each holding one pipeline (one GPU
per actor on a GPU cluster, CPUs on a laptop), the results streamed back to the driver.

The driver keeps every side effect: it alone appends ``predictions.jsonl``, writes the thought PNGs and
logs to MLflow (``g2u.eval.runner.evaluate`` does all three, unchanged). An actor works in a private
temporary folder and returns its records with the PNG bytes of their thoughts; the driver ships each
batch its images (so actors need no shared filesystem) and the PNGs of thoughts an earlier run made (so a
resumed run reuses them, as in-process). Each item keeps its own seed, so the records are those of the
in-process run whatever actor computes them.

``RayPredictor`` satisfies the runner's ``Predictor`` protocol (``predict`` one batch), and streams with
``run_batches`` (every batch of a run through one actor pool, the pipelines loaded once per actor).
"""

from __future__ import annotations

import base64
import functools
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from g2u.eval.datasets import Sample
from g2u.eval.runner import EvalConfig, Predictor

Chunk = list[tuple[Sample, list[str]]]
"""One runner batch: samples with the modes still to predict for each."""

__all__ = ["RayPredictor", "local_predictor", "model_label", "run_batches"]


def local_predictor(checkpoint: str | None = None, backend: str | None = None, **load_kwargs: Any) -> Predictor:
    """An in-process predictor (``LocalPredictor`` on ``G2UPipeline.from_checkpoint``; no checkpoint: the
    demo's, ``g2u.checkpoints``); built inside each actor, so pass
    ``functools.partial(local_predictor, checkpoint, backend)`` as ``make_predictor``."""
    from g2u.checkpoints import resolve_checkpoint
    from g2u.eval.predictors import LocalPredictor
    from g2u.pipeline import G2UPipeline

    return LocalPredictor(G2UPipeline.from_checkpoint(resolve_checkpoint(checkpoint, backend), backend, **load_kwargs))


def model_label(checkpoint: str | None = None, backend: str | None = None, quantize: str = "none",
                offload: str = "none", dtype: str | None = None) -> str:
    """The label ``LocalPredictor`` would report (``g2u.identity.checkpoint_label``: backend, checkpoint
    content, dtype as loaded here), without loading any weights: a Ray run and an in-process run of one
    model resume each other's predictions."""
    from g2u.backends import detect_backend
    from g2u.checkpoints import resolve_checkpoint
    from g2u.devices import dtype_name, resolve_device, resolve_dtype
    from g2u.identity import checkpoint_label, fit_dtype

    checkpoint = resolve_checkpoint(checkpoint, backend)
    if dtype is None:
        dtype = dtype_name(resolve_dtype(None, resolve_device(None)))
    return checkpoint_label(backend or detect_backend(checkpoint), checkpoint, fit_dtype(dtype, quantize, offload))


def _portable(sample: Sample) -> Sample:
    """The sample with its image inline (base64), readable on any node."""
    if sample.image_path is None:
        return sample
    data = base64.b64encode(Path(sample.image_path).read_bytes()).decode()
    return replace(sample, image_path=None, image_b64=data)


class _PipelineActor:
    """One Ray Data actor: loads one pipeline, predicts the batches it is handed."""

    def __init__(self, make_predictor: Callable[[], Predictor], config: EvalConfig, num_threads: int = 1):
        import torch

        # CPU float sums follow the thread count: pinned to the actor's CPUs, so a run is reproducible
        # (and equals an in-process run with as many threads).
        torch.set_num_threads(max(1, num_threads))
        self.predictor = make_predictor()
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="g2u-ray-thoughts-"))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        results = []
        for job in batch["job"]:
            samples, modes, reuse, pngs = pickle.loads(job)
            folder = Path(tempfile.mkdtemp(dir=self.workdir))  # one batch's thoughts, removed after it
            try:
                for name, data in pngs.items():
                    (folder / name).write_bytes(data)
                records = self.predictor.predict(samples, modes, self.config, folder, reuse)
                thoughts = {}
                for record in records:
                    if record.get("thought_path"):
                        name = Path(record["thought_path"]).name
                        thoughts[name] = (folder / name).read_bytes()
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            results.append(pickle.dumps((records, thoughts)))
        return {"index": list(batch["index"]), "result": results}

    def __del__(self):
        shutil.rmtree(getattr(self, "workdir", ""), ignore_errors=True)


def _job(chunk: Chunk, reuse: dict[str, dict], thought_dir: Path) -> bytes:
    ids = {s.id for s, _ in chunk}
    earlier = {sid: rec for sid, rec in reuse.items() if sid in ids}
    pngs = {}
    for rec in earlier.values():
        path = thought_dir / Path(rec["thought_path"]).name
        if path.is_file():
            pngs[path.name] = path.read_bytes()
    return pickle.dumps(([_portable(s) for s, _ in chunk], [list(m) for _, m in chunk], earlier, pngs))


def run_batches(chunks: Sequence[Chunk], make_predictor: Callable[[], Predictor], config: EvalConfig,
                thought_dir: Path, reuse: dict[str, dict], *, concurrency: int = 1, num_gpus: float = 0.0,
                num_cpus: float = 1.0) -> Iterator[tuple[Chunk, list[dict]]]:
    """Predict every chunk on a pool of ``concurrency`` actors; yield ``(chunk, records)`` as each chunk
    finishes (completion order), its thought PNGs already written to ``thought_dir``.

    ``ray.init`` must have been called (``RayPredictor`` does). ``num_gpus`` per actor: 1 on a GPU
    cluster, so each actor holds one pipeline on its own GPU.
    """
    import ray.data

    if not chunks:
        return
    items = [{"index": i, "job": _job(chunk, reuse, thought_dir)} for i, chunk in enumerate(chunks)]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _PipelineActor, batch_size=1, batch_format="numpy",
        # one batch at a time per actor: a pipeline is not shared between threads
        compute=ray.data.ActorPoolStrategy(size=concurrency, max_tasks_in_flight_per_actor=1),
        num_gpus=num_gpus, num_cpus=num_cpus,
        fn_constructor_kwargs={"make_predictor": make_predictor, "config": config,
                               "num_threads": max(1, int(num_cpus))})
    thought_dir.mkdir(parents=True, exist_ok=True)
    for row in ds.iter_rows():
        records, thoughts = pickle.loads(row["result"])
        for name, data in thoughts.items():
            (thought_dir / name).write_bytes(data)
        yield chunks[int(row["index"])], records


class RayPredictor:
    """The runner's ``Predictor`` on Ray: ``predict`` runs one batch; ``run_batches`` streams a whole run
    through one actor pool. ``address``: a Ray cluster (``ray://host:10001`` or ``auto``); None starts a
    local Ray on this machine unless one is already initialised."""

    def __init__(self, make_predictor: Callable[[], Predictor], label: str, *, address: str | None = None,
                 concurrency: int = 1, num_gpus: float = 0.0, num_cpus: float = 1.0,
                 init_kwargs: dict[str, Any] | None = None):
        import ray

        if not ray.is_initialized():
            ray.init(address=address or None, **(init_kwargs or {}))
        self.label = label
        self._run = functools.partial(run_batches, make_predictor=make_predictor, concurrency=concurrency,
                                      num_gpus=num_gpus, num_cpus=num_cpus)

    def run_batches(self, chunks: Sequence[Chunk], config: EvalConfig, thought_dir: Path,
                    reuse: dict[str, dict]) -> Iterator[tuple[Chunk, list[dict]]]:
        return self._run(chunks, config=config, thought_dir=thought_dir, reuse=reuse)

    def predict(self, samples: Sequence[Sample], modes: Sequence[Sequence[str]], config: EvalConfig,
                thought_dir: Path, reuse: dict[str, dict]) -> list[dict]:
        """One runner batch, one sample per actor call (the batch spreads over the pool), records in input
        order. Each call starts the pool anew (pipelines load again): a runner that streams through
        ``run_batches`` loads them once per run."""
        chunks = [[(s, list(m))] for s, m in zip(samples, modes)]
        by_id = {chunk[0][0].id: records for chunk, records in self.run_batches(chunks, config, thought_dir, reuse)}
        return [rec for s in samples for rec in by_id[s.id]]
