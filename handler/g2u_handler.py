"""TorchServe handler for Generation-to-Understanding inference.

    preprocess  decode + validate every item (``g2u.requests.parse_request`` and ``G2UPipeline.check``)
    edit        stage I over the whole batch   (``G2UPipeline.imagine``)
    understand  stage II over the whole batch  (``G2UPipeline.understand``)
    postprocess one JSON body per item, with its own HTTP status

The handler holds no G→U logic: it adapts TorchServe's batch format to the ``g2u`` core, keeps per-item
errors apart (a bad item gets its own 4xx and never fails its batch-mates) and reports custom metrics.
It is packed into the .mar on its own, so it imports nothing from this repository but ``g2u``.
"""

from __future__ import annotations

import base64
import http
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

from g2u.bodies import check_body, image_from_form_value, parse_json_body
from g2u.errors import G2UError, InputError
from g2u.images import DEFAULT_MAX_PIXELS, png_bytes
from g2u.pipeline import G2UPipeline, G2UResult
from g2u.requests import KNOWN_FIELDS, G2URequest, parse_request
from g2u.types import Thought
from g2u.writers import WriterConfig

logger = logging.getLogger(__name__)

# Custom metrics; names, types and dimensions must match handler/metrics.yaml (the frontend only exports
# model metrics it finds there).
STAGE_LATENCY = "g2u_stage_latency_seconds"
BATCHES = "g2u_batches"
ERRORS = "g2u_errors"
STAGES = ("preprocess", "edit", "understand", "postprocess")


def _as_text(value: Any) -> Any:
    """Multipart text fields may arrive as bytes (when the client sends no text/* content type)."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError("body", "form fields must be UTF-8 text") from exc
    return value


def split_fields(row: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """TorchServe's per-request dict → (user fields, uploaded image bytes or None).

    JSON requests arrive as ``{"body": {...}}`` (already parsed by the worker), multipart forms as one
    entry per form field (the ``image`` part as bytes).
    """
    if set(row) == {"body"} or set(row) == {"data"}:
        body = next(iter(row.values()))
        if isinstance(body, (bytes, bytearray)):  # TorchServe could not parse it (or it is not JSON)
            return parse_json_body(body), None
        if not isinstance(body, dict):
            raise InputError("body", f"must be a JSON object, got {type(body).__name__}")
        return check_body(body), None
    image = row.get("image")
    fields = {k: _as_text(v) for k, v in row.items() if k != "image"}
    if isinstance(image, str):  # a form text field carrying base64: let parse_request decode it
        fields["image"] = image
        image = None
    elif image is not None:  # a file upload, or a base64 text field that TorchServe hands over as bytes
        image = image_from_form_value(image)
    return fields, image


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body for an exception raised while serving one item."""
    if isinstance(exc, InputError):
        return exc.status, exc.to_dict()
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return 507, {"error": "out_of_resources", "reason": "the accelerator ran out of memory"}
    if isinstance(exc, G2UError):
        return getattr(exc, "status", 500), {"error": "model_error", "reason": str(exc)}
    return 500, {"error": "model_error", "reason": f"{type(exc).__name__}: {exc}"}


