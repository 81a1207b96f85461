"""The documentation as a newcomer meets it: the README is short and shows the two commands, its links
resolve, every `bash` example in README.md and docs/ runs offline unless marked, and the README's quick
start walks on a fresh copy of the repository (make serve, the REST call, make stop).

Marker convention: the line right before a ```bash fence reads
``<!-- docs-example: not run (REASON) -->`` for an example that cannot run here (a GPU, a real
checkpoint, a running server, a cluster); every other ```bash block is run by ``test_example_runs``, in a
copy of the project with the demo checkpoints (``demo_root``) in place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- docs-example: not run \((.+)\) -->$")
VENV = Path(sys.executable).parent.parent
README_MAX_BYTES = 6000


@dataclass
class Example:
    page: Path
    line: int
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def examples(page: Path) -> list[Example]:
    lines = page.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            marker = MARKER.match(lines[start - 2].strip()) if start >= 2 else None
            out.append(Example(page, start, "\n".join(body) + "\n", marker.group(1) if marker else None))
        i += 1
    return out


ALL = [ex for page in PAGES for ex in examples(page)]
RUNNABLE = [ex for ex in ALL if ex.skip is None]


def test_readme_is_short_and_shows_the_two_commands_and_where_next():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= README_MAX_BYTES, "the README is read in three minutes: move detail to docs/"
    assert "make test" in text and "make serve" in text
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"


def test_every_page_is_in_the_nav_and_markers_sit_on_fences():
    import yaml

    nav = json.dumps(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    for page in (ROOT / "docs").glob("*.md"):
        assert f'"{page.name}"' in nav, f"docs/{page.name} is not in mkdocs.yml's nav"
    for page in PAGES:
        lines = page.read_text().splitlines()
        for n, line in enumerate(lines):
            if MARKER.match(line.strip()):
                assert lines[n + 1].strip() == "```bash", f"{page.name}:{n + 1}: a marker must sit on a ```bash fence"
    assert RUNNABLE, "no example is run"


@pytest.fixture(scope="module")
def project(tmp_path_factory, demo_root) -> tuple[Path, dict[str, str]]:
    """The repository as a newcomer has it after `make install`: the project files (linked), .venv, and the
    demo checkpoints already built (copied from demo_root; the default one under G2U_HOME too)."""
    tmp = tmp_path_factory.mktemp("docs-project")
    work = tmp / "g2u-serve"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in (".git", ".venv", "outputs", "logs", "demo_checkpoints", "mlflow.db", "site", "model_store",
                          "key_file.json") or entry.name.startswith("."):
            continue
        (work / entry.name).symlink_to(entry)
    (work / ".venv").symlink_to(VENV)
    (work / "model_store").mkdir()
    shutil.copytree(demo_root, work / "demo_checkpoints", symlinks=True)
    (tmp / "home").mkdir()
    (tmp / "home" / "demo").symlink_to(demo_root)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "G2U_HOME": str(tmp / "home"),
           "G2U_OUTPUT_DIR": str(work / "outputs"), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    return work, env


@pytest.mark.e2e
@pytest.mark.parametrize("example", RUNNABLE, ids=[ex.id for ex in RUNNABLE])
def test_example_runs(example, project):
    work, env = project
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", example.code], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{example.id} failed ({proc.returncode}):\n{example.code}\n" \
                                 f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def _readme_block(containing: str) -> str:
    [example] = [ex for ex in examples(ROOT / "README.md") if containing in ex.code]
    return example.code


def _fresh_copy(dest: Path) -> Path:
    """What `git clone` of this working tree holds: the tracked and the not-ignored untracked files."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.mark.e2e
def test_readme_quick_start_walks_on_a_fresh_copy(tmp_path, demo_root):
    """`make serve`, the README's REST call and the curl line `make serve` prints, then `make stop`, as
    written, in a fresh copy (`make test` is this suite). The venv is this one (make -o: no reinstall),
    the ports are free ones (G2U_PORTS=free: this machine may serve already), and the demo checkpoint is
    demo_root's (the archive would build the same files)."""
    repo = _fresh_copy(tmp_path / "g2u-serve")
    shutil.copytree(demo_root / "qwen_image_edit", repo / "demo_checkpoints" / "qwen_image_edit")
    stamp = VENV / ".installed-stamp"
    env = {**os.environ, "G2U_PORTS": "free", "HF_HUB_OFFLINE": "1", "G2U_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(repo), "G2U_SERVE_TIMEOUT": "240"}
    prelude = f'make() {{ command make -o "{stamp}" VENV="{VENV}" "$@"; }}\n'
    quick = [line for line in _readme_block("make serve").splitlines() if not line.startswith("make test")]
    serve, stop = quick[0], quick[-1]
    assert serve.startswith("make serve") and stop.startswith("make stop")
    try:
        up = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + serve], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "ok    ports" in up.stdout  # the doctor ran first
        answered = json.loads(up.stdout.split("->  HTTP 200", 1)[1].split("\nthought PNG", 1)[0].split("\n", 1)[1])
        assert answered["model"]["demo"] is True and answered["answer"]

        inference = re.search(r"inference_address=(\S+)", (repo / "logs" / "config.properties").read_text()).group(1)
        rest = _readme_block("curl").replace("http://127.0.0.1:8080", inference)
        printed = up.stdout.split("Try it yourself (the key is read from key_file.json):\n", 1)[1].split("\n\n")[0]
        for code in (rest, printed):
            call = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=repo, env=env, capture_output=True,
                                  text=True, timeout=300)
            assert call.returncode == 0, code + call.stderr
            body = json.loads(call.stdout)
            assert body["model"]["demo"] is True and "meaningless" in body["model"]["note"], body
            assert body["answer"] and not re.search(r"[\x00-\x08\x0b-\x1f\ufffd]", body["answer"])
    finally:
        down = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + stop], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=300)
    assert down.returncode == 0 and "ports free" in down.stdout, down.stdout + down.stderr
