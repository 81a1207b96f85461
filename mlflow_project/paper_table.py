"""`mlflow run . -e paper_table -P benchmarks=A,B,...`: the paper's main and ablation tables from our runs.

Each benchmark is one evaluation (``mlflow_project.evaluate``, a nested run) in baseline, G→U and every
ablation mode the backend offers (``g2u.modes``); the parent run logs one table (``paper_table.md``,
``paper_table.json``, ``paper_table/<column>/<mode>/…`` metrics) with the paper's numbers beside ours and each
cell's protocol, judges, n and 95 % interval (``g2u.eval.paper_table``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from g2u.errors import InputError
from mlflow_project.common import OUTPUT_DIR, log_params, opt, setup_tracking
from mlflow_project.evaluate import build_parser as evaluate_parser
from mlflow_project.evaluate import metric_name, run_full


def build_parser() -> argparse.ArgumentParser:
    p = evaluate_parser()
    p.description = __doc__
    p.add_argument("--benchmarks", default="", help="comma list of benchmark files/folders (any --benchmark form)")
    return p


def table_modes(backend: str | None, wanted: str | None = None) -> list[str]:
    """Baseline, G→U and the ablation modes ``backend`` offers (an endpoint, backend unknown: the modes every
    backend offers), or the ``wanted`` ones among them; baseline is always there (Δ is against it)."""
    from g2u.modes import MODES, modes_for

    offered = list(modes_for(backend)) if backend else [m for m, spec in MODES.items() if spec.backends is None]
    if not wanted:
        return offered
    chosen = [m.strip() for m in wanted.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in offered]
    if unknown:
        raise InputError("modes", f"{', '.join(unknown)} not offered by backend {backend or 'unknown'}; "
                                  f"offered: {', '.join(offered)}")
    return [m for m in offered if m in {"baseline", *chosen}]


def main(argv: list[str] | None = None) -> int:
    import mlflow

    from g2u.eval.paper_table import build_tables, cell, flat_metrics, to_markdown
    from mlflow_project.ablation import predictor_backend

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    setup_tracking()
    benchmarks = [b.strip() for b in (args.benchmarks or "").split(",") if b.strip()]
    try:
        if not benchmarks:
            raise InputError("benchmarks", "give a comma-separated list of benchmark files or folders")
        backend = predictor_backend(args)
        modes = table_modes(backend, opt(args.modes) if args.modes != "baseline,g2u" else None)
    except InputError as exc:
        print(json.dumps(exc.to_dict()), file=sys.stderr)
        return 2
    out_root = Path(opt(args.out_dir) or OUTPUT_DIR / "paper_table")
    out_root.mkdir(parents=True, exist_ok=True)
    runs = []
    with mlflow.start_run(run_name=opt(args.run_name) or "paper_table") as parent:
        log_params({"benchmarks": ",".join(benchmarks), "table_modes": ",".join(modes), "backend": backend or "unknown",
                    "checkpoint": args.checkpoint, "endpoint": args.endpoint})
        for i, benchmark in enumerate(benchmarks):
            row_args = argparse.Namespace(**{**vars(args), "benchmark": benchmark, "modes": ",".join(modes),
                                             "out_dir": str(out_root / f"{i}-{Path(benchmark.rstrip('/')).stem}"),
                                             "run_name": Path(benchmark.rstrip("/")).stem})
            try:
                done = run_full(row_args, nested=True)
            except InputError as exc:
                print(json.dumps(exc.to_dict()), file=sys.stderr)
                return 2
            judges = {"answer_judge": done["judges"]["answer_judge_label"], "judge": done["judges"]["judge_label"]}
            protocol = done["protocol"]["protocol_label"]
            runs.append({"benchmark": benchmark, "protocol": protocol, "judges": judges, "run_id": done["run_id"],
                         "cells": {m: cell(done["records"], benchmark, m, protocol, judges) for m in modes}})
        tables = build_tables(runs)
        markdown = to_markdown(tables)
        (out_root / "paper_table.md").write_text(markdown)
        (out_root / "paper_table.json").write_text(json.dumps({"tables": tables, "runs": [
            {k: r[k] for k in ("benchmark", "protocol", "judges", "run_id")} for r in runs]}, indent=2))
        mlflow.log_metrics({metric_name(k): v for k, v in flat_metrics(tables).items()})
        mlflow.log_artifact(str(out_root / "paper_table.md"))
        mlflow.log_artifact(str(out_root / "paper_table.json"))
        mlflow.set_tag("mlflow.note.content", markdown)
        print(markdown)
        print(json.dumps({"parent_run_id": parent.info.run_id}))
    return 0


if __name__ == "__main__":
    from g2u.entry import run_guarded

    sys.exit(run_guarded(main))  # one-line errors; --debug or G2U_DEBUG=1: the traceback
