"""Answers that read as text.

Byte-level tokenizers (Qwen2's ByteLevel BPE, Llama's ``<0xNN>`` byte fallback) decode any token
sequence, including ones no trained model writes in an answer: lone control bytes and half UTF-8
characters (shown as U+FFFD). Two fixes, each where its cause is:

* ``clean_answer_text``: what the decode of every backend applies after ``skip_special_tokens`` (what
  the real processors do): control characters other than tab/newline and U+FFFD are removed. A trained
  model meets this only when ``max_new_tokens`` cuts a multi-byte character in half.
* ``non_text_token_ids``: the tokens a demo checkpoint's ``generation_config.suppress_tokens`` lists, so
  its random weights sample word pieces only (transformers' ``SuppressTokensLogitsProcessor``) — the
  demo's answers are meaningless words instead of byte noise. Real checkpoints never get this list.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

REPLACEMENT = "\ufffd"
_KEEP = {"\n", "\t"}


def _is_noise(ch: str) -> bool:
    return ch == REPLACEMENT or (ch not in _KEEP and unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn"))


def visible_text(text: str) -> str:
    """``text`` without control characters (tab and newline kept) and replacement characters."""
    return "".join(ch for ch in text if not _is_noise(ch))


def clean_answer_text(text: str) -> str:
    """``visible_text``, stripped: what an answer reads as (a streamed answer's deltas add up to it)."""
    return visible_text(text).strip()


def non_text_token_ids(tokenizer: Any, vocab_size: int, keep: Iterable[int] = ()) -> list[int]:
    """Ids in ``[0, vocab_size)`` that do not decode on their own to printable text: added tokens
    (special or not: ``<|im_start|>``, ``<|repo_name|>``, vision placeholders), tokens decoding to a
    control byte, half a character or nothing, and the padded embedding rows past the tokenizer. ``keep``
    (the end-of-sequence ids) stays allowed, so answers still end."""
    keep = set(keep)
    added = set(tokenizer.get_added_vocab().values())
    out = []
    for tid in range(vocab_size):
        if tid in keep:
            continue
        if tid in added or tid >= len(tokenizer):
            out.append(tid)
            continue
        text = tokenizer.decode([tid])
        if not text or any(_is_noise(ch) for ch in text):
            out.append(tid)
    return out
