"""Controlled degradations with a severity (1 mild … 3 severe) and the edit family expected to repair them.

Enhancement (P_E) degradations keep every object in the frame but make it hard to see; extension (P_X)
degradations take the question's subject out of view (a crop that cuts it, an occluder that hides it).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from g2u.sandbox.scenes import CELL, POSITIONS, SCENE_SIZE, SceneObject

SEVERITIES = (1, 2, 3)
OCCLUDER = (110, 110, 110)


@dataclass(frozen=True)
class Degradation:
    name: str
    family: str
    apply: Callable[[Image.Image, int, SceneObject | None, random.Random], Image.Image]


def _blur(img: Image.Image, severity: int, subject, rng) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=(3, 6, 10)[severity - 1]))


def _noise(img: Image.Image, severity: int, subject, rng) -> Image.Image:
    sigma = (60, 100, 150)[severity - 1]
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, sigma, (img.height, img.width, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def _under_exposure(img: Image.Image, severity: int, subject, rng) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance((0.25, 0.12, 0.05)[severity - 1])


def _low_contrast(img: Image.Image, severity: int, subject, rng) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance((0.25, 0.12, 0.05)[severity - 1])


def _downscale(img: Image.Image, severity: int, subject, rng) -> Image.Image:
    side = SCENE_SIZE // (6, 10, 16)[severity - 1]
    return img.resize((side, side), Image.BILINEAR).resize(img.size, Image.BILINEAR)


def _crop(img: Image.Image, severity: int, subject: SceneObject | None, rng: random.Random) -> Image.Image:
    """Cut a band off the side where the subject sits (a random side when there is none); the result is
    smaller than the scene, as a real crop is."""
    cut = int(SCENE_SIZE * (0.3, 0.42, 0.5)[severity - 1])
    if subject is not None:
        index = POSITIONS.index(subject.position)
        side = rng.choice(["left" if index % 2 == 0 else "right", "top" if index < 2 else "bottom"])
    else:
        side = rng.choice(["left", "right", "top", "bottom"])
    w, h = img.size
    box = {"left": (cut, 0, w, h), "right": (0, 0, w - cut, h), "top": (0, cut, w, h),
           "bottom": (0, 0, w, h - cut)}[side]
    return img.crop(box)


def _occlude(img: Image.Image, severity: int, subject: SceneObject | None, rng: random.Random) -> Image.Image:
    """A grey block over the subject (a random cell when there is none), covering more of it with severity."""
    if subject is not None:
        x0, y0, x1, y1 = subject.box()
    else:
        index = rng.randrange(len(POSITIONS))
        cx, cy = (index % 2) * CELL + CELL // 2, (index // 2) * CELL + CELL // 2
        x0, y0, x1, y1 = cx - 16, cy - 16, cx + 16, cy + 16
    grow = (-0.2, 0.15, 0.4)[severity - 1]
    dx, dy = (x1 - x0) * grow, (y1 - y0) * grow
    out = img.copy()
    ImageDraw.Draw(out).rectangle((x0 - dx, y0 - dy, x1 + dx, y1 + dy), fill=OCCLUDER)
    return out


DEGRADATIONS: dict[str, Degradation] = {
    d.name: d for d in (
        Degradation("blur", "enhancement", _blur),
        Degradation("noise", "enhancement", _noise),
        Degradation("under_exposure", "enhancement", _under_exposure),
        Degradation("low_contrast", "enhancement", _low_contrast),
        Degradation("downscale", "enhancement", _downscale),
        Degradation("crop", "extension", _crop),
        Degradation("occluder", "extension", _occlude),
    )
}


def degrade(img: Image.Image, name: str, severity: int, subject: SceneObject | None,
            rng: random.Random) -> Image.Image:
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return DEGRADATIONS[name].apply(img, severity, subject, rng)
