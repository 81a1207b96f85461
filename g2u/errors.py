"""Typed errors: every rejection names the offending field and the reason, so a REST client or a CLI
user can fix the request without reading a stack trace."""

from __future__ import annotations


class G2UError(Exception):
    """Base class of the errors g2u raises on purpose."""


class InputError(G2UError, ValueError):
    """A request field is missing or invalid (HTTP 4xx)."""

    status = 400

    def __init__(self, field: str, reason: str, status: int | None = None):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        if status is not None:
            self.status = status

    def to_dict(self) -> dict:
        return {"error": "invalid_input", "field": self.field, "reason": self.reason}


class CheckpointError(G2UError):
    """A checkpoint cannot be found or has a layout no backend knows."""


class ModelError(G2UError):
    """A model failed while computing a result (HTTP 5xx)."""

    status = 500
