"""Client-chosen text kept out of what operators read: metric labels, log lines, error bodies.

A request's field names and values are the client's. Written raw, they
- become metric series (one per unique unknown key: the frontend's heap fills and TorchServe exits),
- forge metrics: TorchServe's frontend parses every worker output line that starts with ``[METRICS]``,
  and a metric line's ``|#`` separates its dimensions, so a name holding ``\\n[METRICS]…`` or
  ``|#hostname:…`` writes series and labels of the client's choosing,
- rewrite log lines (newlines, carriage returns, ANSI escapes) and roll the logs (megabyte keys).

So a metric label is a field name of the schema or ``unknown`` (``g2u.serving.metric_field``), an error
kind one of a fixed set (``g2u.serving.metric_kind``); every log record of the worker goes through
``LogGuard`` (control characters escaped, ``[METRICS]`` neutralised outside TorchServe's own metric lines,
cut to a bounded length); an error body names a field the client invented by a bounded, escaped prefix of
it (``g2u.errors.InputError``).
"""

from __future__ import annotations

import logging
import re

MAX_LOG_CHARS = 2000
"""Longest log message (a traceback gets ``MAX_TRACE_CHARS``): a client's megabyte key cannot roll the logs."""
MAX_TRACE_CHARS = 8000
MAX_FIELD_CHARS = 64
"""Longest field name an error body echoes (a 300 KB name reset the connection)."""

ERROR_KINDS = ("invalid_input", "model_error", "out_of_resources", "deadline_exceeded", "unavailable",
               "not_supported")
EXTRA_FIELDS = ("body", "header", "describe", "explain")
"""Names our own errors use besides the schema's fields."""

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_METRIC_MARK = "[METRICS]"


def _escape_char(match: re.Match) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str, limit: int = MAX_LOG_CHARS) -> str:
    """One line of inert text: control, line-separator and bidi characters as ``\\xNN``/``\\uNNNN``,
    ``[METRICS]`` and ``|#`` defused, cut to ``limit`` characters (the cut says how much went)."""
    text = str(text)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    text = _UNSAFE.sub(_escape_char, text).replace(_METRIC_MARK, "[METRICS\\]").replace("|#", "|\\#")
    return f"{text}…(+{cut} chars)" if cut > 0 else text


class LogGuard(logging.Filter):
    """A logging filter that makes every record one inert line (its traceback excepted, whose lines are
    escaped one by one): installed on the worker's handlers, it covers TorchServe's own loggers too.
    TorchServe's metric records (``ts.metrics``, starting ``[METRICS]``) keep their marker."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record whose args do not fit its format
            message = f"{record.msg!r} % {record.args!r}"
        if record.name.startswith("ts.metrics") and message.startswith(_METRIC_MARK):
            # TorchServe's own line: its labels are ours (fixed); only line breaks could split it.
            safe = _METRIC_MARK + _UNSAFE.sub(_escape_char, message[len(_METRIC_MARK):])
        else:
            safe = escape(message)
        record.msg, record.args = safe, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            trace = record.exc_text[:MAX_TRACE_CHARS]
            record.exc_text = "\n".join(escape(line) for line in trace.splitlines())
            record.exc_info = None
        if record.stack_info:
            record.stack_info = "\n".join(escape(line) for line in record.stack_info.splitlines())
        return True


def install_log_guard(logger: logging.Logger | None = None) -> LogGuard:
    """Put one ``LogGuard`` on every handler of ``logger`` (default: the root logger, where TorchServe's
    worker writes), and on the logger itself for records logged before a handler exists."""
    logger = logger or logging.getLogger()
    guard = next((f for f in logger.filters if isinstance(f, LogGuard)), None) or LogGuard()
    for target in (logger, *logger.handlers):
        if guard not in target.filters:
            target.addFilter(guard)
    return guard


__all__ = ["ERROR_KINDS", "EXTRA_FIELDS", "LogGuard", "escape", "install_log_guard",
           ]
