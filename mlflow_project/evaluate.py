"""`mlflow run . -e evaluate`: G→U vs baseline on a benchmark file, logged to MLflow.

Predictions are appended to ``<out_dir>/predictions.jsonl`` as they come; rerunning the same command
resumes there and recomputes nothing (the output folder is derived from the settings).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from g2u.errors import InputError
from mlflow_project.common import OUTPUT_DIR, log_params, opt, opt_int, setup_tracking


def build_parser() -> argparse.ArgumentParser:
    from g2u.loading import add_loader_arguments
    from g2u.modes import DEFAULT_EVAL_MODES, MODES
    from g2u.schema import PER_SAMPLE_FIELDS, add_request_arguments

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--benchmark", default="sample", help="file/folder (JSONL, VLMEvalKit TSV, MM-Vet JSON), "
                                                         "'easy-vqa' or 'sample'")
    p.add_argument("--modes", default=",".join(DEFAULT_EVAL_MODES),
                   help=f"comma list of g2u.modes ({', '.join(MODES)}; vae_concat on BAGEL)")
    # --checkpoint --backend --device --dtype --offload --quantize ('' = unset; g2u.loading)
    add_loader_arguments(p)
    p.add_argument("--limit", default="0")
    p.add_argument("--batch-size", dest="batch_size", default="4")
    p.add_argument("--endpoint", default="", help="TorchServe predictions URL: send requests there instead")
    p.add_argument("--executor", default="local", help="local (this process) or ray (Ray Data actors, each with a "
                                                       "pipeline; the driver alone writes predictions)")
    p.add_argument("--ray-address", dest="ray_address", default="", help="a Ray cluster (ray://host:10001, auto); "
                                                                         "default: a local Ray")
    p.add_argument("--ray-actors", dest="ray_actors", default="1", help="Ray actors (one pipeline, one GPU each)")
    p.add_argument("--token", default="", help="inference token for --endpoint (default: $G2U_TOKEN)")
    p.add_argument("--out-dir", dest="out_dir", default="", help="default: outputs/eval/<benchmark>-<settings>")
    p.add_argument("--run-name", dest="run_name", default="")
    p.add_argument("--fidelity-judge", dest="fidelity_judge", default="",
                   help="judged fidelity (VIEScore) of each thought: none, openai, openai:MODEL (OpenAI-compatible "
                        "endpoint) or self (the model's own understanding pathway); cached in the output folder")
    p.add_argument("--protocol", default="vlmevalkit",
                   help="evaluation protocol: vlmevalkit (the paper's harness), bagel_readme (BAGEL's README "
                        "numbers), g2u_v1 (this project's first prompt) or a protocol YAML (g2u/data/protocols)")
    p.add_argument("--judge", default="",
                   help="open answers (MM-Vet): openai or openai:MODEL grades them 0-1 as MM-Vet's grader "
                        "(OPENAI_BASE_URL/OPENAI_API_KEY, model $G2U_JUDGE_MODEL or gpt-4o-mini); without a key the "
                        "rule score stands and the run records judge none")
    p.add_argument("--answer-judge", dest="answer_judge", default="exact_matching",
                   help="MCQ and yes/no answers exact matching cannot read: exact_matching (a miss; offline) or "
                        "openai / openai:MODEL (the protocol's judge prompts, as VLMEvalKit; model $G2U_JUDGE_MODEL "
                        "or the protocol's reference model); cached in the output folder")
    # Every other request field of g2u.schema is an evaluation setting ('' = the schema's default).
    add_request_arguments(p, exclude=PER_SAMPLE_FIELDS, bool_flags=False)
    return p


def config_from_args(args: argparse.Namespace):
    from g2u.eval.runner import EvalConfig
    from g2u.schema import SETTING_FIELDS

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    return EvalConfig.create(modes, protocol=opt(getattr(args, "protocol", None)) or "vlmevalkit",
                             **{name: getattr(args, name, None) for name in SETTING_FIELDS})


def make_predictor(args: argparse.Namespace):
    """One predictor per model: the ablation's rows share it, so a multi-GB checkpoint loads once."""
    from g2u.loading import LoaderOptions

    return _predictor(opt(args.endpoint), opt(args.token) or os.environ.get("G2U_TOKEN"),
                      LoaderOptions.from_namespace(args), opt(args.executor) or "local", opt(args.ray_address),
                      int(float(args.ray_actors or 1)))


