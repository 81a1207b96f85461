"""`mlflow run . -e learn_routes`: learn the router's table (``writer: route``) from an ablation run.

Reads an evaluation's predictions.jsonl (the ablation's shared output folder holds the baseline and every
library-prompt G→U row), and keeps, per question type, the library prompt with the largest positive accuracy
gain over the same samples' baseline (``g2u.router.learn``). Writes the versioned YAML (default: a new file in
the run's artifacts; ``--out g2u/data/routes.yaml`` replaces the shipped table) and logs each route's delta.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mlflow_project.common import OUTPUT_DIR, log_params, opt, setup_tracking


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--predictions", required=True, help="predictions.jsonl of an ablation/evaluation run")
    p.add_argument("--version", required=True, help="version of the new table (e.g. 0.2.0)")
    p.add_argument("--out", default="", help="where to write the YAML (default: outputs/routes/routes.yaml)")
    p.add_argument("--min-n", default="20", help="fewest paired samples a route needs")
    p.add_argument("--run-name", default="")
    return p


def main(argv: list[str] | None = None) -> int:
    import mlflow

    from g2u.prompts import default_library
    from g2u.router import RouteTable, learn, write_table

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    setup_tracking()
    source = Path(args.predictions)
    if not source.is_file():
        raise SystemExit(f"--predictions: no file at {source}")
    records = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    library = default_library()
    shipped = RouteTable.load(library=library)
    out = Path(opt(args.out) or OUTPUT_DIR / "routes" / "routes.yaml")
    out.parent.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(run_name=opt(args.run_name) or "learn_routes") as run:
        table = learn(records, library, version=args.version,
                      source=f"learned from {source} (mlflow run {run.info.run_id}), library {library.version}",
                      min_n=int(float(args.min_n)), default=shipped.default)
        write_table(table, out)
        log_params({"predictions": str(source), "version": args.version, "min_n": args.min_n,
                    "n_records": len(records), "library_version": library.version})
        mlflow.log_metrics({f"delta/{qtype}": r.delta for qtype, r in table.routes.items() if r.delta is not None})
        mlflow.log_artifact(str(out))
        print(json.dumps({"out": str(out), **table.to_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    from g2u.entry import run_guarded

    sys.exit(run_guarded(main))  # one-line errors; --debug or G2U_DEBUG=1: the traceback
