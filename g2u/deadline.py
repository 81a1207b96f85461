"""Per-request deadlines inside the worker, checked between denoising steps, decoded tokens and (during a
prefill) the answer model's layers.

A stage runs under ``deadline(at)``; the loops of the backends call ``check_deadline`` (the HF
``generate`` loop through ``DeadlineCriteria``). Past the deadline the stage stops with
``DeadlineExceeded`` (504) instead of running until TorchServe's ``responseTimeout`` kills the worker.
The clock is ``time.monotonic`` unless a test injects another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from g2u.errors import G2UError

_deadline: ContextVar[float | None] = ContextVar("g2u_deadline", default=None)
clock: Callable[[], float] = time.monotonic


class DeadlineExceeded(G2UError):
    """The request's deadline passed while it was being computed (HTTP 504)."""

    status = 504


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Run the block under a deadline (a ``clock()`` time; None: no deadline)."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def check_deadline(where: str) -> None:
    """Raise DeadlineExceeded if the current deadline has passed (cheap: call it every step)."""
    at = _deadline.get()
    if at is not None and clock() > at:
        raise DeadlineExceeded(f"the request's deadline passed during {where}")


def deadline_criteria():
    """A transformers StoppingCriteria that checks the deadline after every decoded token."""
    import torch
    from transformers import StoppingCriteria

    class DeadlineCriteria(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            check_deadline("decoding")
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return DeadlineCriteria()


_HOOKED = "_g2u_deadline_hooks"
_LAYER_SUFFIXES = ("DecoderLayer", "VisionBlock", "EncoderLayer")


def install_layer_checks(model) -> int:
    """Check the deadline before every decoder/vision layer of ``model`` (forward pre-hooks, installed once):
    a prefill is one forward pass over the whole prompt, which no per-token check can interrupt; with these
    a deadline passed mid-prefill stops it at the next layer. Without a deadline the hook is one context
    lookup per layer. Returns the number of layers hooked."""
    if getattr(model, _HOOKED, None) is not None:
        return getattr(model, _HOOKED)

    import torch

    def hook(module, args):
        # compiled decoding (g2u.fastpath) traces the hook away: no graph break; decoding is bounded per
        # token by DeadlineCriteria, the eager prefill by this check
        if not torch.compiler.is_compiling():
            check_deadline("prefill")

    count = 0
    for module in model.modules():
        if type(module).__name__.endswith(_LAYER_SUFFIXES):
            module.register_forward_pre_hook(hook)
            count += 1
    try:
        setattr(model, _HOOKED, count)
    except AttributeError:  # pragma: no cover - a model class refusing attributes
        pass
    return count
