"""The TorchServe handler in process, with TorchServe's own Context: the model-config's settings applied, the
device taken from g2u.devices with TorchServe's gpu_id, and requests that leave nothing behind (the
deterministic form of the reliability run's RSS bound: a worker whose requests kept their images would grow
by hundreds of MB under load)."""

from __future__ import annotations

import base64
import gc
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("ts")


def _handler_module():
    sys.path.insert(0, str(ROOT / "handler"))  # TorchServe imports the packed file by its own name
    try:
        import g2u_handler
    finally:
        sys.path.remove(str(ROOT / "handler"))
    return g2u_handler


def _context(cfg: dict, model_dir: Path, gpu: int | None = None):
    from ts.context import Context
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    metrics = MetricsCacheYamlImpl(str(ROOT / "handler" / "metrics.yaml"))
    metrics.initialize_cache()
    return Context("g2u", str(model_dir), {}, 4, gpu, "0.12.0", metrics=metrics, model_yaml_config=cfg)


def png(color=(200, 40, 90), size=(96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def handler(demo_root, tmp_path_factory):
    """The handler as TorchServe loads it: the demo packed as ``checkpoint`` inside the model folder."""
    model_dir = tmp_path_factory.mktemp("mar")
    (model_dir / "checkpoint").symlink_to(demo_root / "qwen_image_edit", target_is_directory=True)
    cfg = {"responseTimeout": 600, "handler": {"checkpoint": "checkpoint", "deadline_s": 120,
                                               "checkpoint_name": "demo-qwen", "defaults": {"steps": 2},
                                               "budget": {"max_decode_tokens": 64}}}
    h = _handler_module().G2UHandler()
    h.initialize(_context(cfg, model_dir, gpu=0))
    return h


def _answer(handler, rows: list[dict]) -> list[dict]:
    """TorchServe's call for one batch: one JSON body per row (statuses set on the context)."""
    from ts.context import RequestProcessor

    context = handler.context
    context.request_processor = [RequestProcessor({}) for _ in rows]
    context.request_ids = {i: f"req-{i}" for i in range(len(rows))}
    context.metrics.set_request_ids(context.request_ids)
    return [json.loads(body) for body in handler.handle(rows, context)]


def test_the_model_config_settings_are_what_the_handler_serves_with(handler):
    assert handler.deadline_s == 120 and handler.defaults == {"steps": 2}
    assert handler.pipeline.budget.max_decode_tokens == 64
    [body] = _answer(handler, [{"body": {"image": base64.b64encode(png()).decode(), "question": "What colour?"}}])
    assert body["edit"]["steps"] == 2  # the configured default under the request's unset field
    assert body["model"]["checkpoint"] == "demo-qwen"
    [over] = _answer(handler, [{"body": {"image": base64.b64encode(png()).decode(), "question": "q?",
                                         "max_new_tokens": 100}}])
    assert over["error"] == "over_budget" or "budget" in json.dumps(over), over


def test_the_device_is_the_one_g2u_devices_picks_for_torchserves_gpu(handler):
    from g2u.devices import resolve_device

    assert handler.device == resolve_device(None, gpu_id=0)
    assert handler.pipeline.model_info["device"] == str(handler.device)


def test_a_bad_setting_stops_the_load_before_any_weight_is_read(tmp_path, monkeypatch):
    import g2u.pipeline

    def no_load(*args, **kwargs):
        raise AssertionError("weights were loaded before the settings were checked")

    monkeypatch.setattr(g2u.pipeline.G2UPipeline, "from_checkpoint", no_load)
    h = _handler_module().G2UHandler()
    with pytest.raises(ValueError, match=r"^model-config handler.budget.max_work: unknown setting"):
        h.initialize(_context({"handler": {"budget": {"max_work": 3}}}, tmp_path))


def _live_images() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Image.Image))


def _live_tensors() -> int:
    """Tensors alive outside the fast path's vision-encoding cache (bounded LRU, g2u.fastpath), which keeps
    the encodings of the last images seen on purpose."""
    from g2u.fastpath import VisionEncodingCache

    gc.collect()
    objects = gc.get_objects()
    cached = set()
    for cache in (o for o in objects if isinstance(o, VisionEncodingCache)):
        for tensor in cache.store.values():
            while tensor is not None:  # a cached view keeps the tensor it views alive
                cached.add(id(tensor))
                tensor = tensor._base
    return sum(1 for o in objects if isinstance(o, torch.Tensor) and id(o) not in cached)


def test_answered_requests_keep_no_images_or_tensors_alive(handler):
    def batch(i: int) -> list[dict]:  # new pictures each time: nothing may be kept per request
        return [{"body": {"image": base64.b64encode(png((40 * i % 256, 90, 30))).decode(), "question": f"q{i}?",
                          "return_thought": True}},
                {"image": png(), "question": ""}]  # a bad one: its 400 keeps nothing either

    _answer(handler, batch(0))  # warm-up: lazily built modules and buffers
    images, tensors = _live_images(), _live_tensors()
    for i in range(1, 3):
        bodies = _answer(handler, batch(i))
        assert bodies[0]["thought"] and bodies[1]["field"] == "question"
    del bodies
    assert _live_images() == images
    assert _live_tensors() == tensors
