"""Container entrypoint: render the repository's config.properties for a pod and run TorchServe in the
foreground (PID 1's child), so Kubernetes sees it exit and restarts the pod.

What changes against the shipped config, and why:
- inference and metrics addresses bind 0.0.0.0 (a Service and Prometheus reach them); the management API
  stays on 127.0.0.1 inside the pod (only the readiness probe uses it; the model API stays off);
- ``G2U_TOKEN_AUTH=off`` turns TorchServe's token authorization off. TorchServe 0.12 draws random keys at
  every start, so replicas behind one Service cannot share a key; the Kubernetes manifests therefore put
  authentication in front (NetworkPolicy + gateway) and say so. ``docker run`` keeps it on (the default);
- model store and checkpoints are the mounted volumes; the archive is built there on first start when
  ``G2U_CHECKPOINT`` names a checkpoint and the store has no ``<model>.mar`` yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from handler.tsctl import ROOT, ensure_java, read_properties, render_config

RENDERED = ROOT / "logs" / "config.properties"
TOKEN_SETTINGS = {"on": "false", "off": "true"}
"""``G2U_TOKEN_AUTH`` value → ``disable_token_authorization``."""


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1].strip("/"))


def container_properties(env: dict[str, str]) -> dict[str, str]:
    """The overrides applied to config.properties inside the container (ports are kept as shipped)."""
    shipped = read_properties(ROOT / "config.properties")
    token = env.get("G2U_TOKEN_AUTH", "on")
    if token not in TOKEN_SETTINGS:
        raise SystemExit(f"G2U_TOKEN_AUTH: must be 'on' or 'off', got {token!r}")
    return {
        "inference_address": f"http://0.0.0.0:{_port(shipped['inference_address'])}",
        "metrics_address": f"http://0.0.0.0:{_port(shipped['metrics_address'])}",
        "management_address": shipped["management_address"],
        "disable_token_authorization": TOKEN_SETTINGS[token],
    }


def ensure_archive(store: Path, model: str, env: dict[str, str]) -> Path:
    """``store/<model>.mar``; built from ``G2U_CHECKPOINT`` (referenced by path) when it is missing."""
    mar = store / f"{model}.mar"
    if mar.is_file():
        return mar
    checkpoint = env.get("G2U_CHECKPOINT")
    if not checkpoint:
        raise SystemExit(f"{mar} is missing and G2U_CHECKPOINT is not set: mount a model store holding it, "
                         f"or set G2U_CHECKPOINT=/models/checkpoints/<folder> to build it on first start")
    cmd = [sys.executable, "-m", "handler.archive", "--checkpoint", checkpoint, "--export-path", str(store),
           "--model-name", model]
    if env.get("G2U_BACKEND"):
        cmd += ["--backend", env["G2U_BACKEND"]]
    if env.get("G2U_MODEL_CONFIG"):
        cmd += ["--model-config", env["G2U_MODEL_CONFIG"]]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return mar


def main() -> int:
    env = dict(os.environ)
    store = Path(env.get("G2U_MODEL_STORE", "/models/store"))
    model = env.get("G2U_MODEL_NAME", "g2u")
    ensure_archive(store, model, env)
    render_config(RENDERED, model_store=store, models=f"{model}={model}.mar", extra=container_properties(env))
    run_env = ensure_java(env)
    run_env.update({"LOG_LOCATION": str(ROOT / "logs"), "METRICS_LOCATION": str(ROOT / "logs")})
    torchserve = Path(sys.executable).with_name("torchserve")
    # key_file.json is written to the working directory (ROOT), where deploy.probe reads it.
    os.chdir(ROOT)
    os.execve(str(torchserve), [str(torchserve), "--start", "--foreground", "--ncs", "--ts-config", str(RENDERED)],
              run_env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
