"""Loader options declared once (g2u.loading), the demo default in one place (g2u.checkpoints), the device
picked once (g2u.devices): what the CLI, the MLflow project and the handler rely on."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import yaml

from g2u import checkpoints, devices
from g2u.errors import InputError
from g2u.loading import LOADER_FIELDS, LoaderOptions, add_loader_arguments

ROOT = Path(__file__).resolve().parents[2]


def test_unset_text_means_the_default_and_every_option_is_checked_by_name():
    # MLproject passes '' for an unset parameter, model-configs and people write auto / null
    opts = LoaderOptions.parse({"checkpoint": "", "backend": "none", "device": "auto", "dtype": "auto",
                                "offload": "", "quantize": None})
    assert opts == LoaderOptions() and (opts.offload, opts.quantize) == ("none", "none")
    assert LoaderOptions.parse({"backend": "bagel", "dtype": "bf16", "device": "cpu"}).backend == "bagel"
    for bad, field in (({"backend": "dalle"}, "backend"), ({"dtype": "fp64"}, "dtype"),
                       ({"device": "gpu!"}, "device"), ({"offload": "disk"}, "offload"),
                       ({"quantize": "int4"}, "quantize"), ({"colour": "red"}, "colour")):
        with pytest.raises(InputError) as info:
            LoaderOptions.parse(bad)
        assert info.value.field == field and info.value.reason


def test_flags_are_the_options():
    parser = argparse.ArgumentParser()
    add_loader_arguments(parser)
    args = parser.parse_args(["--checkpoint", "/m/q", "--backend", "decoupled", "--quantize", "int8"])
    opts = LoaderOptions.from_namespace(args)
    assert (opts.checkpoint, opts.backend, opts.quantize, opts.offload) == ("/m/q", "decoupled", "int8", "none")
    assert opts.load_kwargs() == {"device": None, "dtype": None, "offload": "none", "quantize": "int8"}
    assert {a.dest for a in parser._actions} - {"help"} == set(LOADER_FIELDS)
    only = argparse.ArgumentParser()
    add_loader_arguments(only, ("checkpoint", "backend"))
    assert LoaderOptions.from_namespace(only.parse_args([])) == LoaderOptions()


def test_the_model_label_suffix_keeps_earlier_runs_resumable():
    """Evaluation records are keyed by the label: its format for a quantized model must not change."""
    assert LoaderOptions().label_suffix() == ""
    assert LoaderOptions(quantize="int8").label_suffix() == "+offload=none+quantize=int8"
    fitted = LoaderOptions(offload="model", dtype="float16")
    assert fitted.label_suffix() == "+offload=model+quantize=none+dtype=float16"


def test_mlproject_entry_points_take_every_loader_option_and_compare_the_default_modes():
    from g2u.modes import DEFAULT_EVAL_MODES
    from scripts import sync_schema

    assert sync_schema.main(["--check"]) == 0, "MLproject or README out of date: python scripts/sync_schema.py"
    points = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    for name in ("evaluate", "ablation"):
        for option in LOADER_FIELDS:
            assert points[name]["parameters"][option]["default"] == "", (name, option)
            assert f"--{option} {{{option}}}" in points[name]["command"]
    assert points["evaluate"]["parameters"]["modes"]["default"] == ",".join(DEFAULT_EVAL_MODES)


def test_no_checkpoint_means_the_demo_of_the_backend(tmp_path, monkeypatch):
    import g2u.demo

    built = []

    def fake_build(root, seed=0, backends=()):  # the real build takes seconds per backend
        for name in backends:
            (Path(root) / name).mkdir(parents=True)
            g2u.demo.write_demo_marker(Path(root) / name, seed, 4096)
            built.append(name)

    monkeypatch.setattr(g2u.demo, "build_demo_checkpoints", fake_build)
    monkeypatch.setenv("G2U_HOME", str(tmp_path / "home"))
    assert checkpoints.resolve_checkpoint("/models/x", "bagel") == "/models/x"  # given: as is, nothing built
    assert built == []
    assert checkpoints.resolve_checkpoint(None) == str(tmp_path / "home" / "demo" / "qwen_image_edit")
    assert checkpoints.resolve_checkpoint("", "bagel") == str(tmp_path / "home" / "demo" / "bagel")
    assert checkpoints.resolve_checkpoint(None, "bagel", demo_root=tmp_path / "mar") == str(tmp_path / "mar" / "bagel")
    assert checkpoints.resolve_checkpoint(None) == str(tmp_path / "home" / "demo" / "qwen_image_edit")
    assert built == ["qwen_image_edit", "bagel", "bagel"]  # each built once, then found by its marker


def test_the_device_is_the_servers_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device(None, gpu_id=2) == torch.device("cuda:2")
    assert devices.resolve_device("auto", gpu_id="1") == torch.device("cuda:1")
    assert devices.resolve_device(None) == torch.device("cuda")
    assert devices.resolve_device("cpu", gpu_id=2) == torch.device("cpu")  # an explicit device wins
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device(None, gpu_id=2) == torch.device("cpu")
    with pytest.raises(InputError, match="no GPU"):
        devices.resolve_device("cuda:0")


def test_predict_refuses_a_bad_loader_option_by_name_before_loading(tmp_path, capsys, rgb_image):
    from g2u.cli import main

    image = tmp_path / "x.png"
    rgb_image.save(image)
    assert main(["predict", "--image", str(image), "--question", "q", "--backend", "dalle"]) == 2
    assert json.loads(capsys.readouterr().err)["field"] == "backend"
    assert main(["predict", "--image", str(image), "--question", "q", "--quantize", "int4"]) == 2
    assert json.loads(capsys.readouterr().err)["field"] == "quantize"
