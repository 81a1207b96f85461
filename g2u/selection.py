"""Choosing among candidate thoughts: the paper's models "can imagine but do not know what to imagine".

A request with ``candidates: N`` gets N thoughts (different prompts, families, seeds) and one answer per
thought; a policy picks one:

- ``confidence``: the answer with the highest mean token probability;
- ``agreement``: a majority vote over the candidates' answers and the baseline answer (ties: the more
  confident group); the baseline can win, and then no thought is chosen;
- ``judge``: the highest fidelity-judge score ``score(original, thought, prompt) -> float | None``
  (a candidate the judge could not score ranks last; all unscored: ``confidence`` decides, and says so).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from g2u.schema import SELECTIONS
from g2u.types import Answer, Thought

Judge = Callable[[Image.Image, Image.Image, str], "float | None"]
"""A fidelity judge: how well ``thought`` serves as an edit of ``original`` under ``prompt`` (higher is better)."""



@dataclass
class Candidate:
    thought: Thought
    answer: Answer
    judge: float | None = None


@dataclass
class Choice:
    """The policy's verdict: ``index`` of the chosen candidate (None: the baseline answer won the vote)."""

    index: int | None
    answer: str
    policy: str
    note: str | None = None
    votes: dict[str, int] = field(default_factory=dict)


def normalise(text: str) -> str:
    """Answers vote as equal when they differ only in case, spacing or end punctuation."""
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".!。 ")


def by_confidence(candidates: Sequence[Candidate]) -> int:
    return max(range(len(candidates)), key=lambda i: (candidates[i].answer.prob, -i))


def select(policy: str, candidates: Sequence[Candidate], baseline: Answer | None = None) -> Choice:
    if not candidates:
        raise ValueError("no candidates to select from")
    if policy == "confidence":
        i = by_confidence(candidates)
        return Choice(i, candidates[i].answer.text, policy)
    if policy == "judge":
        scored = [i for i, c in enumerate(candidates) if c.judge is not None]
        if not scored:
            i = by_confidence(candidates)
            return Choice(i, candidates[i].answer.text, policy, note="the judge scored no candidate: confidence")
        i = max(scored, key=lambda k: (candidates[k].judge, -k))
        return Choice(i, candidates[i].answer.text, policy)
    if policy == "agreement":
        voters: list[tuple[int | None, Answer]] = [(i, c.answer) for i, c in enumerate(candidates)]
        if baseline is not None:
            voters.append((None, baseline))
        groups: dict[str, list[tuple[int | None, Answer]]] = {}
        for who, ans in voters:
            groups.setdefault(normalise(ans.text), []).append((who, ans))
        best = max(groups.values(), key=lambda g: (len(g), max(a.prob for _, a in g)))
        votes = {k: len(g) for k, g in groups.items()}
        thought_voters = [(who, a) for who, a in best if who is not None]
        if not thought_voters:
            return Choice(None, best[0][1].text, policy, note="the baseline answer won the vote", votes=votes)
        who, ans = max(thought_voters, key=lambda wa: (wa[1].prob, -wa[0]))
        return Choice(who, ans.text, policy, votes=votes)
    raise ValueError(f"unknown selection policy {policy!r}; choose one of {', '.join(SELECTIONS)}")


def candidate_dicts(candidates: Sequence[Candidate], choice: Choice) -> list[dict[str, Any]]:
    """Every candidate as the result reports it: prompt, family, seed, scores, answer, chosen."""
    out = []
    for i, c in enumerate(candidates):
        e = c.thought.edit
        out.append({"prompt": e.prompt, "prompt_name": e.prompt_name, "family": e.family, "seed": e.seed,
                    "cached": e.cached, "answer": c.answer.text, "answer_prob": round(c.answer.prob, 6),
                    "judge": c.judge, "measures": c.thought.measures, "chosen": i == choice.index})
    return out


__all__ = ["Candidate", "Choice", "Judge", "by_confidence", "candidate_dicts", "normalise", "select"]
