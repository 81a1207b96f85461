"""``g2u bench``: wired into ``g2u/cli.py`` with ``add_command(subparsers)``.

Prints the JSON report on stdout (``--json-out`` writes it to a file too) and a readable table on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from g2u.errors import InputError


def _tristate(value: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[value]


def _edit_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise InputError("edit_size", f"expected WIDTHxHEIGHT, got {text!r}") from exc
    return w, h


def config_from_args(args: argparse.Namespace):
    """The ``BenchConfig`` the parsed arguments ask for (validated later by ``run_bench``)."""
    from g2u.bench.runner import BenchConfig
    from g2u.fastpath import FastPath

    fast = FastPath(vision_reuse=not args.no_vision_reuse, static_cache=_tristate(args.static_cache),
                    compile_decode=_tristate(args.compile_decode), compile_blocks=args.compile_blocks,
                    attention_backend=args.attention_backend, step_cache=args.step_cache)
    return BenchConfig(size=args.size, backend=args.backend, device=args.device, dtype=args.dtype,
                       edit_size=_edit_size(args.edit_size) if args.edit_size else None, steps=args.steps,
                       text_cfg=args.text_cfg, answer_tokens=args.tokens, reps=args.reps, warmup=args.warmup,
                       seed=args.seed, fast=fast, flops=args.flops, flops_only=args.flops_only,
                       accelerator=args.accelerator)


def run(args: argparse.Namespace) -> int:
    import logging

    from g2u.bench.runner import format_report, run_bench

    logging.getLogger("g2u.bench").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    report = run_bench(config_from_args(args))
    text = json.dumps(report, indent=2, default=str)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(format_report(report), file=sys.stderr)
    print(text)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from g2u.bench.ledger import ACCELERATORS
    from g2u.bench.runner import BACKENDS, DEFAULTS
    from g2u.bench.sizes import SIZES
    from g2u.schema import field_default

    def per_size(i: int, show=str) -> str:
        return " / ".join(show(DEFAULTS[s][i]) for s in SIZES)

    p.add_argument("--size", choices=SIZES, default="tiny",
                   help="tiny: the demo; small: real depth, reduced width; real: the released configs (GPU, or "
                        "--flops-only anywhere)")
    p.add_argument("--backend", choices=BACKENDS, default="qwen_image_edit")
    p.add_argument("--device", help="default: cuda when present, else cpu")
    p.add_argument("--dtype", help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--edit-size", help="WIDTHxHEIGHT (default per size: "
                                       + per_size(0, lambda wh: f"{wh[0]}x{wh[1]}") + ")")
    p.add_argument("--steps", type=int, help=f"denoising steps (default per size: {per_size(1)})")
    p.add_argument("--text-cfg", type=float, default=field_default("text_cfg"), help="(default: %(default)s)")
    p.add_argument("--tokens", type=int, help=f"answer tokens (default per size: {per_size(2)})")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flops", action="store_true", help="add the FLOP/byte ledger and floors")
    p.add_argument("--flops-only", action="store_true", help="only the ledger (meta device, nothing allocated)")
    p.add_argument("--accelerator", choices=sorted(ACCELERATORS), default="h100-sxm")
    p.add_argument("--no-vision-reuse", action="store_true", help="encode I again wherever it appears")
    p.add_argument("--static-cache", choices=["auto", "on", "off"], default="auto",
                   help="static KV cache for answers (auto: on with CUDA)")
    p.add_argument("--compile-decode", choices=["auto", "on", "off"], default="auto",
                   help="compiled decoding step (auto: on with the static cache on CUDA)")
    p.add_argument("--compile-blocks", action="store_true", help="regional compile of the repeated blocks")
    p.add_argument("--attention-backend", help="diffusers attention backend for the transformer")
    p.add_argument("--step-cache", type=float, help="fast mode: First-Block-Cache threshold, e.g. 0.05")
    p.add_argument("--json-out", help="also write the JSON report here")
    p.set_defaults(func=run)


def add_command(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``g2u`` command's subparsers."""
    p = subparsers.add_parser("bench", help="time every stage against the stock path; FLOP ledger")
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m g2u.bench.cli`` (until ``g2u bench`` is wired)."""
    parser = argparse.ArgumentParser(prog="g2u bench")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(json.dumps(exc.to_dict()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
