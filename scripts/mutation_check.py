"""Do the golden tests catch real bugs? Apply each mutation to a copy of the code and run the goldens.

    python scripts/mutation_check.py                 # every mutation (several minutes on 2 cores)
    python scripts/mutation_check.py --only shift    # mutations whose name contains "shift"
    python scripts/mutation_check.py --suite qwen    # only those of one golden test file
    python scripts/mutation_check.py --list

Each mutation is one plausible bug written as a text replacement in one source file (the replaced text
must occur exactly ``count`` times, so a mutation that no longer applies fails loudly instead of passing
silently). The repository's ``g2u``, ``tests`` and ``scripts`` are copied to a temporary folder, the
mutation applied there, and the mutation's golden test file run with ``pytest -x``. The unmutated copy
runs first and must pass. Prints a table mutation → caught / NOT caught and exits 1 if any mutation is
not caught (a test error other than a failed assertion counts as not caught).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAGEL = "tests/backends/test_bagel_golden.py"
QWEN = "tests/backends/test_qwen_edit_stock.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: str = BAGEL
    count: int = 1
    more: tuple[tuple[str, str], ...] = ()
    """Further (old, new) replacements in the same file, each occurring exactly once."""


MUTATIONS = (
    # --- named by the issue
    Mutation("think system prompt: one space removed", "g2u/backends/bagel/params.py",
             '"You should first think about the planning process in the mind and then generate the image. \\n"',
             '"You should first think about the planning process in the mind and then generate the image.\\n"'),
    Mutation("timestep shift 3.0 -> 2.5 (sampler)", "g2u/backends/bagel/sampler.py",
             "s = self.timestep_shift", "s = self.timestep_shift - 0.5"),
    Mutation("timestep shift 3.0 -> 3.5 (sampler)", "g2u/backends/bagel/sampler.py",
             "s = self.timestep_shift", "s = self.timestep_shift + 0.5"),
    Mutation("timestep shift -> 1.0 (sampler)", "g2u/backends/bagel/sampler.py",
             "s = self.timestep_shift", "s = 1.0"),
    Mutation("timestep shift default 3.0 -> 2.5", "g2u/backends/bagel/params.py",
             "DEFAULT_TIMESTEP_SHIFT = 3.0", "DEFAULT_TIMESTEP_SHIFT = 2.5"),
    Mutation("text CFG 4.0 -> 4.5 (sampler)", "g2u/backends/bagel/sampler.py",
             "settings.text_cfg * (v - v_text)", "(settings.text_cfg + 0.5) * (v - v_text)", count=2),
    Mutation("text CFG default 4.0 -> 4.5", "g2u/schema.py",
             "text_cfg: float = Field(4.0,", "text_cfg: float = Field(4.5,"),
    Mutation("global renorm instead of text_channel", "g2u/backends/bagel/sampler.py",
             "kind, low = settings.cfg_renorm_type, settings.cfg_renorm_min",
             'kind, low = ("global" if settings.cfg_renorm_type == "text_channel" else settings.cfg_renorm_type), '
             "settings.cfg_renorm_min"),
    Mutation("image guidance on the conditional velocity", "g2u/backends/bagel/sampler.py",
             "out = v_img + settings.image_cfg * (out - v_img)", "out = v_img + settings.image_cfg * (v - v_img)",
             count=2),
    Mutation("think plan cut to one token", "g2u/backends/bagel/backend.py",
             "plan_ids = model.decode(cond.clone(), think_tokens - 1)", "plan_ids = model.decode(cond.clone(), 1)"),
    Mutation("golden token list truncated (decode budget - 1)", "g2u/backends/bagel/model.py",
             "for _ in range(max_new_tokens):", "for _ in range(max(0, max_new_tokens - 1)):"),
    Mutation("rotary base 1e6 -> 1e5", "g2u/backends/bagel/config.py",
             'data.update(tie_word_embeddings=False,',
             'data.update(rope_theta=data["rope_theta"] / 10, tie_word_embeddings=False,'),
    Mutation("MoT: first layer routes latents to the understanding expert", "g2u/backends/bagel/llm.py",
             "x = layer(x, rows, cos, sin, k_buf, v_buf, start, mask, route)",
             "x = layer(x, rows, cos, sin, k_buf, v_buf, start, mask,"
             " None if layer is self.model.layers[0] else route)"),
    Mutation("renorm minimum ignored", "g2u/backends/bagel/sampler.py",
             ".clamp(min=low, max=1.0)", ".clamp(min=0.0, max=1.0)"),
    Mutation("VAE shift 0.1159 -> 0.1", "g2u/backends/bagel/vae.py", "FLUX_SHIFT = 0.1159", "FLUX_SHIFT = 0.1"),
    Mutation("VAE scale 0.3611 -> 0.36", "g2u/backends/bagel/vae.py", "FLUX_SCALE = 0.3611", "FLUX_SCALE = 0.36"),
    # --- more of the same kind
    Mutation("uint8 conversion rounds instead of truncating", "g2u/backends/bagel/backend.py",
             "* 255).to(torch.uint8)", "* 255).round().to(torch.uint8)"),
    Mutation("CFG interval upper bound exclusive", "g2u/backends/bagel/sampler.py",
             "return low < t <= high", "return low < t < high"),
    Mutation("image guidance without text guidance (the old divergence)", "g2u/backends/bagel/sampler.py",
             "return text, text and self.image_cfg > 1.0", "return text, hit and self.image_cfg > 1.0",
             more=(("    if v_text is None:\n        return v\n",
                    "    if v_text is None and v_img is None:\n        return v\n    if v_text is None:\n"
                    "        return v_img + settings.image_cfg * (v - v_img)\n"),)),
    Mutation("image CFG branch never run", "g2u/backends/bagel/sampler.py",
             "return text, text and self.image_cfg > 1.0", "return text, False"),
    Mutation("posterior read at its mean in edits", "g2u/backends/bagel/backend.py",
             "latents = encode_latents(self.vae, pixels, generators)",
             "latents = encode_latents(self.vae, pixels, None)"),
    Mutation("understanding think prompt: one space removed", "g2u/backends/bagel/params.py",
             '"answer. \\nThe reasoning process', '"answer.\\nThe reasoning process'),
    Mutation("think budget counts no start token", "g2u/backends/bagel/backend.py",
             "self.model.decode(cache, max_think_tokens - 1, params.temperature)",
             "self.model.decode(cache, max_think_tokens, params.temperature)"),
    Mutation("timestep fed as 1 - t", "g2u/backends/bagel/model.py",
             "body = self.embed_latents(x_t, grid, torch.full((rows,), t, dtype=torch.float32))",
             "body = self.embed_latents(x_t, grid, torch.full((rows,), 1 - t, dtype=torch.float32))"),
    # --- Qwen-Image-Edit stage I against the stock pipeline
    Mutation("Qwen-Image-Edit: input resized bicubic instead of the processor's lanczos",
             "g2u/backends/qwen_image_edit.py",
             "resample = PIL_INTERPOLATION[self.pipe.image_processor.config.resample]",
             'resample = PIL_INTERPOLATION["bicubic"]', tests=QWEN),
    Mutation("Qwen-Image-Edit: true CFG norm rescale dropped", "g2u/backends/qwen_edit_pipeline.py",
             "noise_pred = comb_pred * (cond_norm / noise_norm)", "noise_pred = comb_pred", tests=QWEN),
    Mutation("Qwen-Image-Edit: CFG scale off by 0.5", "g2u/backends/qwen_edit_pipeline.py",
             "true_cfg_scale * (noise_pred - neg_noise_pred)", "(true_cfg_scale + 0.5) * (noise_pred - neg_noise_pred)",
             tests=QWEN),
)


def copy_tree(dest: Path) -> None:
    for name in ("g2u", "tests", "scripts"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml",):
        shutil.copy2(ROOT / name, dest / name)


def apply(dest: Path, m: Mutation) -> None:
    path = dest / m.path
    text = path.read_text()
    found = text.count(m.old)
    if found != m.count:
        raise SystemExit(f"mutation {m.name!r}: {m.old!r} occurs {found}× in {m.path}, expected {m.count}")
    text = text.replace(m.old, m.new)
    for old, new in m.more:
        if text.count(old) != 1:
            raise SystemExit(f"mutation {m.name!r}: {old!r} occurs {text.count(old)}× in {m.path}, expected 1")
        text = text.replace(old, new)
    path.write_text(text)


def run_tests(dest: Path, tests: str) -> tuple[str, float, str]:
    env = {**os.environ, "PYTHONPATH": str(dest), "HF_HUB_OFFLINE": "1"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", tests],
                          cwd=dest, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    first = failed[0].split("::", 1)[-1] if failed else ""
    if proc.returncode == 0:
        return "NOT caught", took, ""
    if proc.returncode == 1 and failed:
        return "caught", took, first
    return f"error (pytest rc {proc.returncode})", took, proc.stdout[-400:] + proc.stderr[-400:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run the mutations whose name contains this text")
    parser.add_argument("--suite", choices=("all", "bagel", "qwen"), default="all",
                        help="only the mutations of one golden test file")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args()
    suites = {"all": (BAGEL, QWEN), "bagel": (BAGEL,), "qwen": (QWEN,)}[args.suite]
    chosen = [m for m in MUTATIONS if args.only.lower() in m.name.lower() and m.tests in suites]
    if args.list:
        for m in chosen:
            print(f"{m.name}  [{m.path}; {m.tests}]")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tests in sorted({m.tests for m in chosen}):
            base = Path(tmp) / "baseline"
            shutil.rmtree(base, ignore_errors=True)
            copy_tree(base)
            verdict, took, detail = run_tests(base, tests)
            if verdict != "NOT caught":
                raise SystemExit(f"the unmutated copy does not pass {tests}: {verdict}\n{detail}")
            print(f"baseline {tests}: passes ({took:.0f} s)", flush=True)
        for i, m in enumerate(chosen):
            dest = Path(tmp) / f"m{i}"
            copy_tree(dest)
            apply(dest, m)
            verdict, took, detail = run_tests(dest, m.tests)
            shutil.rmtree(dest)
            rows.append((m.name, verdict, detail if verdict == "caught" else detail[-200:]))
            print(f"{m.name}: {verdict} ({took:.0f} s) {detail if verdict == 'caught' else ''}", flush=True)
    print("\n| mutation | result | first failing test |\n| --- | --- | --- |")
    for name, verdict, detail in rows:
        print(f"| {name} | {verdict} | {detail if verdict == 'caught' else ''} |")
    sys.exit(0 if all(v == "caught" for _, v, _ in rows) else 1)


if __name__ == "__main__":
    main()
