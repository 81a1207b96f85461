"""The backend protocol: one batched call per G→U stage, plus how a thought enters stage II.

A backend owns its models and what it knows about them: its working-size rule and limits, its stage-II
sizing, its components (what memory fit and the fast path act on), and how to (I) edit images under
prompts and (II) answer from interleaved image/text content. All G→U logic (modes, prompt choice,
ordering, measures) lives in ``g2u.pipeline``; ``BackendBase`` holds the chores every backend shares
(length checks, grouping items that can share a batched call, per-item seeded generators), so a new
model family writes only ``validate_edit``, ``edit_group`` and ``answer``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image
from pydantic import BaseModel

from g2u import progress
from g2u.errors import InputError
from g2u.modes import MODES, Mode, modes_for
from g2u.sizing import SizeLimits, SizePlan, area_target, edit_plan
from g2u.types import Answer, AnswerParams, EditOutput, EditParams

DEMO_MARKER = "g2u_demo.json"
"""A demo checkpoint's marker file: ``{"demo": true, "seed": .., "default_edit_area": ..}``."""


def read_demo_marker(folder: str | Path) -> dict | None:
    """The demo marker of a checkpoint folder (None: a real checkpoint)."""
    path = Path(folder) / DEMO_MARKER
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass(frozen=True)
class BackendInfo:
    """Identity reported in every result (``model`` field)."""

    backend: str
    checkpoint: str
    demo: bool
    device: str
    dtype: str


@dataclass(frozen=True)
class Component:
    """One model a backend holds, registered by name (as diffusers' ``register_modules``), with what may
    be done to it: memory fit quantizes the Linear-heavy ones, offloads or moves the others; the fast path
    finds the answer model and the denoiser by ``role``."""

    module: Any
    quantize: bool = False
    """Linear-heavy: int8/fp8/nf4 weight-only quantization targets it."""
    offload: str | None = None
    """``pipeline`` (diffusers' ``enable_*_offload``), ``module`` (accelerate hooks), None: cannot."""
    move: bool = True
    """Moved by ``.to(device)`` when the backend is placed on a device (parts of a moved pipeline: False)."""
    role: str | None = None
    """``answer_model`` (stage II's ``generate`` model) or ``denoiser`` (stage I's transformer/UNet)."""


@runtime_checkable
class Backend(Protocol):
    info: BackendInfo
    size_multiple: int
    """Edit sizes are rounded to this (VAE stride × latent patch size)."""
    default_edit_area: int
    """Pixel area of the automatic working size (512² for real checkpoints, small for demo ones)."""
    options_model: type[BaseModel] | None
    """The backend's own request fields (``g2u.schema.BACKEND_OPTIONS``), None when it has none."""
    components: dict[str, Component]
    """The models it holds, by name (``g2u.memory`` and ``g2u.fastpath`` act on them)."""

    def plan_edit_size(self, image_size: tuple[int, int], size: tuple[int, int] | None = None,
                       area: int | None = None) -> Any:
        """The working size of an input (``g2u.sizing.SizePlan``): ``size`` if given (checked against the
        backend's limits), else ``area``, else the model's own rule; any aspect fits (clamped, padded
        only where a limit forces it)."""
        ...

    def stage2_sizing(self, cap: int | None = None) -> Any:
        """How stage II sizes a request's images under a pixel cap (None: the processor's own)."""
        ...

    @property
    def modes(self) -> tuple[str, ...]: ...

    def validate_edit(self, params: EditParams) -> None:
        """Raise InputError for edit parameters this backend cannot honour (``params.size`` resolved).
        Called per request before any batched call."""
        ...

    def edit(self, images: Sequence[Image.Image], prompts: Sequence[str],
             params: Sequence[EditParams]) -> list[EditOutput]:
        """Stage I: one thought per input (RGB, at ``params[i].size``) with the plan, if any."""
        ...

    def thought_part(self, image: Image.Image, mode: Mode) -> Any:
        """The answer-prompt part carrying a thought in ``mode`` (an image, or e.g. BAGEL's VAE latents)."""
        ...

    def answer(self, contents: Sequence[Sequence[Any]], params: AnswerParams) -> list[Answer]:
        """Stage II: one ``Answer`` per request from its interleaved images and text parts: the text, the
        token probabilities when ``params.return_scores``, and how its images were sized (``stage2``)."""
        ...

    def answer_grouped(self, contents: Sequence[Sequence[Any]], params: Sequence[AnswerParams]) -> list[Answer]:
        """Stage II over items with their own parameters: one ``answer`` call per distinct group key."""
        ...

    def think_answer(self, contents: Sequence[Sequence[Any]], params: AnswerParams,
                     max_think_tokens: int) -> list[tuple[str, Answer]] | None:
        """A backend's own textual reasoning (BAGEL's think prompt): (reasoning, answer) per request, or
        None where the backend has no format of its own (the loop then writes the reasoning in a pass)."""
        ...


@runtime_checkable
class EditStepper(Protocol):
    """Stage I one denoising step at a time (``g2u.scheduler``): edit jobs join and leave a running denoise
    at step boundaries. ``begin`` makes one item's state (its own prompt encoding, noise, timesteps and
    CFG rows), ``step`` advances states that share a ``key`` in one batched forward, ``finish`` decodes
    one. An item's thought must not depend on which others shared its steps."""

    def key(self, params: EditParams) -> tuple:
        """States whose keys match may share a step (working size, and whatever else one forward needs)."""
        ...

    def begin(self, image: Image.Image, prompt: str, params: EditParams) -> Any: ...

    def step(self, states: Sequence[Any]) -> None: ...

    def rows(self, state: Any) -> int:
        """Rows one step of ``state`` adds to the batched forward (its CFG branches)."""
        ...

    def done(self, state: Any) -> bool: ...

    def finish(self, state: Any) -> EditOutput: ...


