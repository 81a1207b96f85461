"""Working sizes: each model's own resize rule, made explicit, for any input shape.

Stage I runs at a *working size* and stage II reads images at a *stage-II size*. Both are computed here,
before any model runs, and reported back to the user: the size, the rule that produced it, and what was
done to the pixels (a plain resize, or a resize plus padding where a limit forces it). Nothing in a
model is left to resize silently.

This module is the generic geometry (limits, clamping, placement, plans); each model's own rule lives with
its backend, read from the reference's code (not copied):

* BAGEL — its inference image transform (``g2u.backends.bagel.layout.bagel_rule``).
* Qwen-Image-Edit — diffusers' ``calculate_dimensions`` (``g2u.backends.qwen_image_edit.qwen_image_edit_rule``).
* Qwen2/2.5-VL stage II — transformers' ``smart_resize`` (``g2u.backends.qwen_vl.qwen_vl_stage2``).

Every valid image gets a size: the rule's size is clamped into the backend's limits keeping the aspect as
far as they allow; where the aspect cannot be kept (a 8000×20 strip on a grid whose sides are at least 16
pixels and at most 1024) the content is resized to fit and padded to the working size, centred, and the
padding is reported. We never crop: every input pixel reaches the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from g2u.errors import InputError

PAD_FILL = (0, 0, 0)
"""Padding colour: black, the zero of the models' [-1, 1] input normalisation is grey, but black keeps
the padded band visibly separate from the content in the thought."""


@dataclass(frozen=True)
class SizeLimits:
    """What a model can take: sides multiples of ``multiple`` within [``min_side``, ``max_side``],
    at most ``max_pixels`` pixels, and (stage II on Qwen-VL) an aspect ratio below ``max_aspect``."""

    multiple: int
    max_side: int
    min_side: int | None = None
    max_pixels: int | None = None
    max_aspect: float | None = None

    @property
    def smallest(self) -> int:
        return max(self.multiple, self.min_side or self.multiple)


@dataclass(frozen=True)
class Placement:
    """How an image is put into a target size: resized to ``resize`` and, when that is smaller than
    ``size``, padded (``pad`` = left, top, right, bottom) to exactly ``size``."""

    size: tuple[int, int]
    resize: tuple[int, int]
    pad: tuple[int, int, int, int] | None = None

    def apply(self, image: Image.Image, resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
        """The image at ``size``; ``resample`` is the model's own filter (BAGEL's transform: bicubic;
        Qwen-Image-Edit's ``VaeImageProcessor``: lanczos)."""
        img = image.convert("RGB")
        if img.size != self.resize:
            img = img.resize(self.resize, resample)
        if self.pad is None:
            return img
        canvas = Image.new("RGB", self.size, PAD_FILL)
        canvas.paste(img, (self.pad[0], self.pad[1]))
        return canvas

    def unpad(self, image: Image.Image) -> Image.Image:
        """The content region of an image made at ``size`` (the padding cut away again)."""
        if self.pad is None:
            return image
        left, top, _, _ = self.pad
        return image.crop((left, top, left + self.resize[0], top + self.resize[1]))


@dataclass(frozen=True)
class SizePlan:
    """A working size and how it was reached, reported in ``edit.size`` / ``edit.sizing``."""

    input: tuple[int, int]
    rule: str
    placement: Placement

    @property
    def size(self) -> tuple[int, int]:
        return self.placement.size

    def record(self) -> dict:
        """JSON for the result: ``{"rule", "input", "size", "resize", "pad"}`` (pad ``None`` if none)."""
        p = self.placement
        return {"rule": self.rule, "input": list(self.input), "size": list(p.size), "resize": list(p.resize),
                "pad": list(p.pad) if p.pad else None}


