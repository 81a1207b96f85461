"""Backend discovery: find which backend a checkpoint is for, and load it.

A checkpoint is a local folder in the real on-disk layout or a hub id (where a hub is reachable):
- ``qwen_image_edit``: a diffusers folder whose model_index.json names QwenImageEditPipeline;
- ``bagel``: the released BAGEL-7B-MoT layout (``ema.safetensors``, ``ae.safetensors``, ``llm_config.json``...);
- ``decoupled``: a folder with ``g2u_backend.json`` naming an editor and an answerer, or both given
  explicitly (``editor=``/``answerer=``: any diffusers edit pipeline + any image-text-to-text model);
(the embedded demo checkpoints are the entry points' default: ``g2u.checkpoints.resolve_checkpoint``).
"""

from __future__ import annotations

import json
from pathlib import Path

from g2u.backends.base import Backend, BackendBase, BackendInfo
from g2u.errors import CheckpointError

BACKENDS = ("qwen_image_edit", "decoupled", "bagel")
_QWEN_EDIT_CLASSES = ("QwenImageEditPipeline", "QwenImageEditPlusPipeline")

__all__ = ["BACKENDS", "Backend", "BackendBase", "BackendInfo", "backend_class", "detect_backend", "load_backend"]


def backend_class(name: str) -> type[BackendBase]:
    """The class of a backend by name (imported on first use: each pulls in its own model libraries)."""
    if name == "qwen_image_edit":
        from g2u.backends.qwen_image_edit import QwenImageEditBackend

        return QwenImageEditBackend
    if name == "bagel":
        from g2u.backends.bagel import BagelBackend

        return BagelBackend
    if name == "decoupled":
        from g2u.backends.decoupled import DecoupledBackend

        return DecoupledBackend
    raise CheckpointError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def detect_backend(checkpoint: str) -> str:
    """The backend a checkpoint folder is for, read from its layout."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {checkpoint!r} is not a local folder: pass backend= for a hub id")
    if (folder / "g2u_backend.json").is_file():
        backend = json.loads((folder / "g2u_backend.json").read_text()).get("backend")
        if backend not in BACKENDS:
            raise CheckpointError(f"{folder}/g2u_backend.json names unknown backend {backend!r}")
        return backend
    if (folder / "model_index.json").is_file():
        cls = json.loads((folder / "model_index.json").read_text()).get("_class_name")
        if cls in _QWEN_EDIT_CLASSES:
            return "qwen_image_edit"
        raise CheckpointError(f"{folder} is a {cls} pipeline: use backend='decoupled' with editor= and answerer=")
    if (folder / "ema.safetensors").is_file() and (folder / "llm_config.json").is_file():
        return "bagel"
    raise CheckpointError(f"{folder} has no layout g2u knows (model_index.json or g2u_backend.json)")


def load_backend(checkpoint: str | None, backend: str | None = None, *, editor: str | None = None,
                 answerer: str | None = None, device: str | None = None, dtype: str | None = None,
                 offload: str = "none", quantize: str = "none") -> Backend:
    """Load the backend for ``checkpoint`` (detected from its layout unless ``backend`` is given).
    ``offload``/``quantize`` fit it into a smaller GPU (``g2u.memory``): checked before any weight is read,
    then the weights are loaded on the CPU and quantized or offloaded onto ``device``."""
    if backend is not None and backend not in BACKENDS:
        raise CheckpointError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if offload == "none" and quantize == "none":
        return _fast(_load(checkpoint, backend, editor, answerer, device, dtype))
    from g2u.devices import dtype_name, resolve_device, resolve_dtype
    from g2u.memory import apply_memory_fit, validate_memory_fit

    target = resolve_device(device)
    name = backend or ("decoupled" if editor or answerer else detect_backend(checkpoint) if checkpoint else None)
    validate_memory_fit(offload, quantize, target, backend_class(name).no_offload if name else None)
    staging = "cpu" if target.type == "cuda" else device  # the fit moves (or offloads) the weights itself
    loaded = _load(checkpoint, backend, editor, answerer, staging, dtype or dtype_name(resolve_dtype(None, target)))
    apply_memory_fit(loaded, offload=offload, quantize=quantize, device=target)
    return _fast(loaded)


def _fast(backend: Backend) -> Backend:
    """The fast path where it is exact (``g2u.fastpath``: vision encodings reused; on CUDA a static,
    compiled decode cache); the opt-in modes stay off."""
    from g2u.fastpath import apply_fast_path

    apply_fast_path(backend)
    return backend


def _load(checkpoint: str | None, backend: str | None, editor: str | None, answerer: str | None,
          device: str | None, dtype: str | None) -> Backend:
    if editor or answerer:
        if not (editor and answerer):
            raise CheckpointError("the decoupled backend needs both editor= and answerer=")
        from g2u.backends.decoupled import DecoupledBackend

        return DecoupledBackend.from_pretrained(editor, answerer, device=device, dtype=dtype)
    if checkpoint is None:
        raise CheckpointError("no checkpoint given: pass a folder or hub id (or editor= and answerer=)")
    if backend is None:
        backend = detect_backend(checkpoint)
    if backend == "decoupled":
        from g2u.backends.decoupled import load_decoupled_dir

        return load_decoupled_dir(checkpoint, device=device, dtype=dtype)
    return backend_class(backend).from_pretrained(checkpoint, device=device, dtype=dtype)
