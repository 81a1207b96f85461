"""The model-config's ``handler:`` section as one pydantic model, validated when the model loads.

Every server setting and its default is declared here once — the loader options (``g2u.loading``), what
responses call the checkpoint, the pixel limit, the deadline, the work budget, the thought cache and the
request defaults — so the shipped model-configs set only what differs. A bad or unknown key stops the
load with its name (``model-config handler.budget.max_edit_work: ...``), in the model log.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from g2u.images import DEFAULT_MAX_PIXELS
from g2u.loading import LoaderOptions, first_error
from g2u.thought_cache import DEFAULT_MAX_MB


class SettingError(ValueError):
    """A bad value below a key (``defaults.steps``): ``key`` extends the name pydantic reports."""

    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key = key


class BudgetSettings(BaseModel):
    """Per-request work budget (``g2u.budget``): a request over it is refused (422) before any work."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_edit_work: float | None = Field(None, gt=0, description="stage-I work in MP · steps · CFG branches "
                                                                "(default: 4× the paper's settings at the "
                                                                "model's working area)")
    max_decode_tokens: int | None = Field(None, gt=0, description="tokens one request may decode in stage II "
                                                                  "(all answer passes + reasoning)")
    max_prompt_tokens: int | None = Field(None, gt=0, description="tokens of one stage-II prompt (default: "
                                                                  "min(32768, the model's positions))")
    max_batch_tokens: int | None = Field(None, gt=0, description="padded tokens of one batched stage-II call: "
                                                                 "rows × longest prompt (default: "
                                                                 "max_prompt_tokens)")


class ThoughtCacheSettings(BaseModel):
    """An on-disk thought cache shared by the workers pointing at ``dir`` (``g2u.thought_cache``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: str = Field(..., min_length=1, description="the cache folder")
    max_mb: float = Field(DEFAULT_MAX_MB, gt=0, description="size bound; least recently used thoughts go first")
    report_hits: bool = Field(False, description="responses say edit.cached (off: a hit is a cross-user "
                                                 "membership signal)")


class SchedulerSettings(BaseModel):
    """How the worker schedules requests: TorchServe's dynamic batching, or the step scheduler
    (``g2u.scheduler``: requests join a running denoise at step boundaries)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["auto", "batch", "step"] = Field(
        "auto", description="batch: TorchServe's dynamic batching (batchSize, maxBatchDelay); step: the step "
                            "scheduler, which needs asyncCommunication: true in the model-config; auto: step "
                            "exactly when asyncCommunication is true")
    max_rows: int = Field(8, ge=1, le=256, description="step: transformer rows one denoising step may batch (an "
                                                       "item with true CFG takes 2); also the admission bound")
    exact: bool = Field(True, description="step: a thought bit-identical to the one made alone (False: prompts of "
                                          "different lengths share one forward, within fp32 rounding)")


