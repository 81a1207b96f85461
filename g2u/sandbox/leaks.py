"""The leak check: no question or edit prompt names the answer.

A sample leaks when its question text contains the answer in words (for an MCQ: the correct option's
text; the options themselves of course list it among distractors), or when an edit prompt the
evaluation may send for it names the answer or an option (``g2u.prompts.find_leak``, the rule the
pipeline itself enforces). File names carry no answer either: they are sequence numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from g2u.prompts import PromptLibrary, default_library, find_leak


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def question_leak(question: str, answer_text: str) -> str | None:
    """Why ``question`` names ``answer_text`` (as whole words), or None."""
    words, needle = _words(question), _words(answer_text)
    n = len(needle)
    if n and any(words[i:i + n] == needle for i in range(len(words) - n + 1)):
        return f"the question names the answer {answer_text!r}"
    return None


def sample_leaks(row: dict, library: PromptLibrary | None = None) -> list[str]:
    """Every leak of one manifest row (empty: clean). Checks the question against the answer in words and
    every library prompt of the row's expected family against the options and the answer."""
    library = library or default_library()
    problems = []
    leak = question_leak(row["question"], row["answer_text"])
    if leak:
        problems.append(leak)
    for name in library.names(row.get("expected_family")):
        leak = find_leak(library.get(name).text, row.get("options"), row["answer_text"])
        if leak:
            problems.append(f"edit prompt {name!r} {leak}")
    if row["answer_text"].lower() in _words(row["image"]) + _words(row.get("oracle_thought", "")):
        problems.append("an image file name carries the answer")
    return problems


def check_manifest(rows: Iterable[dict], library: PromptLibrary | None = None) -> dict[str, list[str]]:
    """{sample id: leaks} for every leaking row; an empty dict means the manifest is leak-free."""
    library = library or default_library()
    found = {}
    for row in rows:
        problems = sample_leaks(row, library)
        if problems:
            found[row["id"]] = problems
    return found
