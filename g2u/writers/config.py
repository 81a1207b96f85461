"""Writer settings, so a deployment tunes the writer's endpoint and time budget from its environment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WriterConfig:
    """Settings of the prompt writers. ``budget_s`` bounds a whole ``write`` (every attempt, back-off and
    Retry-After wait included), so a slow or failing endpoint delays a prediction by at most that much."""

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    """OpenAI-compatible endpoint (None: the official API)."""
    api_key: str | None = field(default=None, repr=False)
    """Never printed: repr hides it so a logged config cannot leak it."""
    timeout_s: float = 10.0
    """Per HTTP attempt (capped by what is left of the budget)."""
    max_retries: int = 2
    budget_s: float = 20.0
    exemplars: str | None = None
    """Path of an exemplar file (None: g2u/data/writer_exemplars.yaml)."""
    cache_size: int = 1024
    """Written prompts kept in memory (LRU); 0 disables the cache."""
    cache_dir: str | None = None
    """Optional folder where written prompts also persist as JSON files, across processes and restarts."""
    max_image_side: int = 512
    """The picture is sent at most this large: the writer needs the gist, not the pixels."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "budget_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"WriterConfig.{name} must be a finite number > 0, got {value!r}")
        for name in ("max_retries", "cache_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"WriterConfig.{name} must be an integer >= 0, got {value!r}")
        if not self.model:
            raise ValueError("WriterConfig.model must not be empty")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WriterConfig:
        """Read OPENAI_API_KEY, OPENAI_BASE_URL and G2U_WRITER_*; a bad value raises ValueError naming
        its variable, so a misconfigured server fails at start-up rather than on every request."""
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            return (env.get(name) or "").strip() or None

        def number(name: str, default: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {raw!r}")
            return value

        def count(name: str, default: int) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {raw!r}") from None
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {raw!r}")
            return value

        return cls(model=text("G2U_WRITER_MODEL") or cls.model,
                   base_url=text("OPENAI_BASE_URL"),
                   api_key=text("OPENAI_API_KEY"),
                   timeout_s=number("G2U_WRITER_TIMEOUT_S", cls.timeout_s),
                   max_retries=count("G2U_WRITER_RETRIES", cls.max_retries),
                   budget_s=number("G2U_WRITER_BUDGET_S", cls.budget_s),
                   exemplars=text("G2U_WRITER_EXEMPLARS"),
                   cache_size=count("G2U_WRITER_CACHE_SIZE", cls.cache_size),
                   cache_dir=text("G2U_WRITER_CACHE_DIR"))
