"""The one batch path: raw items in, one result or one error body (with its HTTP status) per item out.

    parse       each item on its own: schema validation, then its plan (``g2u.plan``: the backend's checks,
                size, prompt, budget — checked once; bad input → its 4xx)
    edit        stage I, batched over the valid items
    understand  stage II, batched over the items still valid
    outcomes    one ``Outcome`` per raw item, in order

A batched stage that fails is rerun item by item, so only the culprit fails and its batch-mates are
answered. The TorchServe handler runs the stages one by one (it times each); the pyfunc model, the
evaluation, the CLI and the bench call ``run_batch``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from g2u import deadline as _deadline
from g2u.deadline import DeadlineExceeded, deadline
from g2u.errors import InputError, error_body
from g2u.pipeline import G2UPipeline
from g2u.plan import RequestPlan
from g2u.results import G2UResult
from g2u.schema import parse_request
from g2u.types import G2URequest, Thought

logger = logging.getLogger(__name__)


def deadline_clock() -> float:
    return _deadline.clock()


@dataclass
class RawItem:
    """One request as a caller received it: user fields, and the image when it came apart from them
    (a multipart upload, a CLI file, an evaluation sample)."""

    fields: dict[str, Any]
    image: Image.Image | bytes | None = None
    gold_answer: str | None = None
    """Evaluation only: the known answer, so the leak guard can refuse prompts that contain it."""
    thought: Thought | None = None
    """A thought made earlier (evaluation resume); stage I is skipped for this item."""
    arrived_at: float | None = None
    """``g2u.deadline.clock()`` time the item arrived (None: when it is parsed); its deadline counts from it."""


@dataclass
class Outcome:
    """One item's result (``status`` 200) or its error body (4xx: the request, 5xx: the model)."""

    plan: RequestPlan | None = None
    thought: Thought | None = None
    result: G2UResult | None = None
    status: int = 200
    error: dict[str, Any] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    deadline_at: float | None = None
    """``g2u.deadline.clock()`` time after which the item is answered 504 instead of computed further."""
    packed: int = 1
    """The most requests that shared one of its batched calls (the batch, or ``g2u.scheduler``'s steps)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def request(self) -> G2URequest | None:
        return self.plan.request if self.plan is not None else None


class Batch:
    """One batch of raw items moving through the stages; every item carries its own outcome."""

    def __init__(self, pipeline: G2UPipeline, defaults: dict[str, Any] | None = None,
                 max_pixels: int | None = None, on_error: Callable[[Outcome], None] | None = None,
                 deadline_s: float | None = None):
        self.pipeline = pipeline
        self.deadline_s = deadline_s
        """Seconds each item may take from its arrival (None: no deadline)."""
        self.defaults = dict(defaults or {})
        """Fields applied under every item's own (a model-config's ``handler.defaults``)."""
        self.max_pixels = max_pixels
        self.on_error = on_error
        self.items: list[Outcome] = []

    def parse(self, raws: Sequence[RawItem]) -> None:
        for raw in raws:
            start = time.perf_counter()
            arrival = raw.arrived_at if raw.arrived_at is not None else deadline_clock()
            item = Outcome(deadline_at=arrival + self.deadline_s if self.deadline_s else None)
            try:
                merged = dict(raw.fields)
                for key, value in self.defaults.items():
                    if merged.get(key) in (None, ""):
                        merged[key] = value
                kwargs = {"max_pixels": self.max_pixels} if self.max_pixels else {}
                request = parse_request(merged, image=raw.image, **kwargs)
                request.gold_answer = raw.gold_answer
                if request.timeout_s is not None:  # the request's own limit, never past the server's
                    own = arrival + request.timeout_s
                    item.deadline_at = own if item.deadline_at is None else min(own, item.deadline_at)
                item.plan = self.pipeline.plan(request, raw.thought)
                item.thought = raw.thought
            except Exception as exc:  # noqa: BLE001 - every failure becomes this item's own answer
                self.fail(item, exc)
            item.timings_ms["preprocess"] = round((time.perf_counter() - start) * 1000, 2)
            self.items.append(item)

    def reject(self, exc: BaseException) -> None:
        """Add an item that failed before it could be parsed (an unreadable body)."""
        item = Outcome()
        self.fail(item, exc)
        self.items.append(item)

    def edit(self) -> None:
        """Stage I for the valid items that need a thought and have none yet."""
        pipe = self.pipeline

        def run(todo: Sequence[Outcome]) -> None:
            for item, thought in zip(todo, pipe.edit([it.plan for it in todo])):
                item.thought = thought

        self._isolated([it for it in self.items if it.plan is not None and it.plan.thought is None], run, "stage I")

    def understand(self) -> None:
        pipe = self.pipeline

        def run(todo: Sequence[Outcome]) -> None:
            for item, result in zip(todo, pipe.understand([it.plan for it in todo], [it.thought for it in todo])):
                item.result = result

        self._isolated(self.items, run, "stage II")

    def outcomes(self) -> list[Outcome]:
        for item in self.items:
            if item.ok and item.result is None:  # cannot happen: a valid item always gets a result
                self.fail(item, RuntimeError("no result was produced"))
        return self.items

    def fail(self, item: Outcome, exc: BaseException) -> None:
        item.status, item.error = error_body(exc)
        if item.status >= 500:
            logger.error("item failed: %s", item.error, exc_info=exc)
        if self.on_error is not None:
            self.on_error(item)

    def _isolated(self, items: Sequence[Outcome], run: Callable[[Sequence[Outcome]], None], stage: str) -> None:
        """Run one batched stage under the batch's latest deadline; if the batch fails, rerun item by item
        so only the culprit fails. A passed deadline fails the stage's items with 504 (no retry), and an
        item whose own deadline passed meanwhile is answered 504 before the next stage."""
        todo = [it for it in items if it.ok]
        if not todo:
            return
        try:
            with deadline(self._latest(todo)):
                run(todo)
        except DeadlineExceeded as exc:
            for item in todo:
                self.fail(item, exc)
        except Exception as exc:  # noqa: BLE001 - isolate the failing item, keep the caller alive
            if len(todo) == 1:
                self.fail(todo[0], exc)
                return
            logger.warning("a batch of %d failed (%s); retrying item by item", len(todo), exc)
            for item in todo:
                try:
                    with deadline(item.deadline_at):
                        run([item])
                except Exception as one:  # noqa: BLE001
                    self.fail(item, one)
        now = deadline_clock()
        for item in todo:
            if item.ok and item.deadline_at is not None and now > item.deadline_at:
                self.fail(item, DeadlineExceeded(f"the request's deadline passed during {stage}"))

    @staticmethod
    def _latest(items: Sequence[Outcome]) -> float | None:
        ats = [it.deadline_at for it in items]
        return None if any(a is None for a in ats) else max(ats)  # type: ignore[type-var]


def run_batch(pipeline: G2UPipeline, raws: Sequence[RawItem], defaults: dict[str, Any] | None = None,
              max_pixels: int | None = None, deadline_s: float | None = None) -> list[Outcome]:
    """All stages over ``raws``: one ``Outcome`` per item, in order; never raises for one item's sake."""
    batch = Batch(pipeline, defaults=defaults, max_pixels=max_pixels, deadline_s=deadline_s)
    batch.parse(raws)
    batch.edit()
    batch.understand()
    return batch.outcomes()


def outcome_body(outcome: Outcome) -> dict[str, Any]:
    """The JSON body of one outcome: the result, or the error (``error``, ``field``, ``reason``)."""
    if outcome.ok and outcome.result is not None:
        return outcome.result.to_dict()
    return dict(outcome.error or {})


__all__ = ["Batch", "InputError", "Outcome", "RawItem", "outcome_body", "run_batch"]