def with_stage2(answers: Sequence[Answer], sizing: Sequence[dict | None]) -> list[Answer]:
    """Answers carrying how stage II sized each request's images (``g2u.sizing.prepare_contents``)."""
    for ans, record in zip(answers, sizing):
        ans.stage2 = record
    return list(answers)


class BackendBase:
    """Shared chores of the backends. Subclasses set ``info``, ``size_multiple``, ``default_edit_area``,
    their size rule and limits, register their components, and implement ``validate_edit``,
    ``edit_group`` and ``answer``."""

    info: BackendInfo
    size_multiple: int
    default_edit_area: int
    options_model: type[BaseModel] | None = None
    size_limits: SizeLimits | None = None
    """Stage-I limits (None: the stride and a 2048-pixel side)."""
    default_size_rule: tuple[str, Callable[[int, int], tuple[float, float]]] | None = None
    """The model's own working-size rule, named (None: the input's aspect at ``default_edit_area``)."""
    no_offload: str | None = None
    """Why the backend's models cannot be offloaded (None: they can); read before loading (``g2u.memory``)."""

    @property
    def components(self) -> dict[str, Component]:
        return self.__dict__.setdefault("_components", {})

    def register(self, name: str, module: Any, **how: Any) -> None:
        """Register a model the backend holds (``Component`` says what may be done to it)."""
        self.components[name] = Component(module, **how)

    def component(self, role: str) -> Any:
        """The module registered with ``role`` (None: the backend has none)."""
        return next((c.module for c in self.components.values() if c.role == role), None)

    @property
    def modes(self) -> tuple[str, ...]:
        return modes_for(self.info.backend)

    def edit(self, images: Sequence[Image.Image], prompts: Sequence[str],
             params: Sequence[EditParams]) -> list[EditOutput]:
        """Stage I over a batch: items sharing ``EditParams.batch_key()`` run as one ``edit_group`` call;
        each item keeps its own seed, so its thought does not depend on its batch-mates."""
        if not len(images) == len(prompts) == len(params):
            raise InputError("images", f"got {len(images)} images, {len(prompts)} prompts and "
                                       f"{len(params)} parameter sets")
        for p in params:
            self.validate_edit(p)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(p.batch_key(), []).append(i)
        out: list[EditOutput | None] = [None] * len(images)
        for idx in groups.values():
            with progress.subset(idx):  # a streamed request's steps come from its own group's loop
                results = self.edit_group([images[i] for i in idx], [prompts[i] for i in idx],
                                          [params[i] for i in idx])
            for i, res in zip(idx, results):
                out[i] = res if isinstance(res, EditOutput) else EditOutput(res)
        return out  # type: ignore[return-value]

    def edit_group(self, images: list[Image.Image], prompts: list[str],
                   params: list[EditParams]) -> list[EditOutput | Image.Image]:
        """One batched edit of items that share size, steps, CFG and options (``params[0]`` holds them)."""
        raise NotImplementedError

    def stepper(self, exact: bool = True) -> EditStepper | None:
        """Stage I step by step (``EditStepper``), or None where this backend edits whole items only
        (``g2u.scheduler`` then runs each edit as one unit between other items' steps). ``exact``: a
        thought bit-identical to the one made alone (False: packed further, within fp32 rounding)."""
        return None

    def plan_edit_size(self, image_size: tuple[int, int], size: tuple[int, int] | None = None,
                       area: int | None = None) -> SizePlan:
        """The working size of an input (``g2u.sizing.SizePlan``): ``size`` if given, else ``area``, else the
        model's own rule (``default_size_rule``), within ``size_limits``."""
        limits = self.size_limits or SizeLimits(multiple=self.size_multiple, max_side=2048)
        area_px = self.default_edit_area
        rule = self.default_size_rule or (f"area:{area_px}", lambda w, h: area_target((w, h), area_px))
        return edit_plan(image_size, limits, rule, size=size, area=area)

    def answer_grouped(self, contents: Sequence[Sequence[Any]], params: Sequence[AnswerParams]) -> list[Answer]:
        """Stage II over items with their own parameters: one ``answer`` call per distinct
        ``AnswerParams.group_key`` (requests almost always share one), answers back in item order."""
        out: list[Answer | None] = [None] * len(contents)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(p.group_key(), []).append(i)
        for idx in groups.values():
            with progress.subset(idx):  # the group's decode rows are these items (``g2u.progress``)
                answers = self.answer([contents[i] for i in idx], params[idx[0]])
            for i, ans in zip(idx, answers):
                out[i] = ans
        return out  # type: ignore[return-value]

    def think_answer(self, contents: Sequence[Sequence[Any]], params: AnswerParams,
                     max_think_tokens: int) -> list[tuple[str, Answer]] | None:
        """No reasoning format of its own (BAGEL overrides this): the loop writes the reasoning in a pass."""
        return None

    def thought_part(self, image: Image.Image, mode: Mode) -> Any:
        if mode.thought_as == "image":
            return image
        raise InputError("mode", f"{mode.name} is not offered by the {self.info.backend} backend")

    @staticmethod
    def generators(params: Sequence[EditParams], device: str = "cpu") -> list[torch.Generator]:
        """One generator per item, seeded with its own seed (CPU by default: device-independent noise)."""
        return [torch.Generator(device=device).manual_seed(int(p.seed)) for p in params]


__all__ = ["MODES", "Backend", "BackendBase", "BackendInfo", "Component", "DEMO_MARKER", "EditStepper",
           "read_demo_marker",
           "with_stage2"]
