"""Where evaluation predictions come from: the G→U pipeline in this process, or a running TorchServe
endpoint (how one evaluation spreads over many GPUs and hosts: point it at a load balancer)."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests as http
from PIL import Image

from g2u.batch import Batch, Outcome, RawItem, run_batch
from g2u.eval.datasets import Sample
from g2u.eval.runner import EvalConfig
from g2u.images import png_bytes
from g2u.modes import needs_thought
from g2u.pipeline import G2UPipeline
from g2u.types import EditRecord, Thought


def _thought_name(sample_id: str, config: EvalConfig) -> str:
    """One file per (sample, thought settings): runs with other prompts can share an output folder."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", sample_id)[:120]
    return f"{safe}-{config.thought_key()[:8]}.png"


def _error_record(sample: Sample, mode: str, error: dict, status: int) -> dict:
    return {"id": sample.id, "mode": mode, "prediction": "", "error": error, "status": status}


class LocalPredictor:
    """Runs the pipeline in-process through the core's batch path (``g2u.batch``). All thought modes of a
    sample share one thought (stage I runs once per sample), and a thought saved by an earlier run is
    reloaded instead of recomputed."""

    def __init__(self, pipeline: G2UPipeline):
        self.pipeline = pipeline
        from g2u.identity import checkpoint_label

        info = pipeline.backend.info
        # backend, checkpoint path and content, dtype (with quantization/offload): the resume key's model
        self.label = checkpoint_label(info.backend, info.checkpoint, info.dtype)

    def predict(self, samples: Sequence[Sample], modes: Sequence[Sequence[str]], config: EvalConfig,
                thought_dir: Path, reuse: dict[str, dict]) -> list[dict]:
        images = {s.id: s.load_image() for s in samples}

        info = self.pipeline.backend.info

        def raw(sample: Sample, mode: str, thought: Thought | None = None) -> RawItem:
            fields = config.sample_fields(sample, mode, backend=info.backend, demo=info.demo)
            if sample.thought_path and needs_thought(mode) and thought is None:
                fields["thought"] = sample.thought_bytes()  # brought by another system: used, not generated
            return RawItem(fields, images[sample.id], gold_answer=sample.answer, thought=thought)

        # 1. One thought per sample: reloaded when an earlier run saved it, else stage I (batched).
        thoughts: dict[str, Thought] = {}
        failed: dict[str, Outcome] = {}
        need: list[tuple[Sample, str]] = []
        for sample, sample_modes in zip(samples, modes):
            thought_modes = [m for m in sample_modes if needs_thought(m)]
            if not thought_modes:
                continue
            earlier = reuse.get(sample.id)
            if earlier and (thought_dir / Path(earlier["thought_path"]).name).is_file():
                thoughts[sample.id] = _thought_from_record(earlier, thought_dir)
            else:
                need.append((sample, thought_modes[0]))
        if need:
            batch = Batch(self.pipeline)
            batch.parse([raw(s, m) for s, m in need])
            batch.edit()
            for (sample, _), item in zip(need, batch.items):
                if item.ok and item.thought is not None:
                    item.thought.image.save(thought_dir / _thought_name(sample.id, config))
                    thoughts[sample.id] = item.thought
                elif item.ok:  # the confidence gate answered without a thought; stage II asks it again
                    continue
                else:
                    failed[sample.id] = item

        # 2. Stage II for every (sample, mode), batched; a sample whose thought failed fails its thought modes.
        records: list[dict] = []
        jobs: list[tuple[Sample, str]] = []
        for sample, sample_modes in zip(samples, modes):
            for mode in sample_modes:
                if needs_thought(mode) and sample.id in failed:
                    item = failed[sample.id]
                    records.append(_error_record(sample, mode, item.error or {}, item.status))
                else:
                    jobs.append((sample, mode))
        outcomes = run_batch(self.pipeline, [raw(s, m, thoughts.get(s.id) if needs_thought(m) else None)
                                             for s, m in jobs])
        for (sample, mode), outcome in zip(jobs, outcomes):
            if not outcome.ok or outcome.result is None:
                records.append(_error_record(sample, mode, outcome.error or {}, outcome.status))
                continue
            result = outcome.result
            out = result.to_dict()
            record = {"id": sample.id, "mode": mode, "prediction": result.answer,
                      "edit": out["edit"], "measures": out["measures"], "timings_ms": out["timings_ms"],
                      "reasoning": result.reasoning, "model": out["model"]}
            record.update({k: out[k] for k in ("gate", "candidates", "selection") if k in out})
            if result.thought is not None:
                record["thought_path"] = f"thoughts/{_thought_name(sample.id, config)}"
            records.append(record)
        return records


