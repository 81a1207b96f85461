"""Peak memory per memory-fit setting (g2u.memory): weights, peak memory of one G→U request, its time, and
the drift against the unquantized model (answer-logit relative error, thought SSIM). Prints a table.

    python -m scripts.bench_memory [--checkpoint DIR] [--backend NAME] [--steps 2]

On CPU only ``none`` and ``int8`` run (the others need CUDA and are listed as refused, with the reason);
on a GPU every setting runs and peak memory is ``torch.cuda.max_memory_allocated``. Without a checkpoint,
the demo checkpoint: its numbers say that the settings work, not what they save on a real model.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time

import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from g2u.backends import backend_class
from g2u.batch import RawItem, run_batch
from g2u.checkpoints import resolve_checkpoint
from g2u.errors import InputError
from g2u.memory import apply_memory_fit, validate_memory_fit
from g2u.pipeline import G2UPipeline

SETTINGS = [("none", "none"), ("none", "int8"), ("none", "fp8"), ("none", "nf4"), ("model", "none"),
            ("group", "none"), ("sequential", "none"), ("model", "nf4"), ("group", "int8")]


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the weights as stored (a torchao/bitsandbytes tensor counts its packed inner tensors)."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if hasattr(t, "__tensor_flatten__"):
            names, _ = t.__tensor_flatten__()
            total += sum(getattr(t, n).numel() * getattr(t, n).element_size() for n in names)
        else:
            total += t.numel() * t.element_size()
    return total


def heavy_bytes(pipe: G2UPipeline) -> int:
    b = pipe.backend
    mods = {"qwen_image_edit": lambda: [b.pipe.transformer, b.pipe.text_encoder, b.pipe.vae],
            "decoupled": lambda: [m for m in (getattr(b.editor, "transformer", None), getattr(b.editor, "unet", None),
                                              b.editor.vae, b.answer_model) if m is not None],
            "bagel": lambda: [b.model, b.vae]}[b.info.backend]()
    return sum(weight_bytes(m) for m in mods)


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--backend", default="qwen_image_edit")
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    image = Image.new("RGB", (96, 64), (40, 120, 200))
    fields = {"question": "What colour is the picture?", "mode": "g2u", "steps": args.steps, "seed": 0}
    ref = None
    checkpoint = resolve_checkpoint(args.checkpoint, args.backend)  # none given: the demo's
    print(f"device {device}; backend {args.backend}; checkpoint {args.checkpoint or '(demo)'}; steps {args.steps}")
    print(f"{'offload':<11}{'quantize':<9}{'weights MB':>11}{'peak MB':>10}{'request s':>10}"
          f"{'logit rel.err':>14}{'thought SSIM':>13}")
    for offload, quantize in SETTINGS:
        try:
            validate_memory_fit(offload, quantize, device, backend_class(args.backend).no_offload)
        except InputError as exc:
            print(f"{offload:<11}{quantize:<9}  refused: {exc.field}: {exc.reason}")
            continue
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        # offload and large models: load on CPU, let apply_memory_fit place the weights
        pipe = G2UPipeline.from_checkpoint(checkpoint, args.backend, device="cpu" if offload != "none" or
                                           quantize != "none" else device)
        apply_memory_fit(pipe.backend, offload=offload, quantize=quantize, device=device)
        weights = heavy_bytes(pipe) / 2**20
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        [outcome] = run_batch(pipe, [RawItem(fields, image)])  # the one batch path, as every caller
        wall = time.perf_counter() - t0
        if not outcome.ok:
            raise RuntimeError(f"{offload}/{quantize}: the request failed: {outcome.error}")
        result = outcome.result
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_peak_mb()
        model = getattr(pipe.backend, "answer_model", None)
        logits = None
        if model is not None:
            ids = torch.arange(3, 35).remainder(model.config.get_text_config().vocab_size).unsqueeze(0)
            with torch.no_grad():
                logits = model(input_ids=ids.to(device if offload == "none" else "cpu")).logits.float().cpu()
        thought = torch.from_numpy(np.asarray(result.thought.image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        if ref is None:
            ref = (logits, thought)
        rel = f"{((logits - ref[0]).norm() / ref[0].norm()).item():.2e}" if logits is not None else "-"
        sim = ssim(thought, ref[1], data_range=1.0).item() if thought.shape == ref[1].shape else float("nan")
        print(f"{offload:<11}{quantize:<9}{weights:>11.1f}{peak:>10.0f}{wall:>10.2f}{rel:>14}{sim:>13.4f}")
        del pipe, result, outcome
    if not cuda:
        print("(CPU: 'peak MB' is the process's peak RSS so far, monotone over the rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
