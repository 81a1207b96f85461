"""One sandbox sample drawn from a seed: scene, clean image, question, degradation and degraded image."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from g2u.sandbox.degrade import DEGRADATIONS, SEVERITIES, degrade
from g2u.sandbox.questions import Question, ask
from g2u.sandbox.scenes import Scene, draw_scene, render


@dataclass
class SandboxSample:
    index: int
    scene: Scene
    clean: Image.Image
    question: Question
    degradation: str
    severity: int
    degraded: Image.Image

    @property
    def expected_family(self) -> str:
        return DEGRADATIONS[self.degradation].family


def draw_sample(seed: int, index: int) -> SandboxSample:
    """Sample ``index`` of the sandbox with ``seed``: the same pair always gives the same sample, and
    degradation types and severities cycle so every (type, severity) cell fills evenly."""
    rng = random.Random(f"g2u-sandbox:{seed}:{index}")
    scene = draw_scene(rng)
    clean = render(scene)
    question = ask(scene, rng)
    names = list(DEGRADATIONS)
    name = names[index % len(names)]
    severity = SEVERITIES[(index // len(names)) % len(SEVERITIES)]
    return SandboxSample(index, scene, clean, question, name, severity,
                         degrade(clean, name, severity, question.subject, rng))
