"""Step scheduling of stage I: requests join and leave a running denoise at step boundaries.

Dynamic batching forms a batch from what is queued when the worker is free, then runs every denoising step
and the answers before it looks at the queue again: a request arriving one step in waits for the whole
batch. Here a request is admitted at the next step boundary instead:

    submit      a raw item (any thread) → a future of its ``Outcome``
    admit       at a step boundary: parsed and planned (``g2u.batch``: the schema, the budget, its deadline
                counted from arrival), its edit jobs made (``G2UPipeline.prepare_edit``); a job begins
                (``EditStepper.begin``: its own prompt encoding, noise, timesteps, CFG rows) once its rows
                fit under ``max_rows``
    step        the states sharing the oldest state's key (working size) step in one batched forward, up
                to ``max_rows`` rows; each keeps its own timestep, so items at different steps share it
    leave       a finished state is decoded; a request whose thoughts are all made is measured
                (``finish_edit``) and answered with the others finished at the same boundary, in one
                batched stage II; an error or a passed deadline answers that request at once, alone

An item's thought does not depend on its step-mates (tests/core/test_scheduler.py checks it equals the one
made alone). Backends without a step interface (``BackendBase.stepper`` is None: BAGEL, the decoupled
editors, Qwen-Image-Edit-Plus, a First-Block-Cache) edit each admitted group whole between boundaries.
The core is server-agnostic: the TorchServe handler submits from its asynchronous entry point
(``asyncCommunication``), a test drives ``run_once`` by hand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from g2u import deadline as _deadline
from g2u.batch import Batch, Outcome, RawItem
from g2u.deadline import DeadlineExceeded
from g2u.plan import EditJob
from g2u.thought_cache import CachedEditor
from g2u.types import EditOutput, Thought

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Ticket:
    """One submitted request on its way through the scheduler."""

    raw: RawItem
    future: Future
    submitted: float
    outcome: Outcome | None = None
    thoughts: list[Thought | None] = field(default_factory=list)
    jobs: list[EditJob] = field(default_factory=list)
    outputs: dict[int, EditOutput] = field(default_factory=dict)
    began: float | None = None
    """``perf_counter`` time its first edit job began (its ``edit`` timing runs from there)."""

    @property
    def live(self) -> bool:
        return self.outcome is not None and self.outcome.ok and not self.future.done()


@dataclass(eq=False)
class _Task:
    """One edit job of a ticket: pending, then stepping (``state``), then done (``ticket.outputs``)."""

    ticket: _Ticket
    index: int
    rows: int
    key: tuple
    state: Any = None
    cache_key: str | None = None


class StepScheduler:
    """Runs G→U requests with stage I scheduled step by step (see the module docstring).

    ``max_rows``: transformer rows one step may batch (an item with true CFG takes 2); also the admission
    bound, so at most that many rows of state are held. ``exact``: thoughts bit-identical to the ones made
    alone (``BackendBase.stepper``). ``start()`` runs the loop in a thread;
    ``run_once()`` does one boundary's work (admit, one step, leave, answer) for callers that drive it."""

    def __init__(self, pipeline: Any, *, max_rows: int = 8, defaults: dict[str, Any] | None = None,
                 max_pixels: int | None = None, deadline_s: float | None = None,
                 on_error: Callable[[Outcome], None] | None = None, exact: bool = True):
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.pipeline = pipeline
        self.max_rows = max_rows
        self.defaults, self.max_pixels, self.deadline_s, self.on_error = defaults, max_pixels, deadline_s, on_error
        self.stepper = pipeline.backend.stepper(exact=exact)
        self._queue: deque[_Ticket] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: deque[_Task] = deque()
        self._active: list[_Task] = []
        self._ready: list[_Ticket] = []
        self._thread: threading.Thread | None = None
        self._stop = False
        self.steps = 0
        """Batched steps run so far (tests and metrics read it)."""

    # ------------------------------------------------------------------ API
    def submit(self, raw: RawItem) -> Future:
        """Queue one raw item; the future's result is its ``Outcome`` (never an exception)."""
        if raw.arrived_at is None:
            raw.arrived_at = _deadline.clock()
        ticket = _Ticket(raw, Future(), time.perf_counter())
        with self._lock:
            self._queue.append(ticket)
        self._wake.set()
        return ticket.future

    def start(self) -> StepScheduler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="g2u-step-scheduler", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def idle(self) -> bool:
        with self._lock:
            queued = bool(self._queue)
        return not (queued or self._pending or self._active or self._ready)

    def run_once(self) -> bool:
        """One step boundary: admit what arrived, begin jobs that fit, one batched step, finished
        thoughts leave and their requests are answered. Returns False when there was nothing to do."""
        worked = self._admit()
        self._begin_pending()
        if self._active:
            self._step()
            worked = True
        if self._ready:
            self._answer()
            worked = True
        return worked

    def drain(self) -> None:
        """Run boundaries until nothing is left (callers without the thread)."""
        while self.run_once() or not self.idle:
            pass

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        while not self._stop:
            self._wake.clear()
            try:
                worked = self.run_once()
            except Exception as exc:  # noqa: BLE001 - the loop must survive; what was in flight fails
                logger.exception("step scheduler failure; failing the requests in flight")
                self._fail_all(exc)
                worked = False
            if not worked:
                self._wake.wait(0.5)

    # ------------------------------------------------------------------ admit
    def _batch(self, items: Sequence[Outcome] = ()) -> Batch:
        batch = Batch(self.pipeline, defaults=self.defaults, max_pixels=self.max_pixels,
                      on_error=self.on_error, deadline_s=self.deadline_s)
        batch.items = list(items)
        return batch

    def _admit(self) -> bool:
        with self._lock:
            arrived = list(self._queue)
            self._queue.clear()
        for ticket in arrived:
            batch = self._batch()
            batch.parse([ticket.raw])
            ticket.outcome = batch.items[0]
            ticket.outcome.timings_ms["queue"] = round((time.perf_counter() - ticket.submitted) * 1000, 2)
            if not ticket.outcome.ok:
                self._resolve(ticket)
                continue
            plan = ticket.outcome.plan
            if plan.thought is not None or not plan.needs_thought:
                ticket.outcome.thought = plan.thought
                self._ready.append(ticket)
                continue
            try:
                ticket.thoughts, ticket.jobs = self.pipeline.prepare_edit([plan])
            except Exception as exc:  # noqa: BLE001 - this request's failure only
                self._fail(ticket, exc)
                continue
            if not ticket.jobs:
                ticket.outcome.thought = ticket.thoughts[0]
                self._ready.append(ticket)
                continue
            for k, job in enumerate(ticket.jobs):
                p = job.params
                rows = 1 + (p.text_cfg > 1.0) + (p.image_cfg > 1.0)
                key = self.stepper.key(p) if self.stepper is not None else ("whole", p.batch_key())
                self._pending.append(_Task(ticket, k, rows, key))
        return bool(arrived)

    def _begin_pending(self) -> None:
        """Begin pending jobs in arrival order while their rows fit (one always, so nothing waits forever);
        a thought cache hit is done at once."""
        editor = self.pipeline.editor
        used = sum(t.rows for t in self._active)
        while self._pending and (not self._active or used + self._pending[0].rows <= self.max_rows):
            task = self._pending.popleft()
            ticket = task.ticket
            if not ticket.live:
                continue
            job = ticket.jobs[task.index]
            if isinstance(editor, CachedEditor):
                try:
                    task.cache_key, hit = editor.lookup(job.image, job.record.prompt, job.params)
                except Exception:  # noqa: BLE001 - the cache is an optimisation, never a reason to fail
                    hit = None
                if hit is not None:
                    self._done(task, hit)
                    continue
            if ticket.began is None:
                ticket.began = time.perf_counter()
            if self.stepper is not None:
                try:
                    task.state = self.stepper.begin(job.image, job.record.prompt, job.params)
                except Exception as exc:  # noqa: BLE001
                    self._fail(ticket, exc)
                    continue
            self._active.append(task)
            used += task.rows

    # ------------------------------------------------------------------ step
    def _step(self) -> None:
        self._active = [t for t in self._active if t.ticket.live]
        if not self._active:
            return
        key = self._active[0].key
        pack, rows = [], 0
        for task in self._active:
            if task.key == key and (not pack or rows + task.rows <= self.max_rows):
                pack.append(task)
                rows += task.rows
        requests = len({id(t.ticket) for t in pack})
        for task in pack:
            task.ticket.outcome.packed = max(task.ticket.outcome.packed, requests)
        if self.stepper is None:
            self._whole(pack)
        else:
            self._run_step(pack)
        self.steps += 1
        now = _deadline.clock()
        for task in list(self._active):
            ticket = task.ticket
            at = ticket.outcome.deadline_at if ticket.live else None
            if at is not None and now > at:
                self._fail(ticket, DeadlineExceeded("the request's deadline passed during denoising"))
            elif ticket.live and self.stepper is not None and self.stepper.done(task.state):
                self._active.remove(task)
                try:
                    out = self.stepper.finish(task.state)
                except Exception as exc:  # noqa: BLE001
                    self._fail(ticket, exc)
                    continue
                self._done(task, out)
        self._active = [t for t in self._active if t.ticket.live]

    def _run_step(self, pack: list[_Task]) -> None:
        """One batched step; if it fails, each state steps alone so only the culprit's request fails."""
        try:
            self.stepper.step([t.state for t in pack])
            return
        except Exception as exc:  # noqa: BLE001
            if len(pack) == 1:
                self._fail(pack[0].ticket, exc)
                return
            logger.warning("a step of %d states failed (%s); stepping them one by one", len(pack), exc)
        for task in pack:
            try:
                self.stepper.step([task.state])
            except Exception as one:  # noqa: BLE001
                self._fail(task.ticket, one)

    def _whole(self, pack: list[_Task]) -> None:
        """A backend without steps: the pack's edits whole, in one call (item by item if it fails)."""
        self._active = [t for t in self._active if t not in pack]
        backend = self.pipeline.backend

        def run(tasks: list[_Task]) -> None:
            jobs = [t.ticket.jobs[t.index] for t in tasks]
            with _deadline.deadline(self._latest([t.ticket for t in tasks])):
                outs = backend.edit([j.image for j in jobs], [j.record.prompt for j in jobs], [j.params for j in jobs])
            for task, out in zip(tasks, outs):
                self._done(task, out)

        try:
            run(pack)
        except Exception as exc:  # noqa: BLE001
            if len(pack) == 1:
                self._fail(pack[0].ticket, exc)
                return
            for task in pack:
                if task.ticket.live:
                    try:
                        run([task])
                    except Exception as one:  # noqa: BLE001
                        self._fail(task.ticket, one)

    # ------------------------------------------------------------------ leave
    def _done(self, task: _Task, out: EditOutput) -> None:
        ticket = task.ticket
        if task.cache_key is not None and not out.cached and isinstance(self.pipeline.editor, CachedEditor):
            self.pipeline.editor.store(task.cache_key, out)
        ticket.outputs[task.index] = out
        if len(ticket.outputs) < len(ticket.jobs) or not ticket.live:
            return
        edit_ms = (time.perf_counter() - ticket.began) * 1000 if ticket.began is not None else 0.0
        outputs = [ticket.outputs[k] for k in range(len(ticket.jobs))]
        try:
            [thought] = self.pipeline.finish_edit([ticket.outcome.plan], ticket.thoughts, ticket.jobs, outputs,
                                                  edit_ms)
        except Exception as exc:  # noqa: BLE001
            self._fail(ticket, exc)
            return
        ticket.outcome.thought = thought
        self._ready.append(ticket)

    def _answer(self) -> None:
        """Stage II for every request whose thoughts are made, batched (``Batch.understand``: the deadline,
        item-by-item retry), in the server's cost groups (``max_batch_tokens``)."""
        from g2u.serving import cost_groups

        ready = [t for t in self._ready if t.live]
        self._ready = []
        if not ready:
            return
        batch = self._batch([t.outcome for t in ready])
        for group in cost_groups(self.pipeline, batch):
            for item in group.batch.items:
                item.packed = max(item.packed, len(group.batch.items))
            group.batch.understand()
        batch.outcomes()
        for ticket in ready:
            self._resolve(ticket)

    # ------------------------------------------------------------------ outcomes
    def _fail(self, ticket: _Ticket, exc: BaseException) -> None:
        if ticket.outcome is None:
            ticket.outcome = Outcome()
        if ticket.outcome.ok:
            self._batch().fail(ticket.outcome, exc)
        self._resolve(ticket)

    def _resolve(self, ticket: _Ticket) -> None:
        if not ticket.future.done():
            ticket.future.set_result(ticket.outcome)

    def _fail_all(self, exc: BaseException) -> None:
        tickets = {id(t.ticket): t.ticket for t in [*self._active, *self._pending]}
        tickets.update({id(t): t for t in self._ready})
        self._active, self._ready = [], []
        self._pending.clear()
        for ticket in tickets.values():
            self._fail(ticket, exc)

    @staticmethod
    def _latest(tickets: Sequence[_Ticket]) -> float | None:
        ats = [t.outcome.deadline_at for t in tickets]
        return None if any(a is None for a in ats) else max(ats)  # type: ignore[type-var]


__all__ = ["StepScheduler"]
