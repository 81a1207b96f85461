"""One sandbox sample drawn from a seed: scene, clean image, question, degradation and degraded image.

A sample's *content* is its scene without the pixel jitter (each object's shape, colour, size and cell)
and its question (text and the set of options): two samples with the same content ask the same thing
about the same picture, whatever the jitter, the option order or the degradation. Evaluation sets are
kept disjoint from every training draw by content (``content_key``), not only by seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from PIL import Image

from g2u.sandbox.degrade import DEGRADATIONS, SEVERITIES, degrade
from g2u.sandbox.questions import Question, ask
from g2u.sandbox.scenes import Scene, draw_scene, render

ContentKey = tuple


@dataclass
class SandboxSample:
    index: int
    scene: Scene
    clean: Image.Image
    question: Question
    degradation: str
    severity: int
    degraded: Image.Image
    params: dict = field(default_factory=dict)
    """The degradation's parameters as ``degrade`` reports them."""

    @property
    def expected_family(self) -> str:
        return DEGRADATIONS[self.degradation].family


def content_key(scene: Scene, question: Question) -> ContentKey:
    """What a sample asks about what, ignoring pixel jitter, option order and degradation."""
    objects = tuple((o.shape, o.color, o.size, o.position) for o in scene.objects)
    return (objects, question.text, tuple(sorted(question.options or ())))


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(f"g2u-sandbox:{seed}:{index}")


def draw_content(seed: int, index: int) -> tuple[Scene, Question]:
    """The scene and question of sample ``index`` of ``seed`` (cheap: nothing is drawn in pixels)."""
    rng = _rng(seed, index)
    scene = draw_scene(rng)
    return scene, ask(scene, rng)


def cell_of(slot: int) -> tuple[str, int]:
    """The (degradation, severity) of the ``slot``-th sample of a set: they cycle so cells fill evenly."""
    names = list(DEGRADATIONS)
    return names[slot % len(names)], SEVERITIES[(slot // len(names)) % len(SEVERITIES)]


def draw_sample(seed: int, index: int, slot: int | None = None) -> SandboxSample:
    """Sample ``index`` of the sandbox with ``seed``: the same pair always gives the same sample. Its
    degradation and severity are those of ``slot`` (default: ``index``), see ``cell_of``."""
    rng = _rng(seed, index)
    scene = draw_scene(rng)
    clean = render(scene)
    question = ask(scene, rng)
    name, severity = cell_of(index if slot is None else slot)
    degraded, params = degrade(clean, name, severity, question.targets, rng)
    return SandboxSample(index, scene, clean, question, name, severity, degraded, params)


def content_keys(streams: Iterable[tuple[int, int]]) -> set[ContentKey]:
    """The content of every draw of the (seed, count) streams: draws 0..count-1 of each seed."""
    keys = set()
    for seed, count in streams:
        for index in range(count):
            keys.add(content_key(*draw_content(seed, index)))
    return keys


def draw_disjoint(seed: int, n: int, exclude: set[ContentKey] = frozenset(),
                  max_draws: int | None = None,
                  progress: Callable[[int], None] | None = None) -> list[SandboxSample]:
    """``n`` samples of ``seed`` whose contents are pairwise distinct and not in ``exclude``; kept samples
    take degradation cells in turn (``cell_of`` of their rank). Raises ValueError when ``max_draws``
    (default 200·n) candidates do not give ``n``."""
    limit = max_draws or 200 * n
    seen, kept, index = set(exclude), [], 0
    while len(kept) < n:
        if index >= limit:
            raise ValueError(f"only {len(kept)} of n={n} sandbox samples of seed {seed} are new by content "
                             f"after {limit} draws; ask for fewer")
        key = content_key(*draw_content(seed, index))
        if key not in seen:
            seen.add(key)
            kept.append(draw_sample(seed, index, slot=len(kept)))
            if progress:
                progress(len(kept))
        index += 1
    return kept
