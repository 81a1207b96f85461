"""The model-config's handler: section (g2u.handler_settings): validated at load with the key named, every
default declared once, the shipped configs setting only what differs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from g2u.handler_settings import HandlerSettings

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ("model-config.yaml", "model-config.multi-gpu.yaml")


@pytest.mark.parametrize("name", CONFIGS)
def test_the_shipped_model_configs_are_valid_and_answer_late_requests_before_torchserve_kills(name):
    cfg = yaml.safe_load((ROOT / "handler" / name).read_text())
    settings = HandlerSettings.from_model_config(cfg)
    assert settings.checkpoint == "checkpoint"  # the demo packed in the .mar
    assert settings.deadline_s < cfg["responseTimeout"]


def test_both_model_configs_serve_with_the_same_settings():
    """The multi-GPU config differs in TorchServe's keys (workers, devices), not in what the handler does."""
    single, multi = (HandlerSettings.from_model_config(yaml.safe_load((ROOT / "handler" / n).read_text()))
                     for n in CONFIGS)
    assert single == multi


@pytest.mark.parametrize(("section", "key"), [
    ({"colour": "red"}, "handler.colour"),
    ({"deadline_s": 0}, "handler.deadline_s"),
    ({"deadline_s": "soon"}, "handler.deadline_s"),
    ({"budget": {"max_edit_work": 5, "max_tokens": 9}}, "handler.budget.max_tokens"),
    ({"budget": {"max_decode_tokens": -1}}, "handler.budget.max_decode_tokens"),
    ({"defaults": {"steps": 0}}, "handler.defaults.steps"),
    ({"defaults": {"colour": "red"}}, "handler.defaults.colour"),
    ({"thought_cache": {"dir": "/tmp/c", "size": 3}}, "handler.thought_cache.size"),
    ({"thought_cache": {"dir": "/tmp/c", "max_mb": 0}}, "handler.thought_cache.max_mb"),
    ({"quantize": "int4"}, "handler.quantize"),
    ({"max_pixels": "many"}, "handler.max_pixels"),
])
def test_a_bad_key_stops_the_load_with_its_name(section, key):
    with pytest.raises(ValueError) as info:
        HandlerSettings.from_model_config({"handler": section, "responseTimeout": 600})
    assert str(info.value).startswith(f"model-config {key}: ")


def test_the_deadline_must_come_before_torchserve_kills_the_worker():
    with pytest.raises(ValueError, match=r"handler.deadline_s \(600.0\) must be below responseTimeout"):
        HandlerSettings.from_model_config({"handler": {"deadline_s": 600}, "responseTimeout": 600})
    assert HandlerSettings.from_model_config({"handler": {"deadline_s": 599}, "responseTimeout": 600}).deadline_s == 599


def test_settings_as_the_handler_reads_them(tmp_path):
    s = HandlerSettings.from_model_config({"handler": {"budget": None, "thought_cache": str(tmp_path / "c"),
                                                       "defaults": {"steps": 3}}})
    assert s.budget.model_dump() == {"max_edit_work": None, "max_decode_tokens": None, "max_prompt_tokens": None,
                                     "max_batch_tokens": None}  # the backend's defaults
    assert s.defaults == {"steps": 3}
    store = s.thought_cache_store()
    assert store.directory == tmp_path / "c" and store.max_mb == s.thought_cache.max_mb
    assert HandlerSettings().thought_cache_store() == "env"  # unset: G2U_THOUGHT_CACHE decides


def test_the_checkpoint_inside_the_archive_on_the_machine_or_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "checkpoint").mkdir()
    assert HandlerSettings(checkpoint="checkpoint").checkpoint_in(tmp_path) == str(tmp_path / "checkpoint")
    assert HandlerSettings(checkpoint="/models/qwen").checkpoint_in(tmp_path) == "/models/qwen"
    assert HandlerSettings(checkpoint="Qwen/Qwen-Image-Edit").checkpoint_in(tmp_path) == "Qwen/Qwen-Image-Edit"
    import g2u.checkpoints

    monkeypatch.setattr(g2u.checkpoints, "resolve_checkpoint", lambda c, b=None: f"demo:{b}")
    assert HandlerSettings(backend="bagel").checkpoint_in(tmp_path) == "demo:bagel"  # none: the demo's


def test_the_scheduler_follows_async_communication_and_refuses_what_torchserve_cannot_run():
    assert HandlerSettings.from_model_config({}).scheduler.kind == "batch"
    step = HandlerSettings.from_model_config({"asyncCommunication": True, "batchSize": 1,
                                              "handler": {"scheduler": {"max_rows": 4}}})
    assert step.scheduler.kind == "step" and step.scheduler.max_rows == 4
    with pytest.raises(ValueError, match="needs asyncCommunication"):
        HandlerSettings.from_model_config({"handler": {"scheduler": "step"}})
    with pytest.raises(ValueError, match="batchSize must be 1"):
        HandlerSettings.from_model_config({"asyncCommunication": True, "batchSize": 4})
    with pytest.raises(ValueError, match="scheduler.max_rows"):
        HandlerSettings.from_model_config({"asyncCommunication": True, "handler": {"scheduler": {"max_rows": 0}}})
