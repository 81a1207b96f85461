"""Shared fixtures: the demo checkpoints are built once per test session, offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest-xdist): one thread each, for the worker and the
    # servers and pipelines it starts, so two workers do not oversubscribe the cores between them.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

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


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_stays_in_its_test():
    """A test's ``mlflow.set_tracking_uri`` (a server it stops afterwards) must not leak into the next test
    on the same worker, which may only set ``MLFLOW_TRACKING_URI``: mlflow has no public "unset", so the
    module's setting is put back as it was."""
    import sys

    def current():
        utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
        return getattr(utils, "_tracking_uri", None)

    before = current()
    yield
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if utils is not None and current() != before:
        utils._tracking_uri = before


@pytest.fixture
def rgb_image() -> Image.Image:
    """A small deterministic test picture with structure (gradients + a square)."""
    img = Image.new("RGB", (96, 64))
    px = img.load()
    for x in range(96):
        for y in range(64):
            px[x, y] = (x * 2 % 256, y * 4 % 256, 128 if 30 < x < 60 and 20 < y < 44 else 30)
    return img


def pytest_collection_modifyitems(config, items) -> None:
    """The files holding end-to-end tests run first (file order otherwise kept, and the order inside each
    file untouched): with `--dist loadfile` the long files start at once on the workers and the many short
    unit-test files fill in behind them, instead of one long file starting last on an idle machine."""
    heavy = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path not in heavy)  # stable: False (heavy) first
