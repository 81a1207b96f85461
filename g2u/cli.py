"""The ``g2u`` command: ``g2u predict``, ``g2u demo build|train``, ``g2u sandbox build|report``, ``g2u prompts``,
``g2u eval score FILE``, ``g2u bench``, ``g2u doctor``, ``g2u ui``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from g2u.loading import LoaderOptions, add_loader_arguments
from g2u.schema import add_request_arguments


def _predict(args: argparse.Namespace) -> int:
    from g2u.batch import RawItem, run_batch
    from g2u.images import load_image
    from g2u.schema import FIELD_NAMES, validate_fields

    fields = {name: getattr(args, name) for name in FIELD_NAMES if getattr(args, name, None) is not None}
    image = load_image(args.image)
    if args.thought:  # a thought brought by the caller, read by the same bounded loader as the image
        fields["thought"] = load_image(args.thought, field="thought")
    # Validate the input and the loader options before paying for a model load; the backend checks its
    # own modes after.
    validate_fields({k: v for k, v in fields.items() if k not in ("image", "thought")})
    options = LoaderOptions.from_namespace(args)
    start = time.perf_counter()
    pipe = options.load()  # no --checkpoint: the embedded demo checkpoint (g2u.checkpoints)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    [outcome] = run_batch(pipe, [RawItem(fields, image)])
    if not outcome.ok:
        print(json.dumps(outcome.error), file=sys.stderr)
        return 2 if outcome.status < 500 else 1
    result = outcome.result
    out = result.to_dict()
    out["timings_ms"]["load_model"] = round(load_s * 1000, 2)
    out["timings_ms"]["predict_wall"] = round((time.perf_counter() - start) * 1000, 2)
    if result.thought is not None:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"thought-{Path(args.image).stem}-{result.mode}-seed{result.thought.edit.seed}.png"
        result.thought.image.save(path)
        out["thought_path"] = str(path)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _demo_build(args: argparse.Namespace) -> int:
    from g2u.demo import DEMO_BACKENDS, build_demo_checkpoints

    start = time.perf_counter()
    built = build_demo_checkpoints(args.dir, seed=args.seed, backends=tuple(args.backend or DEMO_BACKENDS))
    print(json.dumps({"built": {k: str(v) for k, v in built.items()},
                      "seconds": round(time.perf_counter() - start, 2)}, indent=2))
    return 0


def _prompts(args: argparse.Namespace) -> int:
    from g2u.prompts import PromptLibrary

    lib = PromptLibrary.load(args.library)
    rows = [{"name": p.name, "family": p.family, "purpose": p.purpose, "text": p.text} for p in lib.prompts.values()]
    print(json.dumps({"version": lib.version, "defaults": lib.family_defaults, "prompts": rows}, indent=2))
    return 0


def _eval_score(args: argparse.Namespace) -> int:
    from g2u.eval.vlmevalkit_io import score_summary

    summary = score_summary(args.file, args.mode, args.answer_judge, args.protocol)
    if not args.all:
        summary["metrics"] = {k: v for k, v in summary["metrics"].items() if k.count("/") <= 2}
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="g2u", description="Generation-to-Understanding inference")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (default: one line)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="answer one question about one image, printing JSON",
                       description="Every request field of the REST API is an option here (g2u.schema).")
    p.add_argument("--image", required=True, help="path of the input picture")
    add_request_arguments(p, exclude=("image", "return_thought", "thought", "stream"), required=("question",))
    p.add_argument("--thought", help="path of a thought image to answer with instead of generating one")
    add_loader_arguments(p)  # --checkpoint --backend --device --dtype --offload --quantize (g2u.loading)
    p.add_argument("--out", default="outputs", help="folder for the thought PNG")
    p.set_defaults(func=_predict)

    demo = sub.add_parser("demo", help="demo checkpoints").add_subparsers(dest="demo_command", required=True)
    b = demo.add_parser("build", help="write tiny random checkpoints of the real architectures")
    b.add_argument("dir")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--backend", action="append", help="only these (repeatable)")
    b.set_defaults(func=_demo_build)

    from g2u.sandbox.cli import add_commands as add_sandbox_commands
    from g2u.sandbox.cli import add_demo_train

    add_demo_train(demo)  # g2u demo train OUT: the tiny answerer trained on sandbox scenes
    add_sandbox_commands(sub)  # g2u sandbox build DIR / g2u sandbox report --out DIR
    from g2u.bench.cli import add_command as add_bench_command

    add_bench_command(sub)  # g2u bench --size tiny|small|real [--flops]
    from g2u.doctor import add_command as add_doctor_command
    from g2u.ui import add_command as add_ui_command

    add_doctor_command(sub)  # g2u doctor [--checkpoint PATH]: what this machine lacks, one line per check
    add_ui_command(sub)  # g2u ui [--endpoint URL]: a web page against a running endpoint

    ev = sub.add_parser("eval", help="evaluation tools").add_subparsers(dest="eval_command", required=True)
    sc = ev.add_parser("score", help="score a VLMEvalKit prediction file ({model}_{dataset}.xlsx) with our protocol")
    sc.add_argument("file", help="the prediction file (.xlsx, .tsv or .csv with index, question, prediction, ...)")
    sc.add_argument("--mode", default="baseline", help="the mode name the metrics are reported under")
    sc.add_argument("--all", action="store_true", help="every metric (default: the top-level ones)")
    sc.add_argument("--answer-judge", dest="answer_judge", default="exact_matching",
                    help="exact_matching (default) or openai[:MODEL]: a judge reads what exact matching cannot")
    sc.add_argument("--protocol", default="vlmevalkit", help="the protocol whose judge prompts are used")
    sc.set_defaults(func=_eval_score)

    pr = sub.add_parser("prompts", help="list the edit-prompt library")
    pr.add_argument("--library", help="a prompt library YAML (default: the shipped one)")
    pr.set_defaults(func=_prompts)
    return parser


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """Errors are one JSON line on stderr (g2u.entry); ``--debug`` shows the traceback instead."""
    from g2u.entry import run_guarded

    return run_guarded(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
