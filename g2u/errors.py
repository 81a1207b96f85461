"""Typed errors: every rejection names the offending field and the reason, so a REST client or a CLI
user can fix the request without reading a stack trace."""

from __future__ import annotations


class G2UError(Exception):
    """Base class of the errors g2u raises on purpose."""


class InputError(G2UError, ValueError):
    """A request field is missing or invalid (HTTP 4xx)."""

    status = 400

    def __init__(self, field: str, reason: str, status: int | None = None):
        from g2u.safe_text import MAX_FIELD_CHARS, escape

        # A client-chosen name (an unknown key) is echoed escaped and cut: never megabytes, never raw bytes.
        field = escape(field, MAX_FIELD_CHARS)
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        if status is not None:
            self.status = status

    def to_dict(self) -> dict:
        return {"error": "invalid_input", "field": self.field, "reason": self.reason}


class DataError(InputError):
    """A benchmark file is malformed: names the file, the row (line number or sample id) and the field, so
    a command line prints ``{"error": "invalid_data", "file", "row", "field", "reason"}`` as one line."""

    def __init__(self, file: object, row: object, field: str | None, reason: str):
        self.file, self.row = str(file), row
        if row is None:
            where = self.file
        else:  # a line number (JSONL, TSV) or a sample id (MM-Vet)
            where = f"{self.file}:{row}" if isinstance(row, int) else f"{self.file} [{row!r}]"
        message = f"{where}: field {field!r} {reason}" if field else f"{where}: {reason}"
        ValueError.__init__(self, message)
        self.field = field or "benchmark"
        self.reason = reason
        self.where = where

    def __str__(self) -> str:
        return self.args[0]

    def to_dict(self) -> dict:
        out = {"error": "invalid_data", "file": self.file}
        if self.row is not None:
            out["row"] = self.row
        return out | {"field": self.field, "reason": self.reason}


class CheckpointError(G2UError):
    """A checkpoint cannot be found or has a layout no backend knows."""


class ModelError(G2UError):
    """A model failed while computing a result (HTTP 5xx)."""

    status = 500


def error_body(exc: BaseException) -> tuple[int, dict]:
    """HTTP status and JSON body for an exception raised while serving one item: 4xx names the field,
    507 is an accelerator out of memory, any other failure is the model's (500)."""
    if isinstance(exc, InputError):
        return exc.status, exc.to_dict()
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return 507, {"error": "out_of_resources", "reason": "the accelerator ran out of memory"}
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(exc, G2UError):
        return getattr(exc, "status", 500), {"error": "model_error", "reason": str(exc)}
    return 500, {"error": "model_error", "reason": f"{type(exc).__name__}: {exc}"}
