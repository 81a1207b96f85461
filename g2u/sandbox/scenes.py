"""Procedural scenes: up to four coloured shapes on a 2×2 grid, drawn with PIL (no text in the image)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from PIL import Image, ImageDraw

SCENE_SIZE = 112
"""Side in pixels: 8×8 Qwen-VL patches of 14 px, 4×4 merged vision tokens: cheap for the tiny answerer."""
BACKGROUND = (235, 235, 235)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 11, "large": 22}
"""Half-extent of a shape in pixels."""
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
CELL = SCENE_SIZE // 2
MAX_OBJECTS = len(POSITIONS)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    position: str
    center: tuple[int, int]

    @property
    def name(self) -> str:
        """How a question or option refers to the object: "red circle"."""
        return f"{self.color} {self.shape}"

    def box(self) -> tuple[int, int, int, int]:
        r = SIZES[self.size]
        x, y = self.center
        return (x - r, y - r, x + r, y + r)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]

    def to_dict(self) -> dict:
        return {"objects": [asdict(o) for o in self.objects]}

    def at(self, position: str) -> SceneObject | None:
        return next((o for o in self.objects if o.position == position), None)


def draw_scene(rng: random.Random) -> Scene:
    """1–4 objects, each in its own grid cell, with a small jitter inside the cell."""
    count = rng.randint(1, MAX_OBJECTS)
    objects = []
    for position in rng.sample(POSITIONS, count):
        size = rng.choice(tuple(SIZES))
        slack = CELL // 2 - SIZES[size] - 2
        col = POSITIONS.index(position) % 2
        row = POSITIONS.index(position) // 2
        center = (col * CELL + CELL // 2 + rng.randint(-slack, slack),
                  row * CELL + CELL // 2 + rng.randint(-slack, slack))
        objects.append(SceneObject(rng.choice(SHAPES), rng.choice(tuple(COLORS)), size, position, center))
    objects.sort(key=lambda o: POSITIONS.index(o.position))
    return Scene(tuple(objects))


def render(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (SCENE_SIZE, SCENE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fill = COLORS[obj.color]
        x0, y0, x1, y1 = obj.box()
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return image
