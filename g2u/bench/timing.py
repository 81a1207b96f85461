"""Timing that a noisy machine can compare: medians after warm-up, CUDA events on a GPU."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """Run ``fn`` once; returns (result, milliseconds). CUDA events on a GPU (device time, not launch
    time), ``perf_counter`` on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize(device)
        return out, start.elapsed_time(end)
    begin = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - begin) * 1000


def median_ms(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int,
              before: Callable[[], None] | None = None) -> tuple[Any, float, list[float]]:
    """Median of ``reps`` timed runs after ``warmup`` untimed ones; ``before`` runs untimed before each
    (to clear caches a new request would not find warm). Returns (last result, median ms, all ms)."""
    out = None
    for _ in range(warmup):
        if before:
            before()
        out = fn()
    samples = []
    for _ in range(reps):
        if before:
            before()
        out, ms = timed(fn, device)
        samples.append(ms)
    return out, statistics.median(samples), samples


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak GPU memory allocated since the last reset, or the process's peak resident set on CPU (a
    high-water mark for the whole process: it cannot be reset between paths)."""
    if device.type == "cuda":
        return {"gpu_peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    return {"process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
