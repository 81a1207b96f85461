"""Questions whose answers follow from the scene by construction.

Every answer is one short word (a digit, a colour, a shape, yes/no) or an option letter, so a tiny
answer model can learn them. Each question also names its ``targets``: where a degradation should hit
(the cells the answer depends on, each with the point to centre on), chosen so that where they are says
nothing about the answer (``g2u.sandbox.degrade``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from g2u.eval.datasets import LETTERS
from g2u.sandbox.degrade import Target, cell_point
from g2u.sandbox.scenes import COLORS, POSITIONS, SHAPES, Scene, SceneObject

KINDS = ("count", "color", "shape_at", "larger", "exists", "color_choice")


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    options: list[str] | None
    answer: str
    """The gold answer as the manifest stores it: a word, "yes"/"no", or an option's letter."""
    answer_text: str
    """The answer in words (an MCQ's option text): what the question must never contain."""
    targets: tuple[Target, ...]
    """Where a degradation looks: one (position, point) per cell the answer depends on."""


def ask(scene: Scene, rng: random.Random, kind: str | None = None) -> Question:
    """A question of ``kind`` (drawn at random when None, among the kinds this scene allows)."""
    allowed = [k for k in KINDS if _possible(scene, k)]
    if kind is None:
        kind = rng.choice(allowed)
    elif kind not in allowed:
        raise ValueError(f"question kind {kind!r} is impossible for this scene")
    return _ASKERS[kind](scene, rng)


def _on(*objects: SceneObject) -> tuple[Target, ...]:
    return tuple((o.position, o.center) for o in objects)


def _unique_shapes(scene: Scene) -> list[SceneObject]:
    counts = Counter(o.shape for o in scene.objects)
    return [o for o in scene.objects if counts[o.shape] == 1]


def _size_pairs(scene: Scene) -> list[tuple[SceneObject, SceneObject]]:
    names = Counter(o.name for o in scene.objects)
    objs = [o for o in scene.objects if names[o.name] == 1]  # an option must name exactly one object
    return [(a, b) for i, a in enumerate(objs) for b in objs[i + 1:] if a.size != b.size]


def _possible(scene: Scene, kind: str) -> bool:
    if kind in ("color", "color_choice"):
        return bool(_unique_shapes(scene))
    if kind == "larger":
        return bool(_size_pairs(scene))
    return True


def _count(scene: Scene, rng: random.Random) -> Question:
    n = str(len(scene.objects))
    return Question("count", "How many shapes are there?", None, n, n, _on(rng.choice(scene.objects)))


def _color(scene: Scene, rng: random.Random) -> Question:
    obj = rng.choice(_unique_shapes(scene))
    return Question("color", f"What color is the {obj.shape}?", None, obj.color, obj.color, _on(obj))


def _shape_at(scene: Scene, rng: random.Random) -> Question:
    position = rng.choice(POSITIONS)
    obj = scene.at(position)
    answer = obj.shape if obj else "none"
    target = ((position, obj.center),) if obj else ((position, cell_point(position, rng)),)
    return Question("shape_at", f"What shape is at the {position}?", None, answer, answer, target)


def _larger(scene: Scene, rng: random.Random) -> Question:
    a, b = rng.choice(_size_pairs(scene))
    pair = [a, b]
    rng.shuffle(pair)
    big = max(pair, key=lambda o: o.size == "large")
    letter = LETTERS[pair.index(big)]
    return Question("larger", "Which shape is larger?", [o.name for o in pair], letter, big.name,
                    _on(*pair))


def _exists(scene: Scene, rng: random.Random) -> Question:
    # The degradation hits a random object either way: the named one for "yes", another for "no".
    obj = rng.choice(scene.objects)
    if rng.random() < 0.5:
        return Question("exists", f"Is there a {obj.name}?", None, "yes", "yes", _on(obj))
    present = {o.name for o in scene.objects}
    absent = [f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" not in present]
    return Question("exists", f"Is there a {rng.choice(absent)}?", None, "no", "no", _on(obj))


def _color_choice(scene: Scene, rng: random.Random) -> Question:
    obj = rng.choice(_unique_shapes(scene))
    options = [obj.color, *rng.sample([c for c in COLORS if c != obj.color], 2)]
    rng.shuffle(options)
    return Question("color_choice", f"Which color does the {obj.shape} have?", options,
                    LETTERS[options.index(obj.color)], obj.color, _on(obj))


_ASKERS = {"count": _count, "color": _color, "shape_at": _shape_at, "larger": _larger, "exists": _exists,
           "color_choice": _color_choice}
