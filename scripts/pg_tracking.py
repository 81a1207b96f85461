"""A throw-away MLflow tracking server on a real PostgreSQL, for `make test-postgres` and by hand.

    python -m scripts.pg_tracking        # start both, print MLFLOW_TRACKING_URI, stop on Ctrl-C

PostgreSQL comes from the system package (``/usr/lib/postgresql/<version>/bin``, override with
``G2U_PG_BIN``): a fresh data directory made by ``initdb``, password authentication, loopback only on a free
port, its socket inside the data directory; ``pg_ctl stop`` in a ``finally`` so it is stopped whatever
happens. PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user (or ``nobody``).
``mlflow server`` then uses it as backend store and proxies artifacts to a local folder.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

PG_BIN = Path(os.environ.get("G2U_PG_BIN", "/usr/lib/postgresql/15/bin"))
DB_USER = "g2u"
DB_NAME = "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: None (this one) unless we are root, which initdb refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no 'postgres' or 'nobody' account to run PostgreSQL as")


def _pg(tool: str, *args: str, user: pwd.struct_passwd | None, **kwargs) -> subprocess.CompletedProcess:
    exe = PG_BIN / tool
    if not exe.is_file():
        raise FileNotFoundError(f"{exe} not found: install postgresql-15 or set G2U_PG_BIN")
    kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    return subprocess.run([str(exe), *args], check=True, capture_output=True, text=True, **kw, **kwargs)


@contextmanager
def postgres_server(workdir: Path | None = None) -> Iterator[str]:
    """Yield the SQLAlchemy URI (``postgresql+psycopg2://``) of a fresh PostgreSQL database; stop the server
    and remove its data directory afterwards, whatever happens inside."""
    import psycopg2

    user = _server_user()
    # As another account the data directory must be reachable by it: the system temp dir (sticky, 1777)
    # rather than a private workdir.
    root = Path(tempfile.mkdtemp(prefix="g2u-pg-", dir=None if user else workdir))
    data, pwfile, log = root / "data", root / "pwfile", root / "postgres.log"
    password = secrets.token_hex(12)
    pwfile.write_text(password + "\n")
    if user:
        os.chown(root, user.pw_uid, user.pw_gid)
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    port = free_port()
    started = False
    try:
        _pg("initdb", "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
            "--encoding=UTF8", "--no-instructions", user=user)
        pwfile.unlink()
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data}"
        started = True
        _pg("pg_ctl", "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start", user=user)
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, password=password, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DB_NAME}")
        conn.close()
        # The driver is named: SQLAlchemy >= 2.1 reads a bare postgresql:// as psycopg (3), not psycopg2.
        yield f"postgresql+psycopg2://{DB_USER}:{password}@127.0.0.1:{port}/{DB_NAME}"
    except subprocess.CalledProcessError as exc:
        tail = log.read_text()[-2000:] if log.is_file() else ""
        raise RuntimeError(f"{exc.cmd[0]} failed: {exc.stderr or exc.stdout}\n{tail}") from exc
    finally:
        if started and (data / "postmaster.pid").is_file():
            _pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop", user=user)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, timeout: float = 180) -> Iterator[str]:
    """Yield the URL of an ``mlflow server`` on loopback using ``backend_uri``; terminate it afterwards."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(artifacts.parent / f"mlflow-server-{port}.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}; see {log.name}")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server not healthy after {timeout:.0f} s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="g2u-tracking-") as tmp, postgres_server(Path(tmp)) as db, \
            mlflow_server(db, Path(tmp) / "artifacts") as url:
        print(f"export MLFLOW_TRACKING_URI={url}    (backend store: PostgreSQL on {db.rsplit('@', 1)[1]})")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
