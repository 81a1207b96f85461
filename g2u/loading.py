"""How a checkpoint is loaded — checkpoint, backend, device, dtype, offload, quantize — declared once.

``LoaderOptions`` is what every entry point loads a pipeline with: the ``g2u`` CLI and the MLflow project's
entry points add its flags with ``add_loader_arguments`` (and scripts/sync_schema.py writes the matching
MLproject parameters), and the model-config's ``handler:`` section extends it
(``g2u.handler_settings.HandlerSettings``). Each option is validated here, its error naming the option.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from g2u.backends import BACKENDS
from g2u.devices import DTYPES
from g2u.errors import InputError
from g2u.memory import OFFLOAD, QUANTIZE

_UNSET = ("", "auto", "none", "None", "null")
"""Text that means "not set" (MLproject passes '' for an unset parameter; yaml and the CLI say auto)."""


def first_error(exc: ValidationError) -> tuple[str, str]:
    """(option name, reason) of a pydantic error, the name dotted for nested keys (``budget.max_edit_work``)."""
    err = exc.errors(include_url=False)[0]
    name = ".".join(str(p) for p in err.get("loc", ())) or "options"
    if err.get("type") == "extra_forbidden":
        return name, "unknown setting"
    cause = (err.get("ctx") or {}).get("error")
    return name, str(cause) if isinstance(cause, ValueError) else err.get("msg", "is invalid")


class LoaderOptions(BaseModel):
    """Which checkpoint to load and how to fit it on the device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str | None = Field(None, description="checkpoint folder or hub id (default: the embedded demo "
                                                     "checkpoint of the backend)")
    backend: Literal[BACKENDS] | None = Field(None, description="one of " + ", ".join(BACKENDS)
                                              + " (default: detected from the checkpoint's layout)")
    device: str | None = Field(None, description="cuda, cuda:1, cpu (default: a GPU when available, under "
                                                 "TorchServe the one it assigned; else the CPU)")
    dtype: Literal[DTYPES] | None = Field(None, description="bfloat16, float16, float32 (default: bf16 on GPU, "
                                                            "fp32 on CPU)")
    offload: Literal[OFFLOAD] = Field("none", description="CPU offload to fit a smaller GPU: "
                                                          + ", ".join(OFFLOAD) + " (g2u.memory)")
    quantize: Literal[QUANTIZE] = Field("none", description="weight-only quantization: int8 (torchao, CPU too), "
                                                            "fp8 (torchao), nf4 (bitsandbytes)")

    @field_validator("checkpoint", "backend", "device", "dtype", mode="before")
    @classmethod
    def _unset_is_none(cls, value: Any) -> Any:
        return None if value is None or (isinstance(value, str) and value.strip() in _UNSET) else value

    @field_validator("offload", "quantize", mode="before")
    @classmethod
    def _unset_is_none_setting(cls, value: Any) -> Any:
        return "none" if value is None or (isinstance(value, str) and value.strip() in _UNSET) else value

    @field_validator("device")
    @classmethod
    def _a_torch_device(cls, value: str | None) -> str | None:
        if value is not None:
            import torch

            try:
                torch.device(value)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(f"not a torch device: {value!r}") from exc
        return value

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> LoaderOptions:
        """Validated options; a bad or unknown one raises ``InputError`` naming it."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise InputError(*first_error(exc)) from None

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> LoaderOptions:
        """The options among parsed arguments (the flags ``add_loader_arguments`` added)."""
        return cls.parse({name: getattr(args, name) for name in LOADER_FIELDS if hasattr(args, name)})

    # ------------------------------------------------------------------ use
    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``G2UPipeline.from_checkpoint`` / ``g2u.backends.load_backend``."""
        return {"device": self.device, "dtype": self.dtype, "offload": self.offload, "quantize": self.quantize}

    def resolved_checkpoint(self) -> str:
        from g2u.checkpoints import resolve_checkpoint

        return resolve_checkpoint(self.checkpoint, self.backend)

    def load(self, **pipeline_kwargs: Any):
        """The pipeline (``G2UPipeline.from_checkpoint``) on the resolved checkpoint (the demo without one)."""
        from g2u.pipeline import G2UPipeline

        return G2UPipeline.from_checkpoint(self.resolved_checkpoint(), self.backend, **self.load_kwargs(),
                                           **pipeline_kwargs)

    def label_suffix(self) -> str:
        """What sets a model's predictions apart beyond backend and checkpoint (``+offload=..+quantize=..``,
        ``+dtype=..``): an evaluation of a quantized model never resumes into the full-precision one's."""
        out = f"+offload={self.offload}+quantize={self.quantize}" if (self.offload, self.quantize) != ("none",
                                                                                                     "none") else ""
        return out + (f"+dtype={self.dtype}" if self.dtype else "")


LOADER_FIELDS: tuple[str, ...] = tuple(LoaderOptions.model_fields)


def add_loader_arguments(parser: argparse.ArgumentParser, fields: Sequence[str] = LOADER_FIELDS) -> None:
    """One ``--flag`` per loader option, with its help text. Values stay text ('' or auto: unset), checked by
    ``LoaderOptions.from_namespace`` so a bad one is reported by name, as a bad request field is."""
    for name in fields:
        info = LoaderOptions.model_fields[name]
        default = info.default
        help_text = (info.description or "").replace("%", "%%")
        if default is not None:
            help_text += f" (default: {default})"
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=help_text)


__all__ = ["LOADER_FIELDS", "LoaderOptions", "add_loader_arguments", "first_error"]
