"""What the TorchServe handler needs beyond the core's batch path, kept apart so the handler stays thin:
cost groups, early answers, describe/explain, repeated form fields and the thought cache's privacy.

What TorchServe 0.12 lets a worker do (read in its source, frontend and ``ts`` package):
- **Answer one item before the batch ends**: ``ts.handler_utils.utils.send_intermediate_predict_response``
  sends some items' responses with ``ts_stream_next: true``; the frontend writes a REST response's status,
  headers and body at once and closes it when the batch's final message carries that item's (empty) last
  part. gRPC's unary ``Predictions`` completes the call on the first part and fails on the second, so only
  REST items (they carry the frontend's ``explain`` header, gRPC ones carry no headers) leave early; gRPC
  items are answered with the batch. Only answers (status < 400) do: the frontend closes a streamed error's
  connection after its status line, so errors leave with the batch's final message.
- **Know that a client has gone**: it cannot. The frontend never tells the worker (its protocol has only
  load and predict messages), and the default batch aggregator does not look at the connection; only the
  continuous-batching aggregators drop a *streamed* job whose channel closed, after one of its parts.
  The frontend's only lever is ``clientTimeoutInMills`` (model-config): a queued job older than that is
  dropped before it is batched (silently: that client gets no answer). What bounds a fire-and-forget flood
  here is therefore the queue (``job_queue_size``: the next request gets 503 at once), each request's own
  cost bound (``g2u.budget``) and its deadline (``handler.deadline_s``, ``timeout_s``).
- **See a repeated form field**: the worker's ``Service.retrieve_data_for_inference`` folds a request's
  parameters into a dict (the last value wins). ``install_duplicate_guard`` wraps it to record the names
  given more than once, under a key no client can send (not a string), so the handler refuses them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from g2u.batch import Batch

logger = logging.getLogger(__name__)


class _Duplicates:
    def __repr__(self) -> str:
        return "<repeated form fields>"


DUPLICATES = _Duplicates()
"""Key of a row's repeated field names (an object: a client's field names are always strings)."""


def install_duplicate_guard() -> bool:
    """Wrap TorchServe's request decoding so a row records the parameter names it got more than once.
    Returns False where TorchServe is not importable (the handler then runs outside TorchServe)."""
    try:
        from ts.service import Service
    except ImportError:  # pragma: no cover - the handler always runs under ts
        return False
    original = Service.retrieve_data_for_inference
    if getattr(original, "_g2u_duplicates", False):
        return True

    def retrieve(batch):
        headers, input_batch, req_map = original(batch)
        for request, row in zip(batch or (), input_batch):
            names = Counter(p.get("name") for p in request.get("parameters", ()))
            repeated = sorted(str(n) for n, count in names.items() if count > 1)
            if repeated:
                row[DUPLICATES] = repeated
        return headers, input_batch, req_map

    retrieve._g2u_duplicates = True  # type: ignore[attr-defined]
    Service.retrieve_data_for_inference = staticmethod(retrieve)
    return True



# ---------------------------------------------------------------------------------------- metric labels
def known_fields() -> frozenset[str]:
    from g2u.safe_text import EXTRA_FIELDS
    from g2u.schema import FIELD_NAMES

    return frozenset(FIELD_NAMES) | frozenset(EXTRA_FIELDS)


def metric_field(name: object) -> str:
    """The ``Field`` label of an error metric: a schema field (``options[3]`` counts as ``options``) or
    ``unknown``; never the client's own text, so the number of series is bounded by the schema."""
    if name in (None, "-"):
        return "-"
    base = str(name).split("[", 1)[0]
    return base if base in known_fields() else "unknown"


def metric_kind(kind: object) -> str:
    from g2u.safe_text import ERROR_KINDS

    return str(kind) if str(kind) in ERROR_KINDS else "other"

# ---------------------------------------------------------------------------------------- cost groups
@dataclass
class Group:
    """Some of a batch's items, run as one batch (``positions`` in the parsed batch)."""

    positions: list[int]
    batch: Batch


def sub_batch(batch: Batch, positions: Sequence[int]) -> Batch:
    """A batch of some of ``batch``'s items (the same ``Outcome`` objects: results land in both)."""
    sub = Batch(batch.pipeline, defaults=batch.defaults, max_pixels=batch.max_pixels, on_error=batch.on_error,
                deadline_s=batch.deadline_s)
    sub.items = [batch.items[p] for p in positions]
    return sub


def item_costs(pipeline: Any, batch: Batch) -> list[tuple[int, int, int, float]]:
    """(position, prompt tokens, prompt passes, stage-I work) of each valid item of ``batch``."""
    from g2u.budget import estimate
    from g2u.cost import prompt_cost

    budget, backend = pipeline.budget, pipeline.backend
    out = []
    for pos, item in enumerate(batch.items):
        if not item.ok or item.request is None:
            continue
        req, plan = item.request, item.plan
        makes = plan.size is not None and req.thought is None and plan.thought is None  # stage I will run
        work, _ = estimate(req, plan.size.size if makes else None)
        if budget.backend is not None:
            cost = prompt_cost(backend, req)
            tokens, passes = cost.tokens, cost.passes
        else:
            tokens, passes = 1, 1
        out.append((pos, tokens, passes, work))
    return out