class G2UHandler(BaseHandler):
    """TorchServe entry point: preprocess → edit → understand → postprocess, batched."""

    @dataclass
    class Item:
        """One request of a TorchServe batch as it moves through the stages; ``error`` set means done.
        (Nested: TorchServe wants exactly one class in a handler module.)"""

        request: G2URequest | None = None
        thought: Thought | None = None
        result: G2UResult | None = None
        status: int = 200
        error: dict[str, Any] | None = None
        timings_ms: dict[str, float] = field(default_factory=dict)

        @property
        def ok(self) -> bool:
            return self.error is None

    def __init__(self) -> None:
        super().__init__()
        self.pipeline: G2UPipeline | None = None
        self.defaults: dict[str, Any] = {}
        self.max_pixels = DEFAULT_MAX_PIXELS
        self.model_name = "g2u"
        self._batch_size = 0

    # ------------------------------------------------------------------ lifecycle
    def initialize(self, context: Any) -> None:
        """Load the checkpoint named in the model-config yaml's ``handler:`` section on TorchServe's GPU."""
        self.context = context
        self.manifest = context.manifest
        props = context.system_properties
        self.model_name = context.model_name or "g2u"
        cfg = dict((getattr(context, "model_yaml_config", None) or {}).get("handler") or {})
        gpu_id = props.get("gpu_id")
        device = f"cuda:{gpu_id}" if torch.cuda.is_available() and gpu_id is not None else "cpu"
        self.device = torch.device(device)
        checkpoint = cfg.get("checkpoint")
        if checkpoint:
            path = Path(str(checkpoint)).expanduser()
            # A relative path points inside the extracted .mar (the demo); an absolute one at a real
            # checkpoint on this machine, never copied into the archive.
            checkpoint = str(path if path.is_absolute() else Path(props.get("model_dir", ".")) / path)
        dtype = cfg.get("dtype")
        # The writers' settings come from the environment (OPENAI_*, G2U_WRITER_*): a bad value stops the
        # model from loading, with its name in the model log, instead of failing every writer request.
        writer_config = WriterConfig.from_env()
        self.pipeline = G2UPipeline.from_checkpoint(checkpoint, cfg.get("backend") or None, device=device,
                                                    dtype=None if dtype in (None, "auto") else dtype,
                                                    writer_config=writer_config)
        defaults = dict(cfg.get("defaults") or {})
        unknown = sorted(set(defaults) - KNOWN_FIELDS)
        if unknown:
            raise ValueError(f"model-config handler.defaults has unknown fields {unknown}")
        self.defaults = defaults
        self.max_pixels = int(cfg.get("max_pixels", DEFAULT_MAX_PIXELS))
        self._init_metrics(context)
        self.initialized = True
        logger.info("G2U handler ready: %s", json.dumps(self.pipeline.model_info))

    def _init_metrics(self, context: Any) -> None:
        """Fetch the custom metrics from the worker's cache (defined in metrics.yaml); add them if absent."""
        self._metrics: dict[str, Any] = {}
        cache = getattr(context, "metrics", None)
        if cache is None:
            return
        specs = {STAGE_LATENCY: ("s", ["ModelName", "Level", "Stage"], MetricTypes.HISTOGRAM),
                 BATCHES: ("count", ["ModelName", "Level", "Size"], MetricTypes.COUNTER),
                 ERRORS: ("count", ["ModelName", "Level", "Kind", "Field"], MetricTypes.COUNTER)}
        for name, (unit, dims, kind) in specs.items():
            try:
                self._metrics[name] = cache.get_metric(name, kind)
            except Exception:  # noqa: BLE001 - ts raises its own cache errors; fall back to adding it
                self._metrics[name] = cache.add_metric_to_cache(name, unit, dims, kind)

    def _metric(self, name: str, value: float, *dims: str) -> None:
        metric = self._metrics.get(name) if hasattr(self, "_metrics") else None
        if metric is not None:
            metric.add_or_update(value, [self.model_name, "Model", *dims])

    # ------------------------------------------------------------------ stages
    def preprocess(self, data: list[dict[str, Any]]) -> list[G2UHandler.Item]:
        """Decode and validate each item on its own; an invalid item is answered and skips the model."""
        assert self.pipeline is not None, "initialize() was not called"
        start = time.perf_counter()
        self._batch_size = len(data)
        self._metric(BATCHES, 1, str(len(data)))
        items = []
        for row in data:
            t0 = time.perf_counter()
            item = self.Item()
            try:
                fields, image = split_fields(row)
                # Configured defaults fill the fields a request leaves out (or sends empty, as forms do).
                merged = dict(fields)
                for key, value in self.defaults.items():
                    if merged.get(key) in (None, ""):
                        merged[key] = value
                item.request = parse_request(merged, modes=self.pipeline.modes, max_pixels=self.max_pixels,
                                             image=image)
                self.pipeline.check(item.request)
            except Exception as exc:  # noqa: BLE001 - every failure becomes this item's own response
                self._fail(item, exc)
            item.timings_ms["preprocess"] = round((time.perf_counter() - t0) * 1000, 2)
            items.append(item)
        self._metric(STAGE_LATENCY, time.perf_counter() - start, "preprocess")
        return items

    def inference(self, items: list[G2UHandler.Item], *args: Any, **kwargs: Any) -> list[G2UHandler.Item]:
        """Stage I then stage II, each batched over the items still valid."""
        return self.understand(self.edit(items))

    def edit(self, items: list[G2UHandler.Item]) -> list[G2UHandler.Item]:
        """Stage I (the visual thoughts), one batched call for all valid items."""
        assert self.pipeline is not None
        pipe = self.pipeline

        def run(todo: Sequence[G2UHandler.Item]) -> None:
            for item, thought in zip(todo, pipe.imagine([it.request for it in todo])):
                item.thought = thought

        self._stage("edit", items, run)
        return items

    def understand(self, items: list[G2UHandler.Item]) -> list[G2UHandler.Item]:
        """Stage II (the answers from [I, q, Î]), one batched call for all valid items."""
        assert self.pipeline is not None
        pipe = self.pipeline

        def run(todo: Sequence[G2UHandler.Item]) -> None:
            for item, result in zip(todo, pipe.understand([it.request for it in todo], [it.thought for it in todo])):
                item.result = result

        self._stage("understand", items, run)
        return items

    def postprocess(self, items: list[G2UHandler.Item]) -> list[str]:
        """One JSON body per item; failed items get their own status through ``set_response_status``."""
        start = time.perf_counter()
        out = []
        for idx, item in enumerate(items):
            if item.ok and item.result is not None:
                t0 = time.perf_counter()
                body = item.result.to_dict()
                if item.request is not None and item.request.return_thought and item.result.thought is not None:
                    body["thought"] = base64.b64encode(png_bytes(item.result.thought.image)).decode("ascii")
                timings = {**item.timings_ms, **body.get("timings_ms", {})}
                timings["postprocess"] = round((time.perf_counter() - t0) * 1000, 2)
                body["timings_ms"] = timings
                body["batch_size"] = self._batch_size
            else:
                if item.error is None:  # cannot happen: a valid item always gets a result
                    self._fail(item, RuntimeError("no result was produced"))
                body = dict(item.error or {})
                self._set_status(idx, item.status)
            self._set_content_type(idx)
            out.append(json.dumps(body, ensure_ascii=False))
        self._metric(STAGE_LATENCY, time.perf_counter() - start, "postprocess")
        return out

    # ------------------------------------------------------------------ helpers
    def _stage(self, name: str, items: list[G2UHandler.Item],
               run: Callable[[Sequence[G2UHandler.Item]], None]) -> None:
        """Run one batched stage; if the batch fails, rerun item by item so only the culprit fails."""
        todo = [it for it in items if it.ok]
        if not todo:
            return
        start = time.perf_counter()
        try:
            run(todo)
        except Exception as exc:  # noqa: BLE001 - isolate the failing item, keep the worker alive
            if len(todo) == 1:
                logger.warning("%s failed for one item", name, exc_info=True)
                self._fail(todo[0], exc)
            else:
                logger.warning("%s failed for a batch of %d; retrying item by item", name, len(todo), exc_info=True)
                for item in todo:
                    try:
                        run([item])
                    except Exception as one:  # noqa: BLE001
                        self._fail(item, one)
        self._metric(STAGE_LATENCY, time.perf_counter() - start, name)

    def _fail(self, item: G2UHandler.Item, exc: BaseException) -> None:
        item.status, item.error = error_body(exc)
        if item.status >= 500:
            logger.error("item failed: %s", item.error, exc_info=exc)
        self._metric(ERRORS, 1, str(item.error.get("error", "unknown")), str(item.error.get("field", "-")))

    def _set_status(self, idx: int, status: int) -> None:
        context = getattr(self, "context", None)
        if context is not None and getattr(context, "request_processor", None):
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "Error"
            context.set_response_status(code=status, phrase=phrase, idx=idx)

    def _set_content_type(self, idx: int) -> None:
        context = getattr(self, "context", None)
        if context is not None and getattr(context, "request_processor", None):
            context.set_response_content_type(idx, "application/json")
