"""Progress of the requests being computed: what a streamed response shows while the model works.

Three parties, each with one small call:

    the batch path   ``listening([(plan, listener)])`` who listens (a streamed or OpenAI request)
    the loop         ``rows(plans, phase)``           whose rows a backend call computes, in order
                     ``emit(plan, kind, **data)``     a request's own event (the prompt chosen)
    the backends     ``subset(indices)``              a sub-call over some of the rows (grouping)
                     ``step(k, n)``                   one denoising step done, next to check_deadline
                     ``token_stream(decode, stops)``  the decode loop's tokens (None: nobody listens)

Without a listener each of these returns at once after one ContextVar read: plain requests pay nothing.

Events handed to a listener (``Event.kind`` and its ``data``):

    prompt   the edit prompt of one candidate: prompt, prompt_name, family, writer, candidate
    step     stage I: step (1-based) of total, once per request per denoising step
    tokens   new decoded text of one row: phase (``answer``, ``reasoning``), text; only rows the loop
             marks as streamed (a request's own answer, not its candidates' or its gate's)
    usage    one per row when its decode ends: phase, prompt_tokens (what the model read, image tokens
             included), completion_tokens (tokens chosen before the stop token), stopped (ended on a
             stop token rather than on the length budget), streamed (the row is the request's own answer,
             not a candidate's, a vote's or the gate's)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from g2u.decoding import visible_text


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]


Listener = Callable[[Event], None]


@dataclass(frozen=True)
class _Rows:
    """The listeners of the rows of the backend call in progress (None: nobody listens to that row)."""

    listeners: tuple[Listener | None, ...]
    phase: str
    stream: tuple[bool, ...]


_listeners: ContextVar[dict[int, Listener] | None] = ContextVar("g2u_progress_listeners", default=None)
_rows: ContextVar[_Rows | None] = ContextVar("g2u_progress_rows", default=None)


@contextmanager
def listening(listeners: Iterable[tuple[Any, Listener]]) -> Iterator[None]:
    """Route the events of each (owner, listener) pair's owner (a request plan, compared by identity) to
    its listener for the block."""
    token = _listeners.set({id(k): v for k, v in listeners} or None)
    try:
        yield
    finally:
        _listeners.reset(token)


@contextmanager
def rows(owners: Sequence[Any], phase: str, stream: Sequence[bool] | None = None) -> Iterator[None]:
    """The backend call in the block computes one row per ``owners`` item (a plan), in order.
    ``stream``: which rows' tokens are shown as they are decoded (default: all)."""
    table = _listeners.get()
    found = tuple(table.get(id(o)) for o in owners) if table else ()
    if not any(found):
        token = _rows.set(None)
    else:
        shown = tuple(stream) if stream is not None else (True,) * len(found)
        token = _rows.set(_Rows(found, phase, shown))
    try:
        yield
    finally:
        _rows.reset(token)


@contextmanager
def subset(indices: Sequence[int]) -> Iterator[None]:
    """A sub-call over the rows ``indices`` of the current call (a backend splitting its batch)."""
    current = _rows.get()
    if current is None:
        yield
        return
    token = _rows.set(_Rows(tuple(current.listeners[i] for i in indices), current.phase,
                            tuple(current.stream[i] for i in indices)))
    try:
        yield
    finally:
        _rows.reset(token)


def emit(owner: Any, kind: str, **data: Any) -> None:
    """An event of one request (``owner``: its plan)."""
    table = _listeners.get()
    listener = table.get(id(owner)) if table else None
    if listener is not None:
        listener(Event(kind, data))


def step(k: int, total: int) -> None:
    """Stage I finished denoising step ``k`` (1-based) of ``total`` for every row of the current call."""
    current = _rows.get()
    if current is None:
        return
    event = Event("step", {"stage": "edit", "step": k, "total": total})
    for listener in _unique(current.listeners):
        listener(event)


def diffusers_callback(total: int) -> Callable[..., dict] | None:
    """A stock diffusers pipeline's ``callback_on_step_end`` reporting each step (None: nobody listens)."""
    if _rows.get() is None:
        return None

    def on_step_end(pipe: Any, i: int, t: Any, callback_kwargs: dict) -> dict:
        step(i + 1, int(getattr(pipe, "num_timesteps", None) or total))
        return callback_kwargs

    return on_step_end


