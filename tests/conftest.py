"""Shared fixtures: the demo checkpoints are built once per test session, offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    from g2u.demo import build_demo_checkpoints

    root = tmp_path_factory.mktemp("demo")
    build_demo_checkpoints(root, seed=0)
    return root


@pytest.fixture
def rgb_image() -> Image.Image:
    """A small deterministic test picture with structure (gradients + a square)."""
    img = Image.new("RGB", (96, 64))
    px = img.load()
    for x in range(96):
        for y in range(64):
            px[x, y] = (x * 2 % 256, y * 4 % 256, 128 if 30 < x < 60 and 20 < y < 44 else 30)
    return img
