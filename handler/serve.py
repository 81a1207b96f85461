"""`make serve` / `make stop`: run TorchServe with the g2u archive from the repository root.

    python -m handler.serve up     start, wait for the model READY (time-bounded), send one real prediction
    python -m handler.serve stop   stop TorchServe and wait until its processes and ports are gone
    python -m handler.serve rotate replace the inference and management keys (before they expire: see
                                   token_expiration_min in config.properties); key_file.json is rewritten

State lives in logs/ (rendered config.properties, TorchServe logs, temp dir with the pid file); the token
keys in ./key_file.json, where TorchServe writes them.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import sys
import time
from pathlib import Path

import requests

from handler.tsctl import ROOT, Ports, Server, render_config

SHARED_DATA = ROOT.parent / "shared" / "data"
LOGS = ROOT / "logs"
OUT = ROOT / "outputs"
MODEL_NAME = "g2u"
SAMPLE_IMAGE = ROOT / "g2u" / "data" / "images" / "shapes.png"
PORTS_ENV = "G2U_PORTS"
"""``G2U_PORTS=free make serve``: free loopback ports instead of config.properties' (printed; for a second
checkout on one machine, and the tests)."""


def server() -> Server:
    return Server(home=ROOT, config=LOGS / "config.properties", model_name=MODEL_NAME, logs=LOGS)


def sample() -> tuple[Path, str, list[str] | None]:
    """A real benchmark sample from ../shared/data when present, else the shipped picture (the README's)."""
    for manifest in sorted(SHARED_DATA.glob("*/*.jsonl")):
        with manifest.open() as f:
            row = json.loads(f.readline())
        image = manifest.parent / row["image"]
        if image.is_file():
            return image, row["question"], row.get("options")
    return SAMPLE_IMAGE, "Which shape is red?", ["the circle", "the square"]


def curl_examples(image: Path, inference_url: str) -> str:
    key = "KEY=$(python3 -c 'import json; print(json.load(open(\"key_file.json\"))[\"inference\"][\"key\"])')"
    img = shlex.quote(str(image))
    return "\n".join([
        f"cd {shlex.quote(str(ROOT))}",
        key,
        f'curl -s -H "Authorization: Bearer $KEY" -F image=@{img} -F question="What is in the picture?" '
        f"-F steps=4 {inference_url}/predictions/{MODEL_NAME}",
    ])


def openai_example(image: Path, inference_url: str, key_file: Path | None = None, python: str | None = None) -> str:
    """A shell snippet running the official ``openai`` client against the OpenAI-compatible route: the
    image as a data URL, G→U fields through ``extra_body``, the answer streamed (steps, then tokens)."""
    key_file = key_file or ROOT / "key_file.json"
    code = f"""
import base64, json, pathlib
from openai import OpenAI

key = json.loads(pathlib.Path({str(key_file)!r}).read_text())["inference"]["key"]
client = OpenAI(base_url={inference_url + "/predictions/" + MODEL_NAME + "/1.0/v1"!r}, api_key=key)
image = "data:image/png;base64," + base64.b64encode(pathlib.Path({str(image)!r}).read_bytes()).decode()
messages = [{{"role": "user", "content": [{{"type": "image_url", "image_url": {{"url": image}}}},
                                        {{"type": "text", "text": "What is in the picture?"}}]}}]
reply = client.chat.completions.create(model={MODEL_NAME!r}, messages=messages, max_tokens=32,
                                       extra_body={{"steps": 4, "family": "enhancement"}})
print("answer:", reply.choices[0].message.content, "| edit:", reply.g2u["edit"]["prompt"], "| usage:", reply.usage)
for chunk in client.chat.completions.create(model={MODEL_NAME!r}, messages=messages, max_tokens=32, stream=True,
                                            extra_body={{"steps": 4}}):
    event = getattr(chunk, "g2u", None) or {{}}
    if event.get("event") == "step":
        print(f"step {{event['step']}}/{{event['total']}}", end="  ", flush=True)
    elif chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
""".strip("\n")
    return f"{shlex.quote(python or sys.executable)} - <<'EOF'\n{code}\nEOF"


def up(timeout: float) -> int:
    srv = server()
    if srv.pid() is not None:
        print(f"TorchServe is already running (pid {srv.pid()}); restarting it with the new archive")
        srv.stop()
    ports = Ports.free() if os.environ.get(PORTS_ENV) == "free" else None
    render_config(srv.config, ports=ports, model_store=ROOT / "model_store", models=f"{MODEL_NAME}={MODEL_NAME}.mar")
    (srv.log_dir / "model_log.log").unlink(missing_ok=True)  # count worker deaths of this start only
    start = time.monotonic()
    pid = srv.start()
    print(f"TorchServe started (pid {pid}); config {srv.config}; logs {srv.log_dir}")
    try:
        desc = srv.wait_ready(timeout)
    except (TimeoutError, RuntimeError) as exc:
        print(f"\nERROR: {exc}\n\n{srv.log_tail()}", file=sys.stderr)
        srv.stop()
        print("TorchServe stopped.", file=sys.stderr)
        return 1
    print(f"model {MODEL_NAME!r} READY after {time.monotonic() - start:.1f} s "
          f"(batchSize {desc['batchSize']}, maxBatchDelay {desc['maxBatchDelay']} ms)")

    image, question, options = sample()
    fields = {"question": question, "return_thought": "true"}
    if options:
        fields["options"] = json.dumps(options)
    key = srv.keys()["inference"]
    url = f"{srv.url('inference')}/predictions/{MODEL_NAME}"
    t0 = time.perf_counter()
    with image.open("rb") as f:
        r = requests.post(url, headers={"Authorization": f"Bearer {key}"}, data=fields,
                          files={"image": (image.name, f, "application/octet-stream")}, timeout=900)
    wall = time.perf_counter() - t0
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {"raw": r.text}
    thought = body.pop("thought", None)
    print(f"\nPOST {url}  image={image}  ->  HTTP {r.status_code} in {wall:.2f} s")
    print(json.dumps(body, indent=2, ensure_ascii=False))
    if thought:
        OUT.mkdir(exist_ok=True)
        path = OUT / f"serve-thought-{image.stem}.png"
        path.write_bytes(base64.b64decode(thought))
        print(f"thought PNG written to {path}")
    print("\nTry it yourself (the key is read from key_file.json):\n" + curl_examples(image, srv.url("inference")))
    print("\nThe same through the official openai client (the OpenAI-compatible route: docs/openai-api.md):\n"
          + openai_example(image, srv.url("inference")))
    print("\nMetrics: curl -s " + srv.url("metrics") + "/metrics | grep g2u_\nStop:    make stop")
    print(f"Keys expire after {srv.props.get('token_expiration_min', '60')} min: `make rotate-keys` before that.")
    return 0 if r.ok else 1


def stop() -> int:
    srv = server()
    if srv.pid() is None and not srv.config.is_file():
        print("TorchServe is not running.")
        return 0
    running = srv.pid() is not None
    srv.stop()
    print("TorchServe stopped; ports free." if running else "TorchServe is not running; ports free.")
    return 0


def rotate() -> int:
    """New inference and management keys from TorchServe's token API (authorised by the API key)."""
    srv = server()
    if srv.pid() is None:
        print("TorchServe is not running.", file=sys.stderr)
        return 1
    for kind in ("inference", "management"):
        srv.rotate_key(kind)
    minutes = srv.props.get("token_expiration_min", "60")
    print(f"New inference and management keys in {srv.key_file}; they expire in {minutes} min. "
          "Clients of this repository re-read the file when a key is refused.")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start TorchServe, wait READY, send one prediction")
    u.add_argument("--timeout", type=float, default=float(os.environ.get("G2U_SERVE_TIMEOUT", 300)),
                   help="seconds to wait for the model READY (default $G2U_SERVE_TIMEOUT or 300)")
    sub.add_parser("stop", help="stop TorchServe and wait until its ports are free")
    sub.add_parser("rotate", help="replace the inference and management keys (they expire)")
    args = p.parse_args(argv)
    return {"up": lambda: up(args.timeout), "stop": stop, "rotate": rotate}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