class HandlerSettings(LoaderOptions):
    """The ``handler:`` section of a TorchServe model-config (the loader options included)."""

    checkpoint_name: str | None = Field(None, description="what responses report as model.checkpoint "
                                                          "(default: the checkpoint folder's name)")
    report_checkpoint_path: bool = Field(False, description="responses carry the checkpoint's path on this "
                                                            "server instead of its name")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="larger images are refused with 413, "
                                                                  "from the header alone")
    deadline_s: float = Field(300.0, gt=0, description="a request still computing after this many seconds is "
                                                       "answered 504 (its batch-mates are answered); below "
                                                       "responseTimeout, past which TorchServe kills the worker")
    budget: BudgetSettings = Field(default_factory=BudgetSettings, description="per-request work budget")
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings,
                                         description="batch or step (or {kind, max_rows, exact})")
    thought_cache: ThoughtCacheSettings | None = Field(
        None, description="a folder, or {dir, max_mb, report_hits} (default: $G2U_THOUGHT_CACHE; unset too: no cache)")
    defaults: dict[str, Any] = Field(default_factory=dict, description="request fields applied under every "
                                                                       "request's own (g2u/schema.py; unset: "
                                                                       "the schema's defaults)")

    @field_validator("thought_cache", mode="before")
    @classmethod
    def _folder_or_mapping(cls, value: Any) -> Any:
        if value in (None, "", False):
            return None
        return {"dir": str(value)} if isinstance(value, (str, Path)) else value

    @field_validator("scheduler", mode="before")
    @classmethod
    def _kind_or_mapping(cls, value: Any) -> Any:
        if value is None:
            return {}
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("budget", mode="before")
    @classmethod
    def _null_budget(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("defaults", mode="before")
    @classmethod
    def _checked_defaults(cls, value: Any) -> Any:
        """The schema checks the configured defaults as it checks requests."""
        from g2u.errors import InputError
        from g2u.schema import validate_settings

        value = {} if value is None else value
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping of request fields")
        try:
            validate_settings(dict(value))
        except InputError as exc:
            raise SettingError(exc.field, exc.reason) from None
        return dict(value)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model_config(cls, model_yaml: Mapping[str, Any] | None) -> HandlerSettings:
        """The validated ``handler:`` section of a model-config (TorchServe's ``model_yaml_config``)."""
        model_yaml = model_yaml or {}
        try:
            settings = cls.model_validate(dict(model_yaml.get("handler") or {}))
        except ValidationError as exc:
            key, reason = first_error(exc)
            err = exc.errors(include_url=False)[0]
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, SettingError):
                key = f"{key}.{cause.key}"
            raise ValueError(f"model-config handler.{key}: {reason}") from None
        asynchronous = bool(model_yaml.get("asyncCommunication", False))
        if settings.scheduler.kind == "auto":
            kind = "step" if asynchronous else "batch"
            settings = settings.model_copy(update={"scheduler": settings.scheduler.model_copy(update={"kind": kind})})
        if settings.scheduler.kind == "step" and not asynchronous:
            raise ValueError("model-config handler.scheduler: 'step' needs asyncCommunication: true (the worker must "
                             "receive requests while it denoises); set it, or scheduler: batch")
        if asynchronous and int(model_yaml.get("batchSize") or 1) != 1:
            # TorchServe 0.12's AsyncBatchAggregator.getRequest removes each polled job from the map it is
            # iterating: a poll of two or more jobs throws ConcurrentModificationException and kills the worker
            raise ValueError("model-config batchSize must be 1 with asyncCommunication: true (TorchServe 0.12's "
                             "asynchronous aggregator fails on a batch of 2 or more; the step scheduler batches "
                             "inside the worker)")
        if settings.scheduler.kind == "batch" and asynchronous:
            raise ValueError("model-config handler.scheduler: 'batch' is TorchServe's dynamic batching, which "
                             "asyncCommunication: true turns off; remove it, or scheduler: step")
        timeout = float(model_yaml.get("responseTimeout") or 0)
        if timeout and settings.deadline_s >= timeout:
            raise ValueError(f"model-config handler.deadline_s ({settings.deadline_s}) must be below responseTimeout "
                             f"({timeout}): past responseTimeout TorchServe kills the worker")
        return settings

    # ------------------------------------------------------------------ use
    def checkpoint_in(self, model_dir: str | Path) -> str:
        """The checkpoint to load: a relative folder inside the extracted .mar (the packed demo), an absolute
        one on this machine, a hub id as given; none at all: the embedded demo (``g2u.checkpoints``)."""
        from g2u.checkpoints import resolve_checkpoint

        if self.checkpoint is None:
            return resolve_checkpoint(None, self.backend)
        path = Path(self.checkpoint).expanduser()
        inside = Path(model_dir) / path
        return str(inside if not path.is_absolute() and inside.exists() else path)

    def thought_cache_store(self):
        """The configured ``ThoughtCache``, or ``"env"`` (the pipeline reads ``G2U_THOUGHT_CACHE``)."""
        from g2u.thought_cache import ThoughtCache

        if self.thought_cache is None:
            return "env"
        return ThoughtCache(self.thought_cache.dir, self.thought_cache.max_mb)


__all__ = ["BudgetSettings", "HandlerSettings", "SchedulerSettings", "SettingError", "ThoughtCacheSettings"]
