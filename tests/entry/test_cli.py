"""`g2u predict` and `g2u demo build` as a user runs them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from g2u.cli import main


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_build_is_deterministic(tmp_path, capsys):
    assert main(["demo", "build", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert main(["demo", "build", str(tmp_path / "b"), "--seed", "3"]) == 0
    assert main(["demo", "build", str(tmp_path / "c"), "--seed", "4", "--backend", "qwen_image_edit"]) == 0
    a, b = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert a == b and any(k.endswith(".safetensors") for k in a)
    c = _tree_digest(tmp_path / "c")
    weights = [k for k in c if k.endswith(".safetensors")]
    assert weights and all(a[k] != c[k] for k in weights)
    for name in ("qwen_image_edit", "decoupled", "decoupled_kontext"):
        assert (tmp_path / "a" / name / "g2u_demo.json").is_file()
    assert (tmp_path / "a" / "qwen_image_edit" / "model_index.json").is_file()


def test_predict_prints_json_and_writes_thought(demo_root, tmp_path, capsys, rgb_image):
    image = tmp_path / "in.png"
    rgb_image.save(image)
    code = main(["predict", "--checkpoint", str(demo_root / "qwen_image_edit"), "--image", str(image),
                 "--question", "What is in the middle?", "--options", '["a square", "a circle"]',
                 "--prompt-name", "outpaint_frame", "--steps", "2", "--seed", "1", "--out", str(tmp_path / "out")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["edit"]["prompt_name"] == "outpaint_frame" and out["edit"]["family"] == "extension"
    assert out["model"]["demo"] is True and out["model"]["backend"] == "qwen_image_edit"
    assert Path(out["thought_path"]).is_file()


def test_predict_bad_input_exits_2_naming_the_field(demo_root, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code = main(["predict", "--checkpoint", str(demo_root / "qwen_image_edit"), "--image", str(bad),
                 "--question", "q"])
    assert code == 2
    assert json.loads(capsys.readouterr().err)["field"] == "image"
    code = main(["predict", "--checkpoint", str(demo_root / "qwen_image_edit"), "--image", str(bad),
                 "--question", "q", "--steps", "0"])
    assert code == 2


def test_missing_checkpoint_exits_3(tmp_path, capsys, rgb_image):
    image = tmp_path / "x.png"
    rgb_image.save(image)
    assert main(["predict", "--checkpoint", str(tmp_path / "nowhere"), "--image", str(image), "--question", "q"]) == 3
    assert "nowhere" in json.loads(capsys.readouterr().err)["reason"]
