"""`mlflow run . -e benchmark`: ``g2u bench`` with its numbers logged to MLflow.

Metrics: per stage ``stock_ms.<stage>``, ``fast_ms.<stage>``, ``speedup.<stage>``, ``end_to_end_speedup``,
``decode_ms_per_token.{stock,fast}``, the drift (``drift.thought_ssim``, ``drift.thought_psnr``,
``drift.answer_logit_rel_err``), and with ``flops`` the ledger (``ledger.<stage>.tflop``, ``.gb``,
``.floor_s``). The full report is the artifact ``bench.json``; the printed table is ``bench.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlflow_project.common import log_params, opt, opt_int, setup_tracking

TRUE = ("1", "true", "yes", "on")


def metrics_of(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as flat MLflow metrics (None and non-finite values left out)."""
    out: dict[str, float] = {}
    for stage, row in report.get("stages_ms", {}).items():
        out[f"stock_ms.{stage}"] = row["stock"]
        out[f"fast_ms.{stage}"] = row["fast"]
        if row["speedup"]:
            out[f"speedup.{stage}"] = row["speedup"]
    if "end_to_end_speedup" in report:
        out["end_to_end_speedup"] = report["end_to_end_speedup"]
    for key, value in report.get("decode_ms_per_token", {}).items():
        out[f"decode_ms_per_token.{key}"] = value
    drift = report.get("drift")
    if drift:
        out["drift.thought_ssim"] = drift["thought_vs_stock"]["ssim"]
        out["drift.thought_psnr"] = drift["thought_vs_stock"]["psnr"]
        out["drift.thought_max_abs_diff"] = drift["thought_max_abs_diff"]
        out["drift.answer_logit_rel_err"] = drift["answer_logit_rel_err_max"]
        out["drift.answer_tokens_equal"] = drift["answer_tokens_equal"]
    for key, value in report.get("compile", {}).items():
        out[f"compile.{key}"] = value
    ledger = report.get("ledger")
    if ledger:
        for stage, t in ledger["stages"].items():
            out[f"ledger.{stage}.tflop"] = t["flops"] / 1e12
            out[f"ledger.{stage}.gb"] = t["bytes"] / 1e9
            out[f"ledger.{stage}.floor_s"] = t["floor_s"]
            if "fraction_of_floor" in t:
                out[f"ledger.{stage}.fraction_of_floor"] = t["fraction_of_floor"]
        out["ledger.total_floor_s"] = ledger["total_floor_s"]
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and abs(float(v)) != float("inf")}


def bench_argv(args: argparse.Namespace) -> list[str]:
    """MLproject parameters (strings, '' for unset) as ``g2u bench`` arguments."""
    argv = ["--size", args.size, "--backend", args.backend, "--reps", str(opt_int(args.reps) or 3),
            "--warmup", str(int(float(args.warmup or 0))), "--accelerator", args.accelerator,
            "--static-cache", args.static_cache, "--compile-decode", args.compile_decode]
    for flag, value in (("--device", opt(args.device)), ("--edit-size", opt(args.edit_size)),
                        ("--steps", opt_int(args.steps)), ("--tokens", opt_int(args.tokens)),
                        ("--step-cache", opt(args.step_cache)), ("--attention-backend", opt(args.attention_backend))):
        if value is not None:
            argv += [flag, str(value)]
    for flag, value in (("--flops", args.flops), ("--flops-only", args.flops_only),
                        ("--compile-blocks", args.compile_blocks)):
        if str(value).lower() in TRUE:
            argv.append(flag)
    return argv


def main(argv: list[str] | None = None) -> int:
    import mlflow

    from g2u.bench.cli import add_arguments, config_from_args
    from g2u.bench.runner import format_report, run_bench
    from g2u.errors import InputError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("size", "tiny"), ("backend", "qwen_image_edit"), ("device", ""), ("edit_size", ""),
                          ("steps", ""), ("tokens", ""), ("reps", "3"), ("warmup", "1"), ("flops", "false"),
                          ("flops_only", "false"), ("accelerator", "h100-sxm"), ("static_cache", "auto"),
                          ("compile_decode", "auto"), ("compile_blocks", "false"), ("step_cache", ""),
                          ("attention_backend", "")):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default)
    args = p.parse_args(argv)
    bench = argparse.ArgumentParser(prog="g2u bench")
    add_arguments(bench)
    try:
        config = config_from_args(bench.parse_args(bench_argv(args)))
        setup_tracking()
        with mlflow.start_run():
            report = run_bench(config)
            log_params({"bench." + k: v for k, v in report["config"].items() if k != "fast"}
                       | {"fast." + k: v for k, v in report["config"]["fast"].items()}
                       | {"machine." + k: v for k, v in report["machine"].items()})
            mlflow.log_metrics(metrics_of(report))
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
                (Path(tmp) / "bench.txt").write_text(format_report(report) + "\n")
                mlflow.log_artifacts(tmp)
    except InputError as exc:
        print(json.dumps(exc.to_dict()), file=sys.stderr)
        return 2
    print(format_report(report), file=sys.stderr)
    print(json.dumps(metrics_of(report), indent=2))
    return 0


if __name__ == "__main__":
    from g2u.entry import run_guarded

    sys.exit(run_guarded(main))  # one-line errors; --debug or G2U_DEBUG=1: the traceback
