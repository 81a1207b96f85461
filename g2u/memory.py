"""Memory fit: make a loaded backend fit a GPU smaller than its model, with the field's engines.

- ``quantize``: weight-only quantization of the large Linear-heavy models (the diffusion transformer or
  UNet, the understanding model, BAGEL's MoT): ``int8`` and ``fp8`` with torchao's ``quantize_``
  (``Int8WeightOnlyConfig`` / ``Float8WeightOnlyConfig``), ``nf4`` with bitsandbytes' ``Linear4bit``
  (the 4-bit setting BAGEL's own app offers for 24 GB cards). VAEs stay unquantized (small, conv-heavy).
- ``offload``: keep weights in CPU memory and bring them to the GPU when used: ``model`` (whole models,
  diffusers' ``enable_model_cpu_offload`` / accelerate's ``cpu_offload_with_hook``), ``sequential`` (each
  submodule, ``enable_sequential_cpu_offload`` / ``accelerate.cpu_offload``: least memory, slowest),
  ``group`` (blocks of layers with prefetch, diffusers' group offloading).

Call ``apply_memory_fit`` right after the backend is loaded (the lead wires it into ``load_backend``).
What needs CUDA (fp8, nf4, every offload) is refused on a CPU device with an ``InputError`` naming the
field; so is what a backend cannot honour.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from g2u.errors import InputError

OFFLOAD = ("none", "model", "sequential", "group")
QUANTIZE = ("none", "int8", "fp8", "nf4")

__all__ = ["OFFLOAD", "QUANTIZE", "MemoryFit", "apply_memory_fit", "quantize_module", "validate_memory_fit"]


@dataclass
class MemoryFit:
    """What ``apply_memory_fit`` did: the settings and, per model, how many Linear layers were quantized."""

    offload: str = "none"
    quantize: str = "none"
    quantized: dict[str, int] = field(default_factory=dict)
    offloaded: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"offload": self.offload, "quantize": self.quantize, "quantized": dict(self.quantized),
                "offloaded": list(self.offloaded)}


def validate_memory_fit(offload: str = "none", quantize: str = "none", device: str | torch.device = "cpu",
                        no_offload: str | None = None) -> None:
    """Raise ``InputError(field, reason)`` for a setting that cannot run here, before anything is changed.
    ``no_offload``: the backend's reason it cannot be offloaded (``BackendBase.no_offload``), if any."""
    if offload not in OFFLOAD:
        raise InputError("offload", f"unknown setting {offload!r}; choose one of {', '.join(OFFLOAD)}")
    if quantize not in QUANTIZE:
        raise InputError("quantize", f"unknown setting {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    if offload == "sequential" and quantize != "none":
        raise InputError("offload", "sequential offload streams each submodule's weights with accelerate hooks, "
                                    f"which do not carry {quantize}-quantized weights; use model or group offload")
    if offload != "none" and no_offload:
        raise InputError("offload", no_offload)
    dev = torch.device(device)
    if quantize in ("fp8", "nf4") and dev.type != "cuda":
        engine = "torchao's float8 kernels" if quantize == "fp8" else "bitsandbytes' 4-bit kernels"
        raise InputError("quantize", f"{quantize} needs a CUDA device ({engine}); the model is on {dev}. "
                                     "On CPU use int8 or none")
    if quantize == "fp8" and torch.cuda.get_device_capability(dev) < (8, 9):
        raise InputError("quantize", f"fp8 needs compute capability 8.9+ (Ada, Hopper); {dev} has "
                                     f"{torch.cuda.get_device_capability(dev)}")
    if offload != "none" and dev.type != "cuda":
        raise InputError("offload", f"{offload} offload moves weights between CPU memory and a GPU; the model "
                                    f"is on {dev}, where its weights already are in CPU memory")


# ---------------------------------------------------------------------------------------------- models
def _heavy_models(backend: Any) -> Iterator[tuple[str, nn.Module]]:
    """The Linear-heavy models a backend registered (``Component.quantize``): what quantization targets."""
    for name, comp in backend.components.items():
        if comp.quantize and comp.module is not None:
            yield name, comp.module


def _linear_count(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Linear) for m in module.modules())


