"""Kubernetes readiness/startup probe: ready means a READY worker of the model on the management API.

TorchServe's ``/ping`` says Healthy even when the model failed to load, so it cannot gate traffic. The
management API listens on 127.0.0.1 inside the pod, which only an exec probe reaches; with token
authorization on, the probe sends the management key from the ``key_file.json`` TorchServe wrote in its
working directory (the pod's own file: no secret leaves the pod). Exit 0 ready, 1 not ready.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import requests

from handler.tsctl import ROOT, read_properties

RENDERED = ROOT / "logs" / "config.properties"
KEY_FILE = ROOT / "key_file.json"


def ready(config: Path = RENDERED, key_file: Path = KEY_FILE, model: str = "g2u", timeout: float = 3.0) -> bool:
    props = read_properties(config)
    headers = {}
    if props.get("disable_token_authorization", "false").lower() != "true":
        try:
            headers["Authorization"] = f"Bearer {json.loads(key_file.read_text())['management']['key']}"
        except (OSError, KeyError, ValueError):
            return False  # TorchServe has not written its keys yet
    url = props["management_address"].rstrip("/") + f"/models/{model}"
    try:
        resp = requests.get(url, headers=headers, timeout=timeout)
        workers = resp.json()[0].get("workers", []) if resp.status_code == 200 else []
    except (requests.RequestException, ValueError, IndexError, KeyError, AttributeError):
        return False
    return any(w.get("status") == "READY" for w in workers)


def main() -> int:
    ok = ready(model=os.environ.get("G2U_MODEL_NAME", "g2u"))
    print("READY" if ok else "not ready")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