@functools.lru_cache(maxsize=2)
def _predictor(endpoint: str | None, token: str | None, options, executor: str, ray_address: str | None,
               ray_actors: int):
    from g2u.eval.predictors import EndpointPredictor

    checkpoint, backend, load = options.checkpoint, options.backend, options.load_kwargs()
    if endpoint:
        return EndpointPredictor(endpoint, token=token, backend=backend)
    from g2u.eval.ray_executor import RayPredictor, local_predictor, model_label

    if executor == "ray":  # actors each hold one pipeline (one GPU each where there are GPUs)
        import torch

        fit = {k: v for k, v in load.items() if k in ("quantize", "offload", "dtype") and v is not None}
        label = model_label(checkpoint, backend, **fit)
        return RayPredictor(functools.partial(local_predictor, checkpoint, backend, **load), label,
                            address=ray_address, concurrency=ray_actors,
                            num_gpus=1 if torch.cuda.is_available() else 0)
    if executor != "local":
        raise InputError("executor", f"must be local or ray, got {executor!r}")
    # A quantized, offloaded or other-dtype model never resumes into the full-precision model's predictions:
    # its identity label says so (g2u.identity), and the label is part of the resume key.
    return local_predictor(checkpoint, backend, **load)


def default_out_dir(args: argparse.Namespace, config) -> Path:
    name = Path(args.benchmark.rstrip("/")).stem or "benchmark"
    settings = json.dumps([config.key(m) for m in config.modes] + [args.checkpoint or "", args.endpoint,
                                                                  args.backend or ""])
    return OUTPUT_DIR / "eval" / f"{name}-{hashlib.sha256(settings.encode()).hexdigest()[:10]}"


def protocol_params(config, predictor) -> dict:
    """What the run records of its protocol: its name (as given) and ``name@vVERSION``, the reference
    commit, the answer budget it gave this model (``answer_budget``), decoding and extraction."""
    from g2u.eval.protocols import load_protocol

    protocol = load_protocol(config.protocol)
    info = getattr(getattr(predictor, "pipeline", None), "backend", None)
    info = getattr(info, "info", None)
    backend = info.backend if info else getattr(predictor, "backend", None)
    demo = bool(info and info.demo)
    if "max_new_tokens" in config.fields:
        budget = f"{config.fields['max_new_tokens']} (set)"
    elif backend is None and getattr(predictor, "url", None):
        budget = "the server's (backend unknown: pass --backend)"
    else:
        budget = ",".join(f"{layout}={protocol.max_new_tokens(layout, backend, demo)}" for layout in protocol.layouts)
    return {"protocol": config.protocol, "protocol_label": protocol.label,
            "protocol_reference": protocol.reference.get("commit", "") or "none", "answer_budget": budget,
            "decoding": protocol.budget.decoding, "extraction": protocol.extraction}


def judge_params(answer_judge, open_judge, requested_answer: str | None, requested: str | None) -> dict:
    """What the run records of its judges: each as given (``answer_judge``, ``judge``: the entry point's
    parameters under ``mlflow run``), by label and by model: the answer judge reads MCQ / yes-no answers exact
    matching cannot, the open-answer grader MM-Vet's. Numbers made with different judges are never read as one."""
    return {"answer_judge": requested_answer or "exact_matching", "answer_judge_label": answer_judge.label,
            "answer_judge_model": answer_judge.model or "none",
            "judge": requested or "none", "judge_label": open_judge.label if open_judge else "none",
            "judge_model": open_judge.model if open_judge else "none"}


