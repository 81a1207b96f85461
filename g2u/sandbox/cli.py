"""CLI wiring for ``g2u sandbox build|report`` and ``g2u demo train`` (the lead hooks these into g2u/cli.py).

    add_commands(sub)          # sub: the top-level subparsers → ``g2u sandbox ...``
    add_demo_train(demo_sub)   # demo_sub: the ``g2u demo`` subparsers → ``g2u demo train``

Each parser sets ``func`` to a handler taking the parsed args and returning an exit code, like the
other g2u commands.
"""

from __future__ import annotations

import argparse
import json
import sys

from g2u.sandbox.report import CONDITIONS, ReportConfig
from g2u.sandbox.train import TrainConfig


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def add_commands(subparsers) -> None:
    """Add ``sandbox build`` and ``sandbox report`` to the top-level subparsers."""
    sandbox = subparsers.add_parser("sandbox", help="the leak-free G→U sandbox (known effect by construction)")
    sub = sandbox.add_subparsers(dest="sandbox_command", required=True)

    b = sub.add_parser("build", help="draw N degraded scenes with questions, oracle thoughts and a manifest")
    b.add_argument("dir", help="folder to write (a benchmark folder: evaluate reads it as is)")
    b.add_argument("--n", type=_positive, default=280, help="number of samples")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_build)

    r = sub.add_parser("report", help="accuracy per degradation and condition, with 95%% intervals")
    r.add_argument("--out", required=True, help="output folder (sandbox and trained answerer reused from here)")
    r.add_argument("--sandbox", default=None, help="an existing sandbox folder (default: OUT/sandbox, built)")
    r.add_argument("--checkpoint", default=None,
                   help="a trained demo checkpoint (default: OUT/qwen_image_edit_trained, trained)")
    r.add_argument("--n", type=_positive, default=ReportConfig.n)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--editor-steps", type=_positive, default=ReportConfig.editor_steps,
                   help="denoising steps of the demo editor's thoughts")
    r.add_argument("--conditions", default=",".join(CONDITIONS), help=f"comma list of {', '.join(CONDITIONS)}")
    r.add_argument("--train-steps", type=_positive, default=TrainConfig.steps)
    r.set_defaults(func=_report)


def add_demo_train(demo_subparsers) -> None:
    """Add ``demo train`` to the ``g2u demo`` subparsers."""
    t = demo_subparsers.add_parser("train", help="train the qwen_image_edit demo's answerer on sandbox scenes (CPU)")
    t.add_argument("out", help="checkpoint folder to write (e.g. ~/.cache/g2u/demo/qwen_image_edit_trained)")
    t.add_argument("--steps", type=_positive, default=TrainConfig.steps)
    t.add_argument("--batch-size", type=_positive, default=TrainConfig.batch_size)
    t.add_argument("--lr", type=float, default=TrainConfig.lr)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-seconds", type=float, default=TrainConfig.max_seconds,
                   help="stop (and save) after this long whatever --steps says")
    t.set_defaults(func=_train)


def _conditions(text: str) -> tuple[str, ...]:
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in names if c not in CONDITIONS]
    if unknown or not names:
        raise SystemExit(f"g2u: error: --conditions: unknown {unknown or 'empty'}; choose from {', '.join(CONDITIONS)}")
    return names


def _build(args) -> int:
    from g2u.sandbox.build import build_sandbox

    print(json.dumps(build_sandbox(args.dir, args.n, args.seed)))
    return 0


def _report(args) -> int:
    from g2u.sandbox.report import run_report

    config = ReportConfig(n=args.n, seed=args.seed, editor_steps=args.editor_steps,
                          conditions=_conditions(args.conditions))
    summary = run_report(args.out, config, sandbox=args.sandbox, checkpoint=args.checkpoint,
                         train_config=TrainConfig(steps=args.train_steps), log=lambda m: print(m, file=sys.stderr))
    print(summary["table_text"])
    return 0


def _train(args) -> int:
    from g2u.sandbox.train import train_demo_answerer

    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         max_seconds=args.max_seconds)
    train_demo_answerer(args.out, config, log=lambda m: print(m, file=sys.stderr))
    return 0