def _to_nf4(module: nn.Module, device: torch.device) -> int:
    """Swap every nn.Linear for bitsandbytes' NF4 ``Linear4bit``; the weights are packed when they reach
    the GPU. Hand-written swap because transformers/diffusers only quantize with bitsandbytes at load
    time (``BitsAndBytesConfig``), and here the backend is already loaded."""
    import bitsandbytes as bnb

    count = 0
    for parent in list(module.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=child.weight.dtype, quant_type="nf4", device="meta")
            q.weight = bnb.nn.Params4bit(child.weight.data.to("cpu"), requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                q.bias = nn.Parameter(child.bias.data.to("cpu"), requires_grad=False)
            setattr(parent, child_name, q.to(device))
            count += 1
    return count


def quantize_module(module: nn.Module, quantize: str, device: torch.device) -> int:
    """Quantize ``module``'s Linear weights in place; returns how many layers were quantized."""
    if quantize == "none":
        return 0
    if quantize == "nf4":
        return _to_nf4(module, device)
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    count = _linear_count(module)
    quantize_(module, Int8WeightOnlyConfig() if quantize == "int8" else Float8WeightOnlyConfig())
    return count


# ---------------------------------------------------------------------------------------------- offload
def _offload_module(module: nn.Module, offload: str, device: torch.device) -> None:
    """Offload a transformers model (not a diffusers pipeline) with accelerate / diffusers' group hooks."""
    if offload == "model":
        from accelerate import cpu_offload_with_hook

        module.to("cpu")
        cpu_offload_with_hook(module, execution_device=device)
    elif offload == "sequential":
        from accelerate import cpu_offload

        cpu_offload(module, execution_device=device)
    elif offload == "group":
        from diffusers.hooks import apply_group_offloading

        module.to("cpu")
        apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                               offload_type="block_level", num_blocks_per_group=1)


def _offload_pipeline(pipe: Any, offload: str, device: torch.device) -> None:
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif offload == "group":
        pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1)


def _offload(backend: Any, offload: str, device: torch.device) -> list[str]:
    """Offload every component that can be (a diffusers pipeline with its own hooks, or a module)."""
    done = []
    for name, comp in backend.components.items():
        if comp.offload == "pipeline":
            _offload_pipeline(comp.module, offload, device)
        elif comp.offload == "module":
            _offload_module(comp.module, offload, device)
        else:
            continue
        done.append(name)
    if not done:
        raise InputError("offload", f"the {backend.info.backend} backend registered no component that can be offloaded")
    return done


# ---------------------------------------------------------------------------------------------- entry
def apply_memory_fit(backend: Any, offload: str = "none", quantize: str = "none",
                     device: str | torch.device | None = None) -> MemoryFit:
    """Quantize, then offload, the models of a loaded backend, in place; returns what was done.

    ``device`` is the GPU the models compute on (default: where the backend was loaded, ``info.device``).
    Quantization happens where the weights are; for a model larger than the GPU, load it on CPU and pass
    ``device="cuda:N"``: the quantized weights are then moved there (or offloaded, with ``offload``).
    ``backend.info`` gets the settings in its ``dtype`` label (``bfloat16+int8``), so results and resume
    keys tell quantized runs apart.
    """
    dev = torch.device(device if device is not None else backend.info.device)
    validate_memory_fit(offload, quantize, dev, backend.no_offload)
    fit = MemoryFit(offload=offload, quantize=quantize)
    if quantize == "none" and offload == "none":
        return fit
    for name, module in _heavy_models(backend):
        fit.quantized[name] = quantize_module(module, quantize, dev)
    if offload != "none":
        fit.offloaded = _offload(backend, offload, dev)
    elif str(dev) != backend.info.device:
        _move(backend, dev)
    label = backend.info.dtype + (f"+{quantize}" if quantize != "none" else "")
    label += f"+offload-{offload}" if offload != "none" else ""
    backend.info = replace(backend.info, device=str(dev), dtype=label)
    return fit


def _move(backend: Any, device: torch.device) -> None:
    for comp in backend.components.values():
        if comp.move:
            comp.module.to(device)