def token_stream(decode: Callable[[list[int]], str], stop_ids: Iterable[int]) -> TokenStream | None:
    """A ``TokenStream`` for the decode about to run (None when no row of it has a listener)."""
    current = _rows.get()
    if current is None:
        return None
    return TokenStream(current, decode, frozenset(stop_ids))


class TokenStream:
    """The tokens a decode loop chooses, per row: incremental text for the streamed rows, counts for all.

    ``prompt(lengths)`` once (tokens each row reads), ``put(tokens)`` per step (one id per row), ``end()``.
    A row stops at its first stop token; what a batched loop computes for it afterwards is ignored.
    Text is the decode of all the row's tokens so far, shown once it does not end inside a UTF-8
    sequence (U+FFFD), the way transformers' ``TextStreamer`` holds incomplete characters back, without
    the control characters the answer's own decode drops (``g2u.decoding``).
    """

    def __init__(self, rows_: _Rows, decode: Callable[[list[int]], str], stop_ids: frozenset[int]):
        self.rows, self.decode, self.stop_ids = rows_, decode, stop_ids
        n = len(rows_.listeners)
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.shown = [""] * n
        self.done = [False] * n
        self.prompt_tokens = [0] * n

    def prompt(self, lengths: Sequence[int]) -> None:
        self.prompt_tokens = [int(n) for n in lengths]

    def put(self, tokens: Sequence[int]) -> None:
        for r, tok in enumerate(tokens):
            if self.done[r]:
                continue
            if int(tok) in self.stop_ids:
                self.done[r] = True
                continue
            self.ids[r].append(int(tok))
            listener = self.rows.listeners[r]
            if listener is None or not self.rows.stream[r]:
                continue
            raw = self.decode(self.ids[r])
            if raw.endswith("\ufffd"):  # half a character: wait for the rest of it
                continue
            text = visible_text(raw)  # what the answer keeps (``g2u.decoding.clean_answer_text``)
            if len(text) <= len(self.shown[r]) or not text.startswith(self.shown[r]):
                continue
            new, self.shown[r] = text[len(self.shown[r]):], text
            listener(Event("tokens", {"phase": self.rows.phase, "text": new}))

    def end(self) -> None:
        for r, listener in enumerate(self.rows.listeners):
            if listener is not None:
                listener(Event("usage", {"phase": self.rows.phase, "prompt_tokens": self.prompt_tokens[r],
                                         "completion_tokens": len(self.ids[r]), "stopped": self.done[r],
                                         "streamed": self.rows.stream[r]}))


class GenerateStreamer:
    """A transformers ``generate(streamer=...)`` adapter of a TokenStream: ``generate`` puts the prompt
    ids ``[rows, length]`` first (left-padded: ``pad_id`` is not counted), then one token per row a step."""

    def __init__(self, stream: TokenStream, pad_id: int | None):
        self.stream, self.pad_id, self._prompted = stream, pad_id, False

    def put(self, value: Any) -> None:
        if not self._prompted:
            self._prompted = True
            ids = value if value.dim() == 2 else value[None]
            lengths = (ids != self.pad_id).sum(1) if self.pad_id is not None else [ids.shape[1]] * ids.shape[0]
            self.stream.prompt([int(n) for n in lengths])
            return
        self.stream.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.stream.end()


def generate_streamer(tokenizer: Any) -> GenerateStreamer | None:
    """The ``streamer`` argument of a transformers ``generate`` call (None: nobody listens)."""
    stream = token_stream(lambda ids: tokenizer.decode(ids, skip_special_tokens=True), tokenizer.all_special_ids)
    return None if stream is None else GenerateStreamer(stream, tokenizer.pad_token_id)


def _unique(listeners: Iterable[Listener | None]) -> list[Listener]:
    seen: dict[int, Listener] = {}
    for listener in listeners:
        if listener is not None:
            seen.setdefault(id(listener), listener)
    return list(seen.values())


__all__ = ["Event", "GenerateStreamer", "Listener", "TokenStream", "diffusers_callback", "emit", "generate_streamer",
           "listening",
           "rows", "step", "subset", "token_stream"]
