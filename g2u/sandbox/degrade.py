"""Controlled degradations with a severity (1 mild … 3 severe) and the edit family expected to repair them.

Enhancement (P_E) degradations keep every object in the frame but make it hard to see; extension (P_X)
degradations take part of the scene out of view (a crop, an occluder) where the question looks.

No answer signal in the degradation itself: where an occluder or a crop lands and how large it is must
not tell the answer. So an occluder is a block of one size per severity (never the subject's size),
centred where the question looks — on an object of the scene when the answer names none (an "exists"
question answered "no" hides a random object, exactly as a "yes" hides the named one), on both options of
a "larger" question — and a crop cuts a side next to a cell drawn among those the question looks at.
``degrade`` returns the parameters it used, so a test can check that they alone do not predict answers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from g2u.sandbox.scenes import CELL, POSITIONS, SCENE_SIZE

SEVERITIES = (1, 2, 3)
OCCLUDER = (110, 110, 110)
OCCLUDER_HALF = (14, 20, 27)
"""Half-side of the occluding block per severity: hides a small shape whole at every severity, a large one
in part (1, 2) or whole (3). The same for every object, so its size says nothing about the object's."""
CROP_SHARE = (0.3, 0.42, 0.5)

Target = tuple[str, tuple[int, int]]
"""Where a degradation looks: a grid position and the point to centre on (an object's centre)."""


@dataclass(frozen=True)
class Degradation:
    name: str
    family: str
    apply: Callable[[Image.Image, int, Sequence[Target], random.Random], tuple[Image.Image, dict]]


def _blur(img, severity, targets, rng):
    return img.filter(ImageFilter.GaussianBlur(radius=(3, 6, 10)[severity - 1])), {}


def _noise(img, severity, targets, rng):
    sigma = (60, 100, 150)[severity - 1]
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, sigma, (img.height, img.width, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)), {}


def _under_exposure(img, severity, targets, rng):
    return ImageEnhance.Brightness(img).enhance((0.25, 0.12, 0.05)[severity - 1]), {}


def _low_contrast(img, severity, targets, rng):
    return ImageEnhance.Contrast(img).enhance((0.25, 0.12, 0.05)[severity - 1]), {}


def _downscale(img, severity, targets, rng):
    side = SCENE_SIZE // (6, 10, 16)[severity - 1]
    return img.resize((side, side), Image.BILINEAR).resize(img.size, Image.BILINEAR), {}


def _crop(img, severity, targets, rng):
    """Cut a band off a side next to one of the target cells; the result is smaller than the scene, as a
    real crop is."""
    cut = int(SCENE_SIZE * CROP_SHARE[severity - 1])
    position, _ = rng.choice(list(targets))
    index = POSITIONS.index(position)
    side = rng.choice(["left" if index % 2 == 0 else "right", "top" if index < 2 else "bottom"])
    w, h = img.size
    box = {"left": (cut, 0, w, h), "right": (0, 0, w - cut, h), "top": (0, cut, w, h),
           "bottom": (0, 0, w, h - cut)}[side]
    return img.crop(box), {"side": side, "cut": cut}


def _occlude(img, severity, targets, rng):
    """A grey block of the severity's size over every target point."""
    half = OCCLUDER_HALF[severity - 1]
    out = img.copy()
    draw = ImageDraw.Draw(out)
    for _, (x, y) in targets:
        draw.rectangle((x - half, y - half, x + half, y + half), fill=OCCLUDER)
    return out, {"blocks": [[x, y] for _, (x, y) in targets], "half": half}


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


def cell_point(position: str, rng: random.Random) -> tuple[int, int]:
    """A point in an empty cell drawn as an object's centre would be (used when a question looks at a cell
    with nothing in it, so the block lands where a shape could have been)."""
    from g2u.sandbox.scenes import SIZES

    slack = CELL // 2 - SIZES[rng.choice(tuple(SIZES))] - 2
    index = POSITIONS.index(position)
    return ((index % 2) * CELL + CELL // 2 + rng.randint(-slack, slack),
            (index // 2) * CELL + CELL // 2 + rng.randint(-slack, slack))


def degrade(img: Image.Image, name: str, severity: int, targets: Sequence[Target],
            rng: random.Random) -> tuple[Image.Image, dict]:
    """The degraded image and the parameters used ({"name", "severity", ...the kind's own})."""
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if not targets:
        raise ValueError("a degradation needs at least one target (position, point)")
    image, params = DEGRADATIONS[name].apply(img, severity, targets, rng)
    return image, {"name": name, "severity": severity, **params}
