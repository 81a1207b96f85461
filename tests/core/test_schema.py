"""The one request schema: every entry point derives its fields from it, so none can drift."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from g2u.cli import build_parser
from g2u.errors import InputError
from g2u.eval.runner import EvalConfig
from g2u.modes import MODES, modes_for
from g2u.schema import (
    FIELD_NAMES,
    PER_SAMPLE_FIELDS,
    SETTING_FIELDS,
    field_table,
    parse_request,
    pyfunc_columns,
    validate_settings,
)

ROOT = Path(__file__).resolve().parents[2]


def test_docs_field_table_is_the_schema():
    from scripts.sync_schema import FIELD_TABLE_PAGE

    page = FIELD_TABLE_PAGE.read_text()
    block = re.search(r"<!-- request-fields:start -->\n(.*?)<!-- request-fields:end -->", page, re.S)
    assert block, f"{FIELD_TABLE_PAGE.name} lost its request-field table markers"
    assert block.group(1) == field_table(), "the field table differs from g2u.schema: run python scripts/sync_schema.py"


def test_sync_schema_check_passes():
    from scripts.sync_schema import main

    assert main(["--check"]) == 0


def test_cli_has_every_field_with_help():
    predict = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "predict")[1]
    by_dest = {a.dest: a for a in predict._actions}
    for name in FIELD_NAMES:
        if name == "return_thought":  # the CLI always writes the thought PNG
            continue
        if name == "stream":  # HTTP only: server-sent events; the CLI prints its result when done
            continue
        assert name in by_dest, f"g2u predict has no option for {name}"
        assert by_dest[name].help, f"--{name} has no help text"


def test_pyfunc_signature_declares_every_field_optional_but_image_and_question():
    pytest.importorskip("mlflow")
    from mlflow_project.pyfunc_model import pyfunc_signature

    inputs = {c.name: c for c in pyfunc_signature().inputs.inputs}
    assert set(inputs) == set(FIELD_NAMES) == set(pyfunc_columns())
    assert {n for n, c in inputs.items() if c.required} == {"image", "question"}
    assert {"id", "order", "think"} <= set(inputs)  # the fields the registered model used to drop


def test_mlproject_parameters_are_the_schema_settings():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    points = project["entry_points"]
    assert points["main"] == points["evaluate"], "`mlflow run .` must be the evaluation"
    for name in ("evaluate", "ablation", "paper_table"):
        params = points[name]["parameters"]
        for field in SETTING_FIELDS:
            assert field in params, f"MLproject {name} lacks the request field {field}"
            assert params[field]["default"] == "", f"{name}.{field}: the default belongs to g2u.schema"
            assert f"--{field.replace('_', '-')} {{{field}}}" in points[name]["command"]
        assert not set(params) & set(PER_SAMPLE_FIELDS) - {"mode"}


def test_evaluation_settings_are_validated_with_the_field_named():
    assert EvalConfig.create(("baseline", "g2u"), steps="12", cfg_interval="0.2,0.9").fields == {
        "cfg_interval": [0.2, 0.9], "steps": 12}
    with pytest.raises(InputError) as err:
        EvalConfig.create(("baseline",), text_cfg="nan")
    assert err.value.field == "text_cfg"
    with pytest.raises(InputError) as err:
        EvalConfig.create(("baseline", "dream"))
    assert err.value.field == "modes"
    with pytest.raises(InputError) as err:
        validate_settings({"cfg_renorm_type": "bogus"})
    assert err.value.field == "cfg_renorm_type"


def test_edit_settings_do_not_change_the_key_of_modes_without_a_thought():
    a = EvalConfig.create(("baseline", "g2u"), steps=10)
    b = EvalConfig.create(("baseline", "g2u"), steps=20, think="true")
    assert a.key("baseline") == b.key("baseline") and a.key("textual_cot") == b.key("textual_cot")
    assert a.key("g2u") != b.key("g2u") and a.key("vae_concat") != b.key("vae_concat")


def test_backend_fields_reach_edit_params(rgb_image):
    req = parse_request({"question": "q", "think": "true", "cfg_interval": "0.4,1", "timestep_shift": "2.5"},
                        image=rgb_image)
    assert req.edit.options == {"think": True, "cfg_interval": (0.4, 1.0), "timestep_shift": 2.5}


def test_mode_table():
    assert [m for m in MODES if MODES[m].needs_thought] == ["g2u", "replace", "vae_concat"]
    assert "vae_concat" in modes_for("bagel") and "vae_concat" not in modes_for("qwen_image_edit")
    assert set(modes_for(None)) == set(MODES)


def test_cli_parses_bool_and_option_flags():
    parser = argparse.ArgumentParser()
    from g2u.schema import add_request_arguments

    add_request_arguments(parser, bool_flags=False)
    args = parser.parse_args(["--think", "false", "--cfg-interval", "0,1"])
    assert validate_settings({"think": args.think, "cfg_interval": args.cfg_interval}) == {
        "think": False, "cfg_interval": (0.0, 1.0)}


def test_internal_defaults_are_the_schema_defaults():
    """EditParams/AnswerParams are built by the schema; their own defaults (used by backend tests and
    library callers) must not drift from the schema's."""
    from g2u.schema import answer_params, edit_params, field_default

    edit, answer = edit_params(), answer_params()
    assert (edit.steps, edit.text_cfg, edit.image_cfg, edit.seed) == tuple(
        field_default(n) for n in ("steps", "text_cfg", "image_cfg", "seed"))
    assert answer.max_new_tokens == field_default("max_new_tokens")
