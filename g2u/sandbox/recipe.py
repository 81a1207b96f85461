"""Which sandbox draws training uses, so evaluation never does.

Training draws come from seeds at ``TRAIN_SEED_OFFSET`` and above (the answerer's stream, its calibration
draws, the editor's stream, the validation draws); ``g2u sandbox build`` refuses those seeds, and drops
every sample whose content (``g2u.sandbox.samples.content_key``) any training stream holds.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import lru_cache

from g2u.sandbox.samples import ContentKey, content_keys, draw_content

TRAIN_SEED_OFFSET = 1_000_003
"""Training scenes come from seeds far from the ones sandboxes are built with (0, 1, 2, ...)."""
RESERVED_SEEDS = range(TRAIN_SEED_OFFSET - 1, TRAIN_SEED_OFFSET + 1000)
"""Seeds a sandbox may not be built from: every training and validation stream lies in here."""
ANSWERER_DRAWS = 1200 * 32
"""Draws of the shipped answerer's recipe (steps × batch size), the stream ``training_streams`` covers."""
EDITOR_SEED = TRAIN_SEED_OFFSET + 500
EDITOR_DRAWS = 40_000
"""An upper bound on the editor's training draws (its recipe draws fewer)."""


def check_seed(seed: int) -> None:
    """Raise ValueError naming the field when ``seed`` is a training seed."""
    if seed in RESERVED_SEEDS:
        raise ValueError(f"--seed: {seed} is a training seed (training draws from seeds "
                         f"{RESERVED_SEEDS.start}..{RESERVED_SEEDS.stop - 1}); build evaluation sandboxes from "
                         f"another seed")


def training_streams(seed: int = 0, answerer_draws: int = ANSWERER_DRAWS) -> list[tuple[int, int]]:
    """(seed, count) of every training stream of the recipe with ``seed``."""
    data = TRAIN_SEED_OFFSET + seed
    return [(data, answerer_draws), (data - 1, 64), (data - 2, 600 * 32), (EDITOR_SEED + seed, EDITOR_DRAWS)]


@lru_cache(maxsize=4)
def training_content(seed: int = 0, answerer_draws: int = ANSWERER_DRAWS) -> frozenset[ContentKey]:
    """The content of every training draw (a second or two to compute; cached)."""
    return frozenset(content_keys(training_streams(seed, answerer_draws)))


@lru_cache(maxsize=4)
def majority_prior(seed: int = 0, draws: int = ANSWERER_DRAWS) -> tuple[dict[str, str], dict[str, str]]:
    """The question-only prior learned on the answerer's training draws: the majority answer per question
    text, and per question kind (the fall-back for a text training never asked). Returns (by_text, by_kind)."""
    by_text: dict[str, Counter] = defaultdict(Counter)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for index in range(draws):
        _, q = draw_content(TRAIN_SEED_OFFSET + seed, index)
        by_text[q.text][q.answer] += 1
        by_kind[q.kind][q.answer] += 1
    pick = lambda c: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]  # noqa: E731 (ties: first name)
    return {t: pick(c) for t, c in by_text.items()}, {k: pick(c) for k, c in by_kind.items()}