def metric_name(name: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . / space``; categories may hold anything else."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def run(args: argparse.Namespace, nested: bool = False) -> dict:
    """Evaluate and log one configuration; returns the flat metrics."""
    return run_full(args, nested)["flat"]


def run_full(args: argparse.Namespace, nested: bool = False) -> dict:
    """``run``, returning what a caller building tables needs beside the flat metrics: the ``records`` and
    ``samples``, the ``out_dir``, the ``judges`` and ``protocol`` params and the MLflow ``run_id``."""
    import mlflow

    from g2u.eval.answer_judge import make_answer_judge, make_open_judge
    from g2u.eval.datasets import load_dataset
    from g2u.eval.protocols import load_protocol
    from g2u.eval.report import compute_metrics, plot_deltas, plot_fidelity_gain, transfer_markdown, write_gallery
    from g2u.eval.runner import evaluate
    from g2u.judge import make_judge

    config = config_from_args(args)
    samples = load_dataset(args.benchmark, limit=opt_int(args.limit))
    out_dir = Path(opt(args.out_dir) or default_out_dir(args, config))
    answer_judge = make_answer_judge(opt(getattr(args, "answer_judge", None)), load_protocol(config.protocol),
                                     cache_dir=out_dir / "answer_judge_cache")
    answer_judge.check()  # a judge that does not answer stops the run here, before any prediction
    judge = make_open_judge(opt(args.judge))
    if opt(args.judge) and judge is None:
        print(f"judge {args.judge}: no OPENAI_API_KEY, open answers keep the rule score (judge none)", file=sys.stderr)
    judges = judge_params(answer_judge, judge, opt(getattr(args, "answer_judge", None)), opt(args.judge))
    predictor = make_predictor(args)

    with mlflow.start_run(run_name=opt(args.run_name), nested=nested) as active:
        log_params({"benchmark": args.benchmark, "modes": ",".join(config.modes), **config.fields,
                    "limit": opt_int(args.limit), "batch_size": int(float(args.batch_size)), "model": predictor.label,
                    "endpoint": opt(args.endpoint), "n_samples": len(samples), "out_dir": str(out_dir),
                    "fidelity_judge": opt(args.fidelity_judge) or "none",
                    **judges, **protocol_params(config, predictor)})
        pipeline = getattr(predictor, "pipeline", None)
        try:
            fidelity_judge = make_judge(opt(args.fidelity_judge), backend=pipeline.backend if pipeline else None,
                                        cache_dir=out_dir / "judge_cache")
        except ValueError as exc:
            raise InputError("fidelity_judge", str(exc)) from exc
        result = evaluate(samples, predictor, config, out_dir, batch_size=int(float(args.batch_size)), judge=judge,
                          fidelity_judge=fidelity_judge, answer_judge=answer_judge)
        metrics = compute_metrics(result.records, samples)
        flat = {k: v for k, v in metrics["flat"].items() if isinstance(v, (int, float)) and v == v}
        mlflow.log_metrics({metric_name(k): v for k, v in flat.items()} |
                           {"computed": result.computed, "resumed": result.reused})
        if metrics.get("scoring_skipped"):
            mlflow.set_tag("g2u.scoring_skipped", metrics["scoring_skipped"])
            print(metrics["scoring_skipped"], file=sys.stderr)
        demo = any((r.get("model") or {}).get("demo") for r in result.records)
        mlflow.set_tags({"demo_checkpoint": str(demo).lower(), "g2u.out_dir": str(out_dir)})

        # Artifacts: predictions, thoughts, originals for the gallery, plots, the gallery itself.
        originals_dir = out_dir / "originals"
        originals_dir.mkdir(exist_ok=True)
        originals = {}
        for sample in samples:
            name = hashlib.sha1(sample.id.encode()).hexdigest()[:16] + ".jpg"
            target = originals_dir / name
            if not target.exists():
                img = sample.load_image()
                img.thumbnail((512, 512))
                img.save(target, quality=85)
            originals[sample.id] = f"originals/{name}"
        (out_dir / "metrics.json").write_text(json.dumps({"protocol": protocol_params(config, predictor),
                                                          "judges": judges, "benchmark": args.benchmark,
                                                          "accuracy": metrics["accuracy"], "flat": flat}, indent=2))
        plot_deltas(metrics, out_dir / "delta_per_category.png")
        plot_fidelity_gain(metrics, out_dir / "fidelity_vs_gain.png")
        write_gallery(result.records, originals, out_dir / "gallery.html")
        (out_dir / "transfer.md").write_text(transfer_markdown(metrics))  # Δ per category × prompt family
        (out_dir / "fidelity_gain.json").write_text(json.dumps(metrics.get("fidelity_gain", {}), indent=2,
                                                               default=str))
        # VLMEvalKit's prediction files, one per mode: `vlmutil eval FILE --judge exact_matching` scores them
        from g2u.eval.vlmevalkit_io import write_prediction_files

        xlsx = write_prediction_files(result.records, samples, out_dir / "vlmevalkit", predictor.label,
                                      samples[0].dataset or "benchmark")
        mlflow.log_artifacts(str(out_dir / "vlmevalkit"), artifact_path="vlmevalkit")
        mlflow.set_tag("g2u.vlmevalkit_files", ",".join(p.name for p in xlsx.values()))
        for name in ("predictions.jsonl", "metrics.json", "delta_per_category.png", "fidelity_vs_gain.png",
                     "gallery.html", "transfer.md", "fidelity_gain.json"):
            if (out_dir / name).exists():
                mlflow.log_artifact(str(out_dir / name))
        for folder in ("thoughts", "originals"):
            if any((out_dir / folder).iterdir()):
                mlflow.log_artifacts(str(out_dir / folder), artifact_path=folder)
        return {"flat": flat, "records": result.records, "samples": samples, "out_dir": out_dir, "judges": judges,
                "protocol": protocol_params(config, predictor), "run_id": active.info.run_id}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    setup_tracking()
    try:
        flat = run(args)
    except InputError as exc:  # a bad setting: named, before any prediction
        print(json.dumps(exc.to_dict()), file=sys.stderr)
        return 2
    summary = {k: round(v, 4) for k, v in flat.items() if k.startswith(("acc/", "delta/")) and k.count("/") <= 2}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    from g2u.entry import run_guarded

    sys.exit(run_guarded(main))  # one-line errors; --debug or G2U_DEBUG=1: the traceback
