"""TorchServe handler for Generation-to-Understanding inference.

    preprocess  decode + validate every item (``g2u.batch.Batch.parse``: the schema, the backend's checks)
    edit        stage I over the whole batch   (``Batch.imagine``)
    understand  stage II over the whole batch  (``Batch.understand``)
    postprocess one JSON body per item, with its own HTTP status

The handler holds no G→U logic: it adapts TorchServe's batch format to the core's one batch path
(``g2u.batch``: per-item errors kept apart, a failing batched stage retried item by item), times each
stage and reports custom metrics.
It is packed into the .mar on its own, so it imports nothing from this repository but ``g2u``.
"""

from __future__ import annotations

import base64
import http
import json
import logging
import time
from pathlib import Path
from typing import Any

from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

from g2u.batch import Batch, Outcome, RawItem, outcome_body
from g2u.bodies import check_body, image_from_form_value, parse_json_body
from g2u.budget import WorkBudget
from g2u.devices import resolve_device
from g2u.errors import InputError
from g2u.handler_settings import HandlerSettings
from g2u.images import png_bytes
from g2u.pipeline import G2UPipeline
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
    # A ``thought`` file part stays bytes (an image brought by the caller); every other part is text.
    fields = {k: bytes(v) if k == "thought" and isinstance(v, (bytes, bytearray)) else _as_text(v)
              for k, v in row.items() if k != "image"}
    if isinstance(image, str):  # a form text field carrying base64: let parse_request decode it
        fields["image"] = image
        image = None
    elif image is not None:  # a file upload, or a base64 text field that TorchServe hands over as bytes
        image = image_from_form_value(image)
    return fields, image


class G2UHandler(BaseHandler):
    """TorchServe entry point: preprocess → edit → understand → postprocess, batched."""

    def __init__(self) -> None:
        super().__init__()
        self.pipeline: G2UPipeline | None = None
        self.defaults: dict[str, Any] = {}
        self.settings = HandlerSettings()  # the model-config's handler: section, read in initialize()
        self.max_pixels = self.settings.max_pixels
        self.model_name = "g2u"
        self._batch_size = 0
        self.deadline_s: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def initialize(self, context: Any) -> None:
        """Load the checkpoint named in the model-config yaml's ``handler:`` section (``HandlerSettings``,
        validated first: a bad key stops the load with its name) on the GPU TorchServe assigned."""
        self.context = context
        self.manifest = context.manifest
        props = context.system_properties
        self.model_name = context.model_name or "g2u"
        settings = HandlerSettings.from_model_config(getattr(context, "model_yaml_config", None))
        self.settings = settings
        # g2u.devices picks the device (TorchServe's gpu_id where there is a GPU), once, for the whole load.
        self.device = resolve_device(settings.device, gpu_id=props.get("gpu_id"))
        # The writers' settings come from the environment (OPENAI_*, G2U_WRITER_*): a bad value stops the
        # model from loading, with its name in the model log, instead of failing every writer request.
        writer_config = WriterConfig.from_env()
        options = settings.model_copy(update={"checkpoint": settings.checkpoint_in(props.get("model_dir", ".")),
                                              "device": str(self.device)})
        self.pipeline = options.load(writer_config=writer_config, thought_cache=settings.thought_cache_store())
        self.defaults = dict(settings.defaults)
        self.max_pixels = settings.max_pixels
        # Responses name the checkpoint (checkpoint_name, else its folder's name); its server path only
        # when report_checkpoint_path is set.
        if not settings.report_checkpoint_path:
            loaded = self.pipeline.backend.info.checkpoint
            self.pipeline.checkpoint_label = settings.checkpoint_name or Path(loaded.split("+")[0]).name
        # Per-request work budget and deadline (g2u.budget, g2u.deadline): a request over the budget is refused
        # before any work; one past its deadline is answered 504 while its batch-mates are answered.
        self.pipeline.budget = WorkBudget.for_backend(self.pipeline.backend.default_edit_area,
                                                      **settings.budget.model_dump())
        self.deadline_s = settings.deadline_s
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
    def preprocess(self, data: list[dict[str, Any]]) -> Batch:
        """Decode and validate each item on its own; an invalid item is answered and skips the model."""
        assert self.pipeline is not None, "initialize() was not called"
        start = time.perf_counter()
        self._batch_size = len(data)
        self._metric(BATCHES, 1, str(len(data)))
        batch = Batch(self.pipeline, defaults=self.defaults, max_pixels=self.max_pixels, on_error=self._count_error,
                      deadline_s=self.deadline_s)
        for row in data:
            try:
                fields, image = split_fields(row)
            except Exception as exc:  # noqa: BLE001 - a body that cannot be read is this item's 4xx
                batch.reject(exc)
                continue
            batch.parse([RawItem(fields, image)])
        self._metric(STAGE_LATENCY, time.perf_counter() - start, "preprocess")
        return batch

    def inference(self, batch: Batch, *args: Any, **kwargs: Any) -> Batch:
        """Stage I then stage II, each batched over the items still valid."""
        return self.understand(self.edit(batch))

    def edit(self, batch: Batch) -> Batch:
        """Stage I (the visual thoughts), one batched call for all valid items."""
        start = time.perf_counter()
        batch.imagine()
        self._metric(STAGE_LATENCY, time.perf_counter() - start, "edit")
        return batch

    def understand(self, batch: Batch) -> Batch:
        """Stage II (the answers from [I, q, Î]), one batched call for all valid items."""
        start = time.perf_counter()
        batch.understand()
        self._metric(STAGE_LATENCY, time.perf_counter() - start, "understand")
        return batch

    def postprocess(self, batch: Batch) -> list[str]:
        """One JSON body per item; failed items get their own status through ``set_response_status``."""
        start = time.perf_counter()
        out = []
        for idx, item in enumerate(batch.outcomes()):
            t0 = time.perf_counter()
            body = outcome_body(item)
            if item.ok and item.result is not None:
                if item.request is not None and item.request.return_thought and item.result.thought is not None:
                    body["thought"] = base64.b64encode(png_bytes(item.result.thought.image)).decode("ascii")
                timings = {**item.timings_ms, **body.get("timings_ms", {})}
                timings["postprocess"] = round((time.perf_counter() - t0) * 1000, 2)
                body["timings_ms"] = timings
                body["batch_size"] = self._batch_size
            else:
                self._set_status(idx, item.status)
            self._set_content_type(idx)
            out.append(json.dumps(body, ensure_ascii=False))
        self._metric(STAGE_LATENCY, time.perf_counter() - start, "postprocess")
        return out

    # ------------------------------------------------------------------ helpers
    def _count_error(self, item: Outcome) -> None:
        error = item.error or {}
        self._metric(ERRORS, 1, str(error.get("error", "unknown")), str(error.get("field", "-")))

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
