"""The ``g2u`` command: ``g2u predict``, ``g2u demo build``, ``g2u prompts``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from g2u.errors import CheckpointError, InputError


def _predict(args: argparse.Namespace) -> int:
    from g2u.images import load_image
    from g2u.pipeline import G2UPipeline
    from g2u.requests import parse_request
    from g2u.types import ALL_MODES

    fields = {"question": args.question, "mode": args.mode, "prompt": args.prompt, "prompt_name": args.prompt_name,
              "family": args.family, "writer": args.writer, "steps": args.steps, "text_cfg": args.text_cfg,
              "image_cfg": args.image_cfg, "seed": args.seed, "edit_size": args.edit_size,
              "max_new_tokens": args.max_new_tokens, "order": args.order, "options": args.options,
              "think": args.think}
    fields = {k: v for k, v in fields.items() if v is not None}
    # Validate the input before paying for a model load; the backend checks its own modes after.
    request = parse_request(fields, modes=ALL_MODES, image=load_image(args.image))
    start = time.perf_counter()
    pipe = G2UPipeline.from_checkpoint(args.checkpoint, args.backend, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - start
    pipe.check(request)
    start = time.perf_counter()
    [result] = pipe([request])
    out = result.to_dict()
    out["timings_ms"]["load_model"] = round(load_s * 1000, 2)
    out["timings_ms"]["predict_wall"] = round((time.perf_counter() - start) * 1000, 2)
    if result.thought is not None:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"thought-{Path(args.image).stem}-{result.mode}-seed{request.edit.seed}.png"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="g2u", description="Generation-to-Understanding inference")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="answer one question about one image, printing JSON")
    p.add_argument("--checkpoint", help="checkpoint folder or hub id (default: the embedded demo checkpoint)")
    p.add_argument("--backend", choices=["qwen_image_edit", "decoupled", "bagel"],
                   help="default: detected from the folder")
    p.add_argument("--image", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--options", help='JSON list of options, e.g. \'["red", "blue"]\'')
    p.add_argument("--mode", default="g2u")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompt-name", dest="prompt_name")
    group.add_argument("--prompt")
    p.add_argument("--family", choices=["enhancement", "extension"])
    p.add_argument("--writer", default="library", choices=["library", "openai", "self"])
    p.add_argument("--steps", type=int)
    p.add_argument("--text-cfg", dest="text_cfg", type=float)
    p.add_argument("--image-cfg", dest="image_cfg", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--edit-size", dest="edit_size", help="WIDTHxHEIGHT (default: input aspect at ~512² area)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    p.add_argument("--think", action="store_true", default=None, help="BAGEL: plan in text before editing")
    p.add_argument("--order", help="answer-prompt order for g2u, e.g. 'I,q,T' (the paper's) or 'I,T,q'")
    p.add_argument("--device")
    p.add_argument("--dtype")
    p.add_argument("--out", default="outputs", help="folder for the thought PNG")
    p.set_defaults(func=_predict)

    demo = sub.add_parser("demo", help="demo checkpoints").add_subparsers(dest="demo_command", required=True)
    b = demo.add_parser("build", help="write tiny random checkpoints of the real architectures")
    b.add_argument("dir")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--backend", action="append", help="only these (repeatable)")
    b.set_defaults(func=_demo_build)

    pr = sub.add_parser("prompts", help="list the edit-prompt library")
    pr.add_argument("--library", help="a prompt library YAML (default: the shipped one)")
    pr.set_defaults(func=_prompts)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(json.dumps(exc.to_dict()), file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(json.dumps({"error": "checkpoint", "reason": str(exc)}), file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