def _thought_from_record(record: dict, thought_dir: Path) -> Thought:
    known = {f.name for f in dataclasses.fields(EditRecord)}
    edit = {k: v for k, v in record["edit"].items() if k in known}
    edit["size"] = tuple(edit["size"])
    image = Image.open(thought_dir / Path(record["thought_path"]).name).convert("RGB")
    measures = record.get("measures") or record.get("fidelity") or {}
    return Thought(image=image, edit=EditRecord(**edit), measures=measures,
                   timings_ms={"edit": 0.0, "reused": 1.0})


class EndpointPredictor:
    """Sends each (sample, mode) to a TorchServe predictions URL, a batch's requests concurrently so the
    server can batch them. Input errors (4xx) become error records; server errors are retried, then
    raised, so the run stops and a rerun resumes from the last appended prediction."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 600.0, retries: int = 3,
                 backend: str | None = None):
        self.url = url
        self.backend = backend
        """The served backend, when known (``--backend``): the protocol's answer budget is the one for it;
        unknown, the server's own budget stands (its model-config ``max_new_tokens``)."""
        self._label: str | None = None
        self.timeout_s = timeout_s
        self.retries = retries
        self.session = http.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @property
    def label(self) -> str:
        """The served model's identity (its ``describe`` answer: backend, checkpoint content, dtype), so
        another model behind the same URL never resumes this one's predictions; the URL where the server
        does not describe itself."""
        if self._label is None:
            identity = None
            try:
                resp = self.session.post(self.url, json={}, headers={"describe": "True"},
                                         timeout=min(60, self.timeout_s))
                identity = resp.json().get("identity") if resp.ok else None
            except (http.RequestException, ValueError, AttributeError):
                identity = None
            self._label = f"endpoint:{identity}" if identity else f"endpoint:{self.url}"
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        self._label = value

    def _post(self, payload: dict[str, Any]) -> tuple[int, dict]:
        for attempt in range(self.retries + 1):
            try:
                resp = self.session.post(self.url, json=payload, timeout=self.timeout_s)
            except http.ConnectionError:
                if attempt == self.retries:
                    raise
                time.sleep(2**attempt)
                continue
            if resp.status_code < 500 or attempt == self.retries:
                break
            time.sleep(2**attempt)
        try:
            body = resp.json()
        except ValueError:
            body = {"error": "non_json_response", "reason": resp.text[:500]}
        if resp.status_code >= 500:
            raise RuntimeError(f"{self.url} answered {resp.status_code}: {body}")
        return resp.status_code, body

    def predict(self, samples: Sequence[Sample], modes: Sequence[Sequence[str]], config: EvalConfig,
                thought_dir: Path, reuse: dict[str, dict]) -> list[dict]:
        jobs = []
        for sample, sample_modes in zip(samples, modes):
            image_b64 = base64.b64encode(png_bytes(sample.load_image())).decode()
            for mode in sample_modes:
                payload = {"image": image_b64, **config.sample_fields(sample, mode, backend=self.backend,
                                                                      budget=self.backend is not None),
                           "return_thought": needs_thought(mode)}
                if not sample.options:
                    payload.pop("options")
                jobs.append((sample, mode, payload))
        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
            replies = list(pool.map(lambda job: self._post(job[2]), jobs))
        records = []
        for (sample, mode, _), (status, body) in zip(jobs, replies):
            if status >= 400:
                records.append(_error_record(sample, mode, body, status))
                continue
            record = {"id": sample.id, "mode": mode, "prediction": body.get("answer", ""),
                      "edit": body.get("edit"), "measures": body.get("measures", body.get("fidelity")),
                      "timings_ms": body.get("timings_ms"), "reasoning": body.get("reasoning"),
                      "model": body.get("model")}
            if body.get("thought"):
                name = _thought_name(sample.id, config)
                Image.open(io.BytesIO(base64.b64decode(body["thought"]))).save(thought_dir / name)
                record["thought_path"] = f"thoughts/{name}"
            records.append(record)
        return records
