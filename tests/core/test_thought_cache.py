"""The persistent thought cache: content-addressed, shared, bounded, safe across processes."""

from __future__ import annotations

import multiprocessing
import random

import pytest
from PIL import Image

from g2u.backends import load_backend
from g2u.batch import RawItem, outcome_body, run_batch
from g2u.pipeline import G2UPipeline
from g2u.schema import edit_params
from g2u.thought_cache import ThoughtCache

FAST = {"steps": 2, "max_new_tokens": 3}


class Counting:
    def __init__(self, inner):
        self.inner, self.edited = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def edit(self, images, prompts, params):
        self.edited += len(images)
        return self.inner.edit(images, prompts, params)


@pytest.fixture(scope="module")
def backend(demo_root):
    return load_backend(str(demo_root / "qwen_image_edit"))


def _run(pipe, image, **fields):
    [out] = run_batch(pipe, [RawItem({"question": "What is shown?", **FAST, **fields}, image)])
    assert out.ok, out.error
    return out, outcome_body(out)


def test_second_request_is_served_from_the_cache(backend, rgb_image, tmp_path):
    pipe = G2UPipeline(Counting(backend), thought_cache=ThoughtCache(tmp_path / "c"))
    first, body1 = _run(pipe, rgb_image)
    second, body2 = _run(pipe, rgb_image)
    assert body1["edit"]["cached"] is False and body2["edit"]["cached"] is True
    assert pipe.backend.edited == 1
    assert second.thought.image.tobytes() == first.thought.image.tobytes()
    assert body2["fidelity"] == body1["fidelity"] and body2["answer"] == body1["answer"]
    assert "edit" not in body2["timings_ms"] and "cache" in body2["timings_ms"]


def test_another_process_pipeline_shares_the_folder(backend, rgb_image, tmp_path):
    """Serving, CLI and evaluation open the same folder: a thought one made, the other reuses."""
    _run(G2UPipeline(backend, thought_cache=ThoughtCache(tmp_path / "c")), rgb_image)
    other = G2UPipeline(Counting(backend), thought_cache=ThoughtCache(tmp_path / "c"))
    _, body = _run(other, rgb_image)
    assert body["edit"]["cached"] is True and other.backend.edited == 0


def test_anything_that_changes_the_thought_misses(backend, rgb_image, tmp_path):
    pipe = G2UPipeline(Counting(backend), thought_cache=ThoughtCache(tmp_path / "c"))
    _run(pipe, rgb_image)
    changed = rgb_image.copy()
    changed.putpixel((0, 0), (1, 2, 3))
    for image, fields in [(rgb_image, {"seed": 1}), (rgb_image, {"family": "extension"}),
                          (rgb_image, {"steps": 3}), (rgb_image, {"text_cfg": 5.0}), (changed, {})]:
        _, body = _run(pipe, image, **fields)
        assert body["edit"]["cached"] is False, fields
    assert pipe.backend.edited == 6


def test_key_depends_on_the_checkpoint(demo_root, rgb_image, tmp_path):
    cache = ThoughtCache(tmp_path / "c")
    a = load_backend(str(demo_root / "qwen_image_edit"))
    b = load_backend(str(demo_root / "decoupled"))
    params = edit_params(steps=2, size=(64, 64))
    assert cache.key(a, rgb_image, "p", params) == cache.key(a, rgb_image, "p", params)
    assert cache.key(a, rgb_image, "p", params) != cache.key(b, rgb_image, "p", params)
    assert cache.key(a, rgb_image, "p", params, "1.0.0") != cache.key(a, rgb_image, "p", params, "1.0.1")


def _noise(seed: int, side: int = 96) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(side * side * 3)))


def test_size_is_bounded_with_least_recently_used_eviction(tmp_path):
    cache = ThoughtCache(tmp_path / "c", max_mb=0.3)  # ~ 10 noise PNGs of ~28 kB
    for i in range(4):
        cache.put(f"k{i}", _noise(i), {})
    for i in range(4, 30):
        assert cache.get("k0") is not None, f"k0 was used last, yet evicted at insert {i}"
        cache.put(f"k{i}", _noise(i), {})
    assert cache.volume() <= 0.3 * 2**20 + 40_000  # the bound, plus at most one entry written past it
    assert cache.get("k1") is None, "the least recently used entry must have been evicted"
    assert len(cache) < 30


def _writer(folder: str, worker: int) -> None:
    cache = ThoughtCache(folder)
    for i in range(15):
        cache.put(f"shared{i % 5}", _noise(i % 5, 32), {"worker": worker})
        cache.put(f"w{worker}-{i}", _noise(100 + i, 32), {"worker": worker})
        got = cache.get(f"shared{(i + 1) % 5}")  # a concurrent reader sees a whole entry or none
        assert got is None or got.image.tobytes() == _noise((i + 1) % 5, 32).tobytes()


def test_concurrent_workers_never_corrupt_entries(tmp_path):
    folder = str(tmp_path / "c")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(folder, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    cache = ThoughtCache(folder)
    for i in range(5):
        got = cache.get(f"shared{i}")
        assert got is not None and got.image.tobytes() == _noise(i, 32).tobytes()
    for w in range(3):
        for i in range(15):
            assert cache.get(f"w{w}-{i}").image.tobytes() == _noise(100 + i, 32).tobytes()


def test_configuration(tmp_path, monkeypatch):
    monkeypatch.delenv("G2U_THOUGHT_CACHE", raising=False)
    assert ThoughtCache.from_env() is None
    monkeypatch.setenv("G2U_THOUGHT_CACHE", str(tmp_path / "env"))
    monkeypatch.setenv("G2U_THOUGHT_CACHE_MB", "12")
    cache = ThoughtCache.from_env()
    assert cache.directory == tmp_path / "env" and cache.max_mb == 12
    monkeypatch.setenv("G2U_THOUGHT_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="G2U_THOUGHT_CACHE_MB"):
        ThoughtCache.from_env()
    assert ThoughtCache.from_setting({"dir": str(tmp_path / "m"), "max_mb": 5}).max_mb == 5
    with pytest.raises(ValueError, match="unknown keys"):
        ThoughtCache.from_setting({"dir": str(tmp_path / "m"), "size": 5})
    with pytest.raises(ValueError, match="positive"):
        ThoughtCache(tmp_path / "z", max_mb=0)
