"""Device and dtype choice: cuda + bf16 where a GPU is present, cpu + fp32 otherwise, overridable."""

from __future__ import annotations

import torch

from g2u.errors import InputError

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
           "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
DTYPES = tuple(_DTYPES)
"""The dtype names a loader option may give (``auto``/unset: bf16 on a GPU, fp32 on CPU)."""


def resolve_device(device: str | torch.device | None = None, gpu_id: int | str | None = None) -> torch.device:
    """The device to load on: ``device`` when given, else the GPU (``cuda:<gpu_id>`` when a server assigned
    one, e.g. TorchServe's ``gpu_id``) where one is available, else the CPU."""
    if device is None or device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{int(gpu_id)}" if gpu_id is not None else "cuda")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError("device", f"not a torch device: {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "cuda was requested but no GPU is available")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise InputError("dtype", f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
