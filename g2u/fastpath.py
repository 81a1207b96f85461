"""The fast path: speed-ups that keep results equal to the stock path up to bf16/fp32 noise, plus opt-in
fast modes that trade exactness for speed. Every switch is measured against the stock path (time and
drift) by ``g2u bench``; the numbers and the reasons for each default are in ``docs/perf-notes.md``.

Exact (on by default where they pay):
* ``vision_reuse``: a content-keyed cache of Qwen2.5-VL vision encodings. Stage I encodes I twice (the
  edit prompt and the negative prompt of true CFG both read it) and stage II reads I again: each distinct
  image (same pixels, same grid) is encoded once.
* ``static_cache`` (+ ``compile_decode``): answer decoding with transformers' static KV cache, compiled by
  ``generate`` itself. Pays on GPU (CUDA graphs); on CPU compiling costs minutes per new cache length,
  so it is opt-in there.
* ``compile_blocks``: diffusers' regional compilation of the repeated transformer blocks.
* ``attention_backend``: diffusers' attention backend for the transformer (``None``: the library's).

Fast modes (off by default, drift printed by the bench):
* ``step_cache``: diffusers First-Block-Cache with this residual threshold (skips the remaining blocks
  when the first block's output barely changed between steps).
* Low-precision weights are not here: ``g2u.memory`` (torchao) owns quantization.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import torch

from g2u.errors import InputError


@dataclass
class FastPath:
    vision_reuse: bool = True
    static_cache: bool | None = None
    """None: on where the device makes it pay (CUDA); off on CPU, where eager static decoding is slower."""
    compile_decode: bool | None = None
    """None: with the static cache on CUDA; off on CPU (minutes of compile per new cache length)."""
    compile_blocks: bool = False
    attention_backend: str | None = None
    step_cache: float | None = None

    def resolved(self, device: torch.device) -> FastPath:
        """Fill the device-dependent defaults."""
        on_gpu = device.type == "cuda"
        static = on_gpu if self.static_cache is None else self.static_cache
        compile_decode = (on_gpu and static) if self.compile_decode is None else self.compile_decode
        if compile_decode and not static:
            raise InputError("compile_decode", "compiled decoding needs the static cache (static_cache=True)")
        if self.step_cache is not None and not 0 < self.step_cache < 1:
            raise InputError("step_cache", f"First-Block-Cache threshold must be in (0, 1), got {self.step_cache}")
        return FastPath(self.vision_reuse, static, compile_decode, self.compile_blocks, self.attention_backend,
                        self.step_cache)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


STOCK = FastPath(vision_reuse=False, static_cache=False, compile_decode=False)
"""Everything off: what stock diffusers/transformers do."""


# ------------------------------------------------------------------------------------------ vision reuse

VISION_REUSE_MODELS = ("qwen2_5_vl", "qwen2_vl")
"""Models whose ``get_image_features(pixel_values, image_grid_thw)`` encodes each image independently."""

class VisionEncodingCache:
    """Wraps a Qwen2/2.5-VL model's ``get_image_features``: images whose patches and grid were seen
    before are not encoded again. Keyed by the pixel bytes (exact), bounded LRU."""

    def __init__(self, inner_model: Any, max_images: int = 16):
        self.inner = inner_model
        self.original = inner_model.get_image_features
        self.max_images = max_images
        self.store: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(pixels: torch.Tensor, grid: torch.Tensor) -> bytes:
        digest = hashlib.blake2b(pixels.detach().contiguous().cpu().numpy().tobytes(), digest_size=16)
        digest.update(str(tuple(grid.tolist())).encode())
        return digest.digest()

    def __call__(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None = None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        kwargs.pop("return_dict", None)
        # Other kwargs (output_hidden_states from the text encoder's caller) do not change pooled features.
        if image_grid_thw is None or torch.is_grad_enabled():
            return self.original(pixel_values, image_grid_thw, return_dict=True, **kwargs)
        sizes = image_grid_thw.prod(-1).tolist()
        chunks = torch.split(pixel_values, sizes)
        keys = [self._key(c, g) for c, g in zip(chunks, image_grid_thw)]
        todo = [i for i, k in enumerate(keys) if k not in self.store and k not in keys[:i]]
        if todo:
            out = self.original(torch.cat([chunks[i] for i in todo]), image_grid_thw[todo], return_dict=True, **kwargs)
            for i, feats in zip(todo, out.pooler_output):
                self.store[keys[i]] = feats
                self.misses += 1
        self.hits += len(keys) - len(todo)
        feats = []
        for k in keys:
            self.store.move_to_end(k)
            feats.append(self.store[k])
        while len(self.store) > self.max_images:
            self.store.popitem(last=False)
        return BaseModelOutputWithPooling(pooler_output=tuple(feats))


def enable_vision_reuse(model: Any, max_images: int = 16) -> VisionEncodingCache:
    """Install the cache on a ``Qwen2_5_VLForConditionalGeneration`` (idempotent); returns it."""
    inner = model.model
    current = inner.__dict__.get("get_image_features")
    if isinstance(current, VisionEncodingCache):
        return current
    cache = VisionEncodingCache(inner, max_images)
    inner.get_image_features = cache
    return cache


def disable_vision_reuse(model: Any) -> None:
    inner = model.model
    if isinstance(inner.__dict__.get("get_image_features"), VisionEncodingCache):
        del inner.get_image_features


# -------------------------------------------------------------------------------------- decoding

def set_decoding(model: Any, static_cache: bool, compile_decode: bool) -> None:
    """Set how ``generate`` decodes by default (its generation config): transformers' static cache, and
    its automatic compilation of the decoding step (CUDA graphs on GPU)."""
    from transformers import CompileConfig

    gc = model.generation_config
    gc.cache_implementation = "static" if static_cache else None
    if compile_decode:
        on_gpu = model.device.type == "cuda"
        cc = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead" if on_gpu else "default")
        cc._compile_all_devices = True  # transformers otherwise compiles on accelerators only
        gc.compile_config = cc
        gc.disable_compile = False
    else:
        gc.compile_config = None
        gc.disable_compile = True


# -------------------------------------------------------------------------------------- denoiser

def compile_blocks(transformer: Any) -> float:
    """diffusers' regional compilation of the repeated blocks; returns seconds spent (lazy: the real
    compile happens on the first forward, which the bench times separately)."""
    start = time.perf_counter()
    transformer.compile_repeated_blocks(fullgraph=True)
    return time.perf_counter() - start


def set_step_cache(transformer: Any, threshold: float | None) -> None:
    """diffusers First-Block-Cache at ``threshold`` (None: removed)."""
    from diffusers import FirstBlockCacheConfig

    if getattr(transformer, "is_cache_enabled", False):
        transformer.disable_cache()
    if threshold is not None:
        transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))


def apply_fast_path(backend: Any, config: FastPath | None = None) -> FastPath:
    """Switch a loaded backend onto the fast path (``config`` None: the defaults). Works on the
    components the backend registered by role (``answer_model``, ``denoiser``: ``BackendBase.register``);
    parts that do not apply to a backend are skipped. Returns the resolved settings."""
    answer_model = backend.component("answer_model")
    device = answer_model.device if answer_model is not None else torch.device("cpu")
    cfg = (config or FastPath()).resolved(device)
    if answer_model is not None and hasattr(answer_model, "generate"):
        if getattr(answer_model.config, "model_type", None) in VISION_REUSE_MODELS:
            if cfg.vision_reuse:
                enable_vision_reuse(answer_model)
            else:
                disable_vision_reuse(answer_model)
        set_decoding(answer_model, cfg.static_cache, cfg.compile_decode)
    transformer = backend.component("denoiser")
    if transformer is not None and hasattr(transformer, "set_attention_backend"):  # a diffusers transformer
        if cfg.attention_backend:
            transformer.set_attention_backend(cfg.attention_backend)
        if cfg.compile_blocks:
            compile_blocks(transformer)
        if hasattr(transformer, "enable_cache"):
            set_step_cache(transformer, cfg.step_cache)
    return cfg