def _check_input(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise InputError("image", f"has no pixels ({width}x{height})")


def aspect_tolerance(size: tuple[int, int], multiple: int) -> float:
    """The aspect change that rounding the shorter side to the stride can cause at ``size``: stretching
    within it is what the references' own rounding does; beyond it the content is padded instead."""
    return 1.0 + multiple / min(size)


def place(image_size: tuple[int, int], size: tuple[int, int], multiple: int) -> Placement:
    """Put an image of ``image_size`` into ``size``: a plain resize when the aspects agree up to the
    stride's rounding, else a resize that keeps the aspect plus centred padding."""
    w, h = image_size
    _check_input(w, h)
    tw, th = size
    distortion = (tw / th) / (w / h)
    if max(distortion, 1 / distortion) <= aspect_tolerance(size, multiple):
        return Placement(size=(tw, th), resize=(tw, th))
    scale = min(tw / w, th / h)
    rw, rh = min(tw, max(1, round(w * scale))), min(th, max(1, round(h * scale)))
    left, top = (tw - rw) // 2, (th - rh) // 2
    return Placement(size=(tw, th), resize=(rw, rh), pad=(left, top, tw - rw - left, th - rh - top))


def clamp(width: float, height: float, limits: SizeLimits) -> tuple[int, int]:
    """A size as close to ``width``×``height`` as the limits allow, keeping the aspect while they do:
    scale down to ``max_side``/``max_pixels``, up to the smallest side, then round each side to the
    stride within its bounds (a side that cannot hold the aspect is pinned to a bound)."""
    m, lo, hi = limits.multiple, limits.smallest, limits.max_side
    cap = hi / max(width, height)
    if limits.max_pixels is not None:
        cap = min(cap, math.sqrt(limits.max_pixels / (width * height)))
    scale = min(1.0, cap)
    if min(width, height) * scale < lo:  # too small a short side: lift it, as far as the caps allow
        scale = min(lo / min(width, height), cap)
    w, h = width * scale, height * scale

    def side(x: float) -> int:
        return int(min(hi // m * m, max(lo + (-lo) % m, round(x / m) * m)))

    w_i, h_i = side(w), side(h)
    while limits.max_pixels is not None and w_i * h_i > limits.max_pixels and max(w_i, h_i) > lo:
        if w_i >= h_i:
            w_i -= m
        else:
            h_i -= m
    while limits.max_aspect is not None and max(w_i, h_i) >= limits.max_aspect * min(w_i, h_i):
        if w_i >= h_i:  # shorten the long side: the pixel cap stays met; place() pads the content
            w_i -= m
        else:
            h_i -= m
    return w_i, h_i


def plan(image_size: tuple[int, int], rule: str, target: tuple[float, float], limits: SizeLimits) -> SizePlan:
    """The plan for an image whose model rule asks for ``target``: clamped into ``limits``, then placed."""
    w, h = image_size
    _check_input(w, h)
    size = clamp(*target, limits)
    return SizePlan(input=(w, h), rule=rule, placement=place((w, h), size, limits.multiple))


def area_target(image_size: tuple[int, int], area: int) -> tuple[float, float]:
    """The input's aspect at ``area`` pixels (the ``area`` option, e.g. the fast 512² setting)."""
    w, h = image_size
    ratio = w / h
    tw = math.sqrt(area * ratio)
    return tw, tw / ratio


def check_area(area: int, limits: SizeLimits) -> int:
    if not isinstance(area, int) or area < limits.smallest**2:
        raise InputError("edit_area", f"must be an integer of at least {limits.smallest ** 2} pixels, got {area!r}")
    return area


def check_explicit(size: tuple[int, int], limits: SizeLimits, field: str = "edit_size") -> tuple[int, int]:
    """An ``edit_size`` the user sent: honoured exactly or refused (never changed)."""
    w, h = size
    m, lo, hi = limits.multiple, limits.smallest, limits.max_side
    for s in (w, h):
        if not lo <= s <= hi:
            raise InputError(field, f"each side must be in [{lo}, {hi}] for this backend, got {w}x{h}")
        if s % m:
            raise InputError(field, f"each side must be a multiple of {m} for this backend, got {w}x{h}")
    if limits.max_pixels is not None and w * h > limits.max_pixels:
        raise InputError(field, f"{w}x{h} has more than this backend's {limits.max_pixels} pixels")
    return w, h


def edit_plan(image_size: tuple[int, int], limits: SizeLimits, default_rule: tuple[str, Callable],
              size: tuple[int, int] | None = None, area: int | None = None) -> SizePlan:
    """The stage-I plan: an explicit ``size`` (validated, aspect handled by ``place``), else ``area``
    (the input's aspect at that many pixels), else the model's own rule ``default_rule = (name, fn)``
    where ``fn(width, height) -> (width, height)``."""
    w, h = image_size
    _check_input(w, h)
    if size is not None:
        size = check_explicit(tuple(size), limits)
        return SizePlan(input=(w, h), rule="explicit", placement=place((w, h), size, limits.multiple))
    if area is not None:
        area = check_area(area, limits)
        return plan((w, h), f"area:{area}", area_target((w, h), area), limits)
    name, fn = default_rule
    return plan((w, h), name, fn(w, h), limits)


# ---------------------------------------------------------------------------------------- rule helpers
def demo_scale(default_edit_area: int, reference_side: int = 1024) -> float:
    """How much a demo checkpoint shrinks a real rule: its marker's working area against the real ~1024²."""
    return math.sqrt(default_edit_area) / reference_side


Rule = Callable[[int, int], tuple[float, float]]
"""A model's size rule: input (width, height) → the size it would run at."""


def scaled_rule(rule: Rule, scale: float) -> Rule:
    """A real rule with its output scaled (demo checkpoints: the real rule's size on their tiny grid;
    ``clamp`` then rounds to the demo's stride)."""
    if scale == 1.0:
        return rule

    def scaled(width: int, height: int) -> tuple[float, float]:
        w, h = rule(width, height)
        return w * scale, h * scale

    return scaled


# ---------------------------------------------------------------------------------------- stage II
STAGE2_SIZINGS = ("per_image", "shared")
"""How a request's stage-II images are sized: ``per_image`` (each by the rule from its own size, as stock
Qwen2.5-VL processing, VLMEvalKit, lmms-eval and BAGEL's inferencer do; the default) or ``shared`` (every
image at the size the rule gives the first one, I)."""


@dataclass(frozen=True)
class Stage2Sizing:
    """Stage-II resolution policy of a backend: each image of one request sized by ``rule`` under
    ``limits`` from its own size (``per_image``) or from the request's first image (``shared``)."""

    rule_name: str
    rule: Callable[[int, int], tuple[float, float]]
    limits: SizeLimits
    pre: Callable[[tuple[int, int]], SizePlan] | None = None
    """A resize the model applies before its stage-II one (BAGEL: its generation-side transform first),
    as the plan for an image size; reported under ``pre``."""

    def plan(self, image_size: tuple[int, int]) -> SizePlan:
        return plan(image_size, self.rule_name, self.rule(*image_size), self.limits)

    def prepare(self, images: list[Image.Image], sizing: str = "per_image") -> tuple[list[Image.Image], dict | None]:
        """The images at their stage-II sizes (``sizing``: ``STAGE2_SIZINGS``); returns them and the record
        of what was done (``size``: the first image's; each image's own under ``images``)."""
        if sizing not in STAGE2_SIZINGS:
            raise InputError("stage2_sizing", f"must be one of {', '.join(STAGE2_SIZINGS)}, got {sizing!r}")
        if not images:
            return [], None
        first = self.plan(images[0].size)
        out, placements = [], []
        for img in images:
            record: dict = {"input": list(img.size)}
            target = first.size if sizing == "shared" else self.plan(img.size).size
            if self.pre is not None:
                pre = self.pre(img.size)
                img = pre.placement.apply(img)
                record["pre"] = pre.record()
            p = place(img.size, target, self.limits.multiple)
            out.append(p.apply(img))
            placements.append({**record, "size": list(target), "resize": list(p.resize),
                               "pad": list(p.pad) if p.pad else None})
        return out, {"rule": self.rule_name, "sizing": sizing, "size": list(first.size), "images": placements}


def stage2_cap(params) -> int | None:
    """A per-call stage-II pixel cap, where the answer parameters carry one (``stage2_max_pixels``)."""
    cap = getattr(params, "stage2_max_pixels", None)
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise InputError("stage2_max_pixels", f"must be a positive integer, got {cap!r}")
    return cap


def stage2_sizing_of(params) -> str:
    """A call's stage-II sizing (``STAGE2_SIZINGS``), where the answer parameters carry one."""
    return getattr(params, "stage2_sizing", None) or "per_image"


def prepare_contents(contents, stage2: Stage2Sizing | None, params=None) -> tuple[list[list], list[dict | None]]:
    """Every request's images (PIL parts) at their stage-II sizes (``params.stage2_sizing``: each its own,
    or all at the first image's); text parts untouched. Returns the new contents and one record per
    request (``None`` for a request without images)."""
    sizing = stage2_sizing_of(params)
    out, records = [], []
    for parts in contents:
        parts = list(parts)
        idx = [i for i, p in enumerate(parts) if isinstance(p, Image.Image)]
        if stage2 is None or not idx:
            out.append(parts)
            records.append(None)
            continue
        images, record = stage2.prepare([parts[i] for i in idx], sizing)
        for i, img in zip(idx, images):
            parts[i] = img
        out.append(parts)
        records.append(record)
    return out, records
