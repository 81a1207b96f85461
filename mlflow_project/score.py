"""`mlflow run . -e score -P file=PRED.xlsx`: score a VLMEvalKit prediction file with this project's protocol
(``g2u eval score FILE`` without MLflow), logging the metrics and the protocol that made them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from g2u.errors import InputError
from mlflow_project.common import log_params, setup_tracking


def main(argv: list[str] | None = None) -> int:
    import mlflow

    from g2u.eval.vlmevalkit_io import score_summary
    from mlflow_project.evaluate import metric_name

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--file", required=True, help="a VLMEvalKit prediction file ({model}_{dataset}.xlsx/.tsv/.csv)")
    p.add_argument("--mode", default="baseline", help="the mode name its metrics are logged under")
    p.add_argument("--answer-judge", dest="answer_judge", default="exact_matching",
                   help="exact_matching or openai[:MODEL] (reads what exact matching cannot)")
    p.add_argument("--protocol", default="vlmevalkit", help="the protocol whose judge prompts are used")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    setup_tracking()
    try:
        summary = score_summary(args.file, args.mode, args.answer_judge, args.protocol)
    except InputError as exc:
        print(json.dumps(exc.to_dict()), file=sys.stderr)
        return 2
    with mlflow.start_run(run_name=f"score {Path(args.file).name}"):
        log_params({"file": args.file, "mode": args.mode, **summary["params"]})
        mlflow.log_metrics({metric_name(k): v for k, v in summary["metrics"].items()})
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    from g2u.entry import run_guarded

    sys.exit(run_guarded(main))  # one-line errors; --debug or G2U_DEBUG=1: the traceback
