"""Per-request deadlines inside the worker, checked between denoising steps and decoded tokens.

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
