"""TorchServe handler for Generation-to-Understanding inference.

    preprocess  decode + validate every item (``g2u.batch.Batch.parse``: the schema, the backend's checks)
    edit        stage I over the whole batch   (``Batch.edit``)
    understand  stage II over the whole batch  (``Batch.understand``)
    postprocess one JSON body per item, with its own HTTP status

The handler holds no G→U logic: it adapts TorchServe's batch format to the core's one batch path
(``g2u.batch``: per-item errors kept apart, a failing batched stage retried item by item), times each
stage and reports custom metrics. With ``handler.scheduler: step`` (and ``asyncCommunication: true``) the
worker instead receives requests while it computes and each item goes to the step scheduler
(``g2u.scheduler``): it joins the running denoise at the next step boundary and is answered when done.
It is packed into the .mar on its own, so it imports nothing from this repository but ``g2u``.
"""

from __future__ import annotations

import base64
import contextlib
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
from g2u.routes import Exchange, Reply, listening, open_exchange, thoughts_made
from g2u.safe_text import install_log_guard
from g2u.scheduler import StepScheduler
from g2u.serving import (
    DUPLICATES,
    CachePrivacy,
    cost_groups,
    describe_body,
    install_duplicate_guard,
    metric_field,
    metric_kind,
    refusal,
    send_early,
)
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
    # A ``thought`` part is an image like ``image``: a file upload, or base64 text in a form field.
    fields = {k: image_from_form_value(v, "thought") if k == "thought" and isinstance(v, (bytes, bytearray, str))
              and v else _as_text(v) for k, v in row.items() if k != "image"}
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
        self.privacy = CachePrivacy()
        self._index: list[int] = []
        self.scheduler: StepScheduler | None = None
        """The step scheduler (``handler.scheduler: step``); None under dynamic batching."""
        """Position of each item of the batch being processed in TorchServe's batch (describe/explain and
        refused items are answered apart, so the model's items may be fewer)."""
        self._exchanges: dict[int, Exchange] = {}
        """How each request of TorchServe's batch is answered (``g2u.routes``: REST, streamed, OpenAI)."""

    # ------------------------------------------------------------------ lifecycle
    def initialize(self, context: Any) -> None:
        """Load the checkpoint named in the model-config yaml's ``handler:`` section (``HandlerSettings``,
        validated first: a bad key stops the load with its name) on the GPU TorchServe assigned."""
        self.context = context
        self.manifest = context.manifest
        # Client text never reaches a log line raw, nor a metric label (g2u.safe_text); a repeated form field
        # is refused instead of silently taking the last value (TorchServe's worker keeps only one).
        install_log_guard()
        install_duplicate_guard()
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
        self.privacy = CachePrivacy(report_hits=bool(settings.thought_cache and settings.thought_cache.report_hits))
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
                                                      backend=self.pipeline.backend, **settings.budget.model_dump())
        self.deadline_s = settings.deadline_s
        # scheduler: step (asyncCommunication: true) — requests join the running denoise at step boundaries
        # (g2u.scheduler); batch — TorchServe's dynamic batching hands us whole batches.
        if settings.scheduler.kind == "step":
            self.scheduler = StepScheduler(self.pipeline, max_rows=settings.scheduler.max_rows,
                                           defaults=self.defaults, max_pixels=self.max_pixels,
                                           deadline_s=self.deadline_s, on_error=self._count_error,
                                           exact=settings.scheduler.exact).start()
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

    # ------------------------------------------------------------------ one response per item
    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        """TorchServe's entry point, answering every item on its own (BaseHandler.handle looks at item 0's
        headers only and answers a describe with one body for the whole batch: its batch-mates got 503).

        - ``describe: True`` items get the model's description, explain paths (``/explanations``,
          ``:explain``, ``/v2/…/explain``) a 501, repeated form fields a 400: none reaches the model;
        - the URL past ``/predictions/{model}/{version}/`` picks the face (``g2u.routes``): the REST body,
          OpenAI's chat route or ``v1/models`` (answered without the model), ``stream: true`` as server-sent
          events sent while the model works;
        - the rest is parsed, split into cost groups (``g2u.cost.plan_groups``) and computed cheapest
          group first; where TorchServe can send a REST answer before the batch ends
          (``g2u.serving.send_early``), each item's answer leaves as soon as it exists;
        - whatever fails unexpectedly fails only the items still unanswered, each with its own 500.
        """
        if self.scheduler is not None:
            return self._handle_stepped(data, context)
        start = time.time()
        self.context = context
        out: list[str | None] = [None] * len(data)
        early: set[int] = set()
        self._exchanges = {}
        try:
            self._metric(BATCHES, 1, str(len(data)))
            model_rows = []
            for i, row in enumerate(data):
                out[i], exchange = self._without_model(i, row, context)
                if exchange is not None:
                    self._exchanges[i] = exchange
                if out[i] is None:
                    model_rows.append(i)
            self._index = model_rows
            batch = self.preprocess([data[i] for i in model_rows])
            self._batch_size = len(data)  # the batch TorchServe formed, describe/explain/refused items included
            groups = cost_groups(self.pipeline, batch)
            # Items already answered (refused, special) leave now when the model still has work to do.
            ready = {i: out[i] for i in range(len(data)) if out[i] is not None}
            ready.update({model_rows[p]: self._item_body(p, it) for p, it in enumerate(batch.items) if not it.ok})
            for i, body in ready.items():
                out[i] = body
            if groups:
                early |= send_early(context, ready)
            post = 0.0
            for k, group in enumerate(groups):
                self._compute(group.batch, group.positions)
                t0 = time.perf_counter()
                done = {model_rows[p]: self._item_body(p, it) for p, it in zip(group.positions, group.batch.items)}
                post += time.perf_counter() - t0
                for i, body in done.items():
                    out[i] = body
                if k + 1 < len(groups):
                    early |= send_early(context, done)
            self._metric(STAGE_LATENCY, post, "postprocess")
        except Exception as exc:  # noqa: BLE001 - never a batch-wide failure: each unanswered item gets its 500
            logger.exception("handler failure; answering the unanswered items with 500")
            for i, body in enumerate(out):
                if body is None:
                    out[i] = self._failed(i, {"error": "model_error", "reason": f"{type(exc).__name__}"})
        finally:
            self._exchanges = {}
        for i in early:  # TorchServe closes a streamed answer with an empty last part
            out[i] = ""
        metrics = getattr(context, "metrics", None)
        if metrics is not None:
            metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2), None, "ms")
        return [body if body is not None else "" for body in out]

    async def _handle_stepped(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        """``asyncCommunication``: TorchServe's worker awaits this per message and keeps receiving others
        meanwhile (``ts.async_service``), so each item goes to the step scheduler and is answered when its
        outcome exists. Describe/explain/repeated fields and unreadable bodies are answered at once."""
        import asyncio

        start = time.time()
        out: list[str | None] = [None] * len(data)
        futures = {}
        with self._bound(context, len(data)):
            for i, row in enumerate(data):
                out[i], exchange = self._without_model(i, row, context)
                if out[i] is not None:
                    continue
                try:
                    if exchange.kind != "rest":  # streams and the OpenAI route run on the batch path only
                        field = "stream" if exchange.kind == "rest_stream" else "url_path"
                        raise InputError(field, f"{exchange.kind} requests are served with handler.scheduler: "
                                                "batch; the step scheduler answers plain REST requests")
                    fields, image = split_fields(row)
                except Exception as exc:  # noqa: BLE001 - a body that cannot be read is this item's 4xx
                    rejected = Batch(self.pipeline, on_error=self._count_error)
                    rejected.reject(exc)
                    out[i] = self._item_body(i, rejected.items[0])
                    continue
                futures[i] = self.scheduler.submit(RawItem(fields, image))
        for i, future in futures.items():
            outcome = await asyncio.wrap_future(future)
            with self._bound(context, len(data), outcome.packed):  # no await inside: no other request interleaves
                out[i] = self._item_body(i, outcome)
        metrics = getattr(context, "metrics", None)
        if metrics is not None:
            metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2), None, "ms")
        return [body if body is not None else "" for body in out]

    @contextlib.contextmanager
    def _bound(self, context: Any, n: int, packed: int | None = None):
        """The per-message state the item helpers read (context, indices, batch size), for one request's
        synchronous stretch: under asyncCommunication several messages are in flight on one handler."""
        self.context, self._index, self._batch_size = context, list(range(n)), packed or n
        yield

    def _without_model(self, idx: int, row: dict[str, Any], context: Any) -> tuple[str | None, Exchange | None]:
        """(the answer of an item that never reaches the model, or None; its exchange, None for a special
        item): describe, explain, a repeated field; ``v1/models`` and unknown paths (``g2u.routes``)."""
        special = self._special(idx, row)
        if special is not None:
            return self._answer(idx, *special), None
        exchange = open_exchange(context, idx, row, split_fields, self.model_name, self.defaults)
        if exchange.reply is not None:
            return self._reply(idx, exchange.reply), exchange
        return None, exchange

    def _special(self, idx: int, row: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """The answer of an item that must not reach the model (describe, explain, a repeated field)."""
        duplicates = row.pop(DUPLICATES, None) if isinstance(row, dict) else None
        header = self._header(idx, "describe")
        if header == "True":
            return 200, describe_body(self.pipeline, self)
        if self._header(idx, "explain") == "True":
            return refusal(501, "not_supported", "explain", "this model offers no explanations: send the request "
                                                            "to /predictions/<model>")
        if duplicates:
            name = duplicates[0]
            err = InputError(name, "is given more than once; send each field once")
            return 400, err.to_dict()
        return None

    def _header(self, idx: int, key: str) -> str | None:
        context = getattr(self, "context", None)
        if context is None or not getattr(context, "request_processor", None):
            return None
        try:
            return context.get_request_header(idx, key)
        except (IndexError, AttributeError):
            return None

    def _answer(self, idx: int, status: int, body: dict[str, Any]) -> str:
        """An item answered outside the model: its status, content type and an error metric."""
        if status != 200:
            self._set_status(idx, status, absolute=True)
            self._metric(ERRORS, 1, metric_kind(body.get("error")), metric_field(body.get("field", "-")))
        self._set_content_type(idx, absolute=True)
        return json.dumps(body, ensure_ascii=False)

    def _failed(self, idx: int, body: dict[str, Any]) -> str:
        """A 500 for an item still unanswered when the handler failed (in a stream that started: its last
        event)."""
        exchange = self._exchanges.get(idx)
        if exchange is None or not exchange.handled:
            return self._answer(idx, 500, body)
        self._metric(ERRORS, 1, metric_kind(body.get("error")), "-")
        return self._reply(idx, exchange.finish(Outcome(status=500, error=body), body))

    def _reply(self, idx: int, reply: Reply, absolute: bool = True) -> str:
        """A ``g2u.routes`` reply: its status and content type set on TorchServe's response."""
        self._set_status(idx, reply.status, absolute=absolute)
        self._set_content_type(idx, absolute=absolute, content_type=reply.content_type)
        return reply.body

    def _exchange(self, idx: int) -> Exchange | None:
        """The exchange of the batch's ``idx``-th model item (None: plain REST, or called outside handle)."""
        return self._exchanges.get(self._global(idx, False))

    # ------------------------------------------------------------------ stages
    def preprocess(self, data: list[dict[str, Any]]) -> Batch:
        """Decode and validate each item on its own; an invalid item is answered and skips the model."""
        assert self.pipeline is not None, "initialize() was not called"
        start = time.perf_counter()
        self._batch_size = len(data)
        if len(self._index) != len(data):  # called directly (not through handle): items are the whole batch
            self._index = list(range(len(data)))
        batch = Batch(self.pipeline, defaults=self.defaults, max_pixels=self.max_pixels, on_error=self._count_error,
                      deadline_s=self.deadline_s)
        for pos, row in enumerate(data):
            exchange = self._exchange(pos)
            if exchange is not None and exchange.handled:  # streamed or OpenAI: read by g2u.routes
                exchange.add_to(batch)
                continue
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
        return self._compute(batch, range(len(batch.items)))

    def _compute(self, batch: Batch, positions: Any) -> Batch:
        """Stage I then stage II over ``batch`` (its items at ``positions`` of the parsed batch), streamed
        requests hearing their progress (``g2u.routes``, ``g2u.progress``)."""
        exchanges = [self._exchange(p) for p in positions]
        with listening(batch.items, exchanges):
            self.edit(batch)
            thoughts_made(batch.items, exchanges, self.privacy.report_hits)
            return self.understand(batch)

    def edit(self, batch: Batch) -> Batch:
        """Stage I (the visual thoughts), one batched call for all valid items."""
        start = time.perf_counter()
        batch.edit()
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
        out = [self._item_body(idx, item) for idx, item in enumerate(batch.outcomes())]
        self._metric(STAGE_LATENCY, time.perf_counter() - start, "postprocess")
        return out

    def _item_body(self, idx: int, item: Outcome) -> str:
        """The JSON body of the batch's ``idx``-th item, its status and content type set on TorchServe's."""
        t0 = time.perf_counter()
        if item.ok and item.result is None:  # cannot happen: a valid item always gets a result
            item.status, item.error = 500, {"error": "model_error", "reason": "no result was produced"}
        body = outcome_body(item)
        if item.ok and item.result is not None:
            if item.request is not None and item.request.return_thought and item.result.thought is not None:
                body["thought"] = base64.b64encode(png_bytes(item.result.thought.image)).decode("ascii")
            timings = {**item.timings_ms, **body.get("timings_ms", {})}
            timings["postprocess"] = round((time.perf_counter() - t0) * 1000, 2)
            body["timings_ms"] = timings
            body["batch_size"] = self._batch_size
            self.privacy.apply(body, item.result.thought)
        else:
            self._set_status(idx, item.status)
        exchange = self._exchange(idx)
        if exchange is not None and exchange.handled:  # an OpenAI reply or a stream's last events
            return self._reply(idx, exchange.finish(item, body), absolute=False)
        self._set_content_type(idx)
        return json.dumps(body, ensure_ascii=False)

    # ------------------------------------------------------------------ helpers
    def _count_error(self, item: Outcome) -> None:
        """Error metric of an item: its kind from a fixed set, its field a schema field or ``unknown``
        (a label per client-chosen key filled the frontend's heap and forged series)."""
        error = item.error or {}
        self._metric(ERRORS, 1, metric_kind(error.get("error")), metric_field(error.get("field", "-")))

    def _global(self, idx: int, absolute: bool) -> int:
        return idx if absolute or idx >= len(self._index) else self._index[idx]

    def _set_status(self, idx: int, status: int, absolute: bool = False) -> None:
        idx = self._global(idx, absolute)
        context = getattr(self, "context", None)
        if context is not None and getattr(context, "request_processor", None):
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "Error"
            context.set_response_status(code=status, phrase=phrase, idx=idx)

    def _set_content_type(self, idx: int, absolute: bool = False, content_type: str = "application/json") -> None:
        idx = self._global(idx, absolute)
        context = getattr(self, "context", None)
        if context is not None and getattr(context, "request_processor", None):
            context.set_response_content_type(idx, content_type)