def cost_groups(pipeline: Any, batch: Batch) -> list[Group]:
    """The batch's valid items in cost groups (``g2u.cost.plan_groups``), cheapest first; one group when the
    budget counts no prompts. Refused items are in none (they are answered already)."""
    from g2u.cost import plan_groups

    costs = item_costs(pipeline, batch)
    if not costs:
        return []
    budget = pipeline.budget
    if budget.max_batch_tokens is None:
        positions = [pos for pos, *_ in costs]
        return [Group(positions, sub_batch(batch, positions))]
    groups = plan_groups(costs, budget.max_batch_tokens, budget.max_edit_work)
    return [Group(positions, sub_batch(batch, positions)) for positions in groups]


# ---------------------------------------------------------------------------------------- early answers
def is_rest(context: Any, idx: int) -> bool:
    """A REST request: TorchServe's REST paths all add an ``explain`` header (gRPC requests carry none)."""
    try:
        value = context.get_request_header(idx, "explain")
    except (AttributeError, IndexError, TypeError):
        return False
    return isinstance(value, str) and value in ("True", "False")


def _status(context: Any, idx: int) -> int:
    try:
        return int(context.get_response_status(idx)[0] or 200)
    except (AttributeError, IndexError, TypeError):
        return 200


def send_early(context: Any, bodies: dict[int, str]) -> set[int]:
    """Send these items' answers now, before the batch ends; returns the indices sent, whose final
    response must be empty. Only REST answers with status < 400: the frontend closes the connection right
    after the status line of an error sent as a stream (``NettyUtils.sendHttpResponse``), so an error waits
    for the batch's final message. Outside a TorchServe worker nothing is sent."""
    if not bodies or getattr(context, "cl_socket", None) is None or not getattr(context, "request_ids", None):
        return set()
    todo = {i: body for i, body in bodies.items() if is_rest(context, i) and _status(context, i) < 400}
    if not todo:
        return set()
    from ts.handler_utils.utils import send_intermediate_predict_response

    try:
        send_intermediate_predict_response(todo, {i: context.request_ids[i] for i in todo},
                                           "Intermediate Prediction success", 200, context)
    except (OSError, KeyError) as exc:  # the final response carries them instead
        logger.warning("could not send %d answers early: %s", len(todo), type(exc).__name__)
        for i in todo:
            context.set_response_header(i, "ts_stream_next", "false")
        return set()
    return set(todo)


# ---------------------------------------------------------------------------------------- describe / explain
def refusal(status: int, kind: str, field: str, reason: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": kind, "field": field, "reason": reason}


def describe_body(pipeline: Any, handler: Any = None) -> dict[str, Any]:
    """What ``describe: True`` answers, per item: the model, its identity label (for resume keys), the
    modes and fields it takes and the bounds it applies."""
    from g2u.identity import identity_label
    from g2u.schema import FIELD_NAMES

    budget = pipeline.budget
    return {"model": pipeline.model_info, "identity": identity_label(pipeline.backend),
            "modes": list(pipeline.modes), "fields": list(FIELD_NAMES),
            "budget": {"max_edit_work": budget.max_edit_work, "max_decode_tokens": budget.max_decode_tokens,
                       "max_prompt_tokens": budget.max_prompt_tokens, "max_batch_tokens": budget.max_batch_tokens},
            "deadline_s": getattr(handler, "deadline_s", None)}


# ---------------------------------------------------------------------------------------- cache privacy
@dataclass(frozen=True)
class CachePrivacy:
    """Whether responses say a thought came from the shared thought cache.

    ``edit.cached: true`` (and a ``cache`` timing in place of ``edit``/``fidelity``) tells a client that
    someone asked the same (same pixels, prompt and parameters) before: a membership oracle across users.
    By default (``report_hits: false`` in model-config's ``handler.thought_cache``) responses carry neither;
    a single-tenant deployment may turn it on. The latency of a hit stays shorter: a client that can time
    requests precisely can still tell, so a deployment serving mutually distrustful tenants keeps one cache
    folder per tenant (one model per tenant) or none."""

    report_hits: bool = False

    @classmethod
    def from_setting(cls, setting: Any) -> CachePrivacy:
        if isinstance(setting, dict) and "report_hits" in setting:
            value = setting["report_hits"]
            if not isinstance(value, bool):
                raise ValueError(f"thought_cache.report_hits must be true or false, got {value!r}")
            return cls(report_hits=value)
        return cls()

    def apply(self, body: dict[str, Any], thought: Any) -> None:
        """Adjust one response body: the cache's write failure is always said; a hit only when allowed."""
        edit = body.get("edit")
        if not isinstance(edit, dict):
            return
        failed = getattr(getattr(thought, "image", None), "info", {}).get("g2u_cache_write_error")
        if failed:
            edit["cache_write"] = {"stored": False, "reason": failed}
        if self.report_hits:
            return
        edit.pop("cached", None)
        timings = body.get("timings_ms")
        if isinstance(timings, dict) and ("cache" in timings or "edit" in timings):
            # one "edit" timing whether stage I ran or the cache answered
            timings["edit"] = round(sum(float(timings.pop(k, 0.0)) for k in ("cache", "edit", "fidelity")), 2)
        for cand in body.get("candidates") or ():
            if isinstance(cand, dict) and isinstance(cand.get("edit"), dict):
                cand["edit"].pop("cached", None)


__all__ = ["DUPLICATES", "CachePrivacy", "Group", "cost_groups", "describe_body", "install_duplicate_guard",
           "is_rest", "refusal", "send_early", "sub_batch"]
