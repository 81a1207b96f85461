"""``g2u bench``: every G→U stage timed on the fast path and on the stock diffusers/transformers path in
the same run, printed as ratios (a shared machine's absolute times drift; ratios measured side by side
do not), with the fast path's drift against stock, and the FLOP/byte ledger on request.

Stock means: ``QwenImageEditPipeline.__call__`` as shipped (two transformer passes per step for true
CFG), conditioning at the same working size as the fast path (its fixed ~1024² conditioning area is
pinned to the working size for the comparison, otherwise it would compute a different image), and the
answer with HF ``generate`` defaults (dynamic KV cache, every image encoded where it appears).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from g2u.bench.sizes import build_qwen_image_edit, check_size, qwen_image_edit_pipeline
from g2u.bench.timing import peak_memory_mb, reset_peak, timed
from g2u.errors import InputError
from g2u.fastpath import STOCK, FastPath, VisionEncodingCache, apply_fast_path
from g2u.schema import field_default

log = logging.getLogger("g2u.bench")
BACKENDS = ("qwen_image_edit",)
QUESTION = "Which shape is red?"
DEFAULTS = {  # size: (edit size, steps, answer tokens); the real size at the schema's (the paper's) settings
    "tiny": ((64, 64), 8, 16),
    "small": ((128, 128), 4, 16),
    "real": ((512, 512), field_default("steps"), field_default("max_new_tokens")),
}


@dataclass
class BenchConfig:
    size: str = "tiny"
    backend: str = "qwen_image_edit"
    device: str | None = None
    dtype: str | None = None
    edit_size: tuple[int, int] | None = None
    steps: int | None = None
    text_cfg: float = field_default("text_cfg")
    answer_tokens: int | None = None
    reps: int = 3
    warmup: int = 1
    seed: int = 0
    fast: FastPath = field(default_factory=FastPath)
    flops: bool = False
    flops_only: bool = False
    accelerator: str = "h100-sxm"

    def resolved(self) -> BenchConfig:
        from g2u.devices import resolve_device

        check_size(self.size)
        if self.backend not in BACKENDS:
            raise InputError("backend", f"the bench covers {', '.join(BACKENDS)}; got {self.backend!r}")
        size, steps, tokens = DEFAULTS[self.size]
        out = BenchConfig(**{**asdict(self), "fast": self.fast})
        out.edit_size = self.edit_size or size
        out.steps = self.steps or steps
        out.answer_tokens = self.answer_tokens or tokens
        if self.reps < 1:
            raise InputError("reps", f"must be >= 1, got {self.reps}")
        if self.warmup < 0:
            raise InputError("warmup", f"must be >= 0, got {self.warmup}")
        if self.size == "real" and not self.flops_only and resolve_device(self.device).type != "cuda":
            raise InputError("size", "real size is timed on a GPU only; on CPU use --flops-only (the ledger)")
        w, h = out.edit_size
        if w % 16 or h % 16 or w <= 0 or h <= 0:
            raise InputError("edit_size", f"must be positive multiples of 16, got {w}x{h}")
        return out


def sample_image(width: int, height: int) -> Image.Image:
    """Shapes on a light background, at the working size (so the answer model reads the very pixels the
    edit's text encoder read: the case vision reuse is for)."""
    img = Image.new("RGB", (width, height), (235, 235, 240))
    draw = ImageDraw.Draw(img)
    draw.ellipse((width * 0.1, height * 0.2, width * 0.45, height * 0.6), fill=(200, 30, 30))
    draw.rectangle((width * 0.55, height * 0.3, width * 0.9, height * 0.75), fill=(30, 60, 200))
    return img


@contextlib.contextmanager
def _stock_conditioning_at(width: int, height: int):
    """Pin the stock pipeline's conditioning size (a fixed ~1024² area in diffusers 0.42.1) to the working
    size, so stock and fast compute the same image and their drift means something."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as stock_module

    original = stock_module.calculate_dimensions
    stock_module.calculate_dimensions = lambda area, ratio: (width, height, None)
    try:
        yield
    finally:
        stock_module.calculate_dimensions = original


def _machine(device: torch.device) -> dict[str, Any]:
    info = {"device": str(device), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
        info["load_avg"] = os.getloadavg()
        # Spinning OpenMP threads on cores other tenants hold made one demo request 30-70x slower here
        # (docs/perf-notes.md); PASSIVE is what a shared machine's numbers should be taken under.
        info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    return info


def logit_drift(model, inputs, tokens: int, fast: FastPath, stock: FastPath, backend) -> dict[str, float]:
    """Greedy-decode ``tokens`` tokens on both paths; relative L2 error of the fast path's logits against
    stock's, over the steps where both chose the same tokens so far, and the token agreement."""
    outs = {}
    for name, cfg in (("stock", stock), ("fast", fast)):
        apply_fast_path(backend, cfg)
        _clear_vision_cache(model)
        with torch.inference_mode():
            outs[name] = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                        output_logits=True, return_dict_in_generate=True)
    s_ids, f_ids = outs["stock"].sequences, outs["fast"].sequences
    start = inputs["input_ids"].shape[1]
    agree = (s_ids[:, start:] == f_ids[:, start:]).float()
    first_diff = int(agree[0].argmin()) if not bool(agree.all()) else tokens
    rel = [float((f.float() - s.float()).norm() / s.float().norm())
           for s, f in zip(outs["stock"].logits[: max(first_diff, 1)], outs["fast"].logits[: max(first_diff, 1)])]
    return {"answer_logit_rel_err_max": max(rel), "answer_tokens_equal": float(agree.mean()),
            "steps_compared": len(rel)}


def _clear_vision_cache(model) -> None:
    cache = model.model.__dict__.get("get_image_features")
    if isinstance(cache, VisionEncodingCache):
        cache.store.clear()


def decode_ms_per_token(model, inputs, tokens: int, device, reps: int,
                        settings: dict[str, Any]) -> dict[str, float]:
    """Per-token decode cost for each named setting (a callable that switches the model to it):
    (time of ``tokens`` new tokens − time of 1) / (tokens − 1), so prefill and vision drop out; settings
    alternate rep by rep; medians."""
    def run(n):
        with torch.inference_mode():
            return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    samples: dict[str, list[float]] = {name: [] for name in settings}
    for rep in range(reps + 1):  # the first round warms up
        for name, switch in settings.items():
            switch()
            _, one = timed(lambda: run(1), device)
            _, many = timed(lambda: run(tokens), device)
            if rep:
                samples[name].append((many - one) / (tokens - 1))
    out = {name: statistics.median(v) for name, v in samples.items()}
    if "stock" in out and "fast" in out:
        out["speedup"] = out["stock"] / out["fast"]
    return out


def run_bench(config: BenchConfig, parts: Any = None) -> dict[str, Any]:
    """Build the model at the configured size (or use ``parts``, built by ``build_qwen_image_edit`` at that
    size: scripts/gpu_check.py builds real size once), time stock and fast, measure drift; returns the report."""
    from g2u.answer_prompt import format_question
    from g2u.backends.base import BackendInfo
    from g2u.backends.qwen_image_edit import QwenImageEditBackend
    from g2u.backends.qwen_vl import prepare_answer_inputs
    from g2u.batch import RawItem, run_batch
    from g2u.devices import dtype_name, resolve_device, resolve_dtype
    from g2u.measures import edit_measures
    from g2u.pipeline import G2UPipeline
    from g2u.schema import answer_params, parse_request

    cfg = config.resolved()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    report: dict[str, Any] = {"config": {**asdict(cfg), "fast": cfg.fast.to_dict()}, "machine": _machine(device)}
    width, height = cfg.edit_size
    if cfg.flops or cfg.flops_only:
        report["ledger"] = ledger_report(cfg)
    if cfg.flops_only:
        return report

    start = time.perf_counter()
    # real size is built on the GPU directly, in its dtype (40 GB of transformer never passes the host)
    if parts is None:
        parts = build_qwen_image_edit(cfg.size, cfg.seed, device=device if cfg.size == "real" else "cpu",
                                      dtype=dtype)
    pipe = qwen_image_edit_pipeline(parts).to(device)
    info = BackendInfo("qwen_image_edit", f"random:{cfg.size}", True, str(device), dtype_name(dtype))
    backend = QwenImageEditBackend(pipe, info, default_edit_area=width * height)
    g2u = G2UPipeline(backend)
    report["build_s"] = round(time.perf_counter() - start, 2)
    log.info("built %s in %.1f s", cfg.size, report["build_s"])

    image = sample_image(width, height)
    fields = {"question": QUESTION, "steps": cfg.steps, "text_cfg": cfg.text_cfg, "seed": cfg.seed,
              "edit_size": f"{width}x{height}", "max_new_tokens": cfg.answer_tokens}
    request = parse_request(fields, image=image)
    chosen = g2u.library.resolve(None, None, None)
    model = pipe.text_encoder
    params = answer_params(max_new_tokens=cfg.answer_tokens)
    question = f"{format_question(QUESTION, None)}\nAnswer the question using a single word or phrase."

    # ---- stock (diffusers __call__, HF generate defaults) and fast (the served G2UPipeline with the fast
    # path on), alternated rep by rep so load from anything else on the machine hits both alike.
    resolved_fast = cfg.fast.resolved(device)

    def stock_edit():
        with _stock_conditioning_at(width, height):
            return pipe.__class__.__mro__[1].__call__(
                pipe, image=image, prompt=chosen.text, negative_prompt=request.edit.negative_prompt,
                true_cfg_scale=cfg.text_cfg, num_inference_steps=cfg.steps, height=height, width=width,
                generator=torch.Generator("cpu").manual_seed(cfg.seed)).images[0].convert("RGB")

    def stock_once() -> tuple[dict[str, float], Image.Image, str]:
        apply_fast_path(backend, STOCK)
        out: dict[str, float] = {}
        _, out["write_prompt"] = timed(lambda: g2u.library.resolve(None, None, None), device)
        thought, out["edit"] = timed(stock_edit, device)
        _, out["measures"] = timed(lambda: edit_measures(image, thought), device)
        answers, out["understand"] = timed(lambda: backend.answer([[image, question, thought]], params), device)
        out["total"] = sum(out.values())
        return out, thought, answers[0].text

    def fast_once():
        apply_fast_path(backend, resolved_fast)
        _clear_vision_cache(model)  # a new request finds no encoding of its image
        # The served path: the core's batch path (parse, check, stage I, stage II), as REST and the CLI.
        outcomes, wall = timed(lambda: run_batch(g2u, [RawItem(fields, image)]), device)
        if not outcomes[0].ok:
            raise RuntimeError(f"the fast path failed: {outcomes[0].error}")
        result = outcomes[0].result
        out = {k: float(result.timings_ms.get(k, 0.0)) for k in ("write_prompt", "edit", "measures", "understand")}
        out["total"] = wall
        return out, result

    stock_samples: list[dict[str, float]] = []
    fast_samples: list[dict[str, float]] = []

    def stock_rep(rep: int):
        sample, thought, answer = stock_once()
        log.info("stock round %d: %s", rep, {k: round(v, 1) for k, v in sample.items()})
        if rep >= cfg.warmup:
            stock_samples.append(sample)
        return thought, answer

    vision_seen: dict[str, int] = {}

    def fast_rep(rep: int):
        sample, result = fast_once()
        live = model.model.__dict__.get("get_image_features")  # read now: a later stock run removes it
        if isinstance(live, VisionEncodingCache):
            vision_seen.update(hits=live.hits, misses=live.misses)
        log.info("fast round %d: %s", rep, {k: round(v, 1) for k, v in sample.items()})
        if rep >= cfg.warmup:
            fast_samples.append(sample)
        return result

    control_samples: list[dict[str, float]] = []
    loads: list[float] = []

    def control_rep(rep: int) -> None:
        """Stock again in the same round: the A/A control (an identical setting's ratio is pure noise)."""
        sample, _, _ = stock_once()
        log.info("stock (A/A control) round %d: %s", rep, {k: round(v, 1) for k, v in sample.items()})
        if rep >= cfg.warmup:
            control_samples.append(sample)

    def note_load(rep: int) -> None:
        if rep >= cfg.warmup and device.type != "cuda":
            loads.append(os.getloadavg()[0])

    reset_peak(device)
    rounds = range(cfg.warmup + cfg.reps)
    compile_s: dict[str, float] = {}
    # Regional compile cannot be switched off again: then every stock rep runs before it happens.
    interleave = not resolved_fast.compile_blocks
    if not interleave:
        for rep in rounds:
            note_load(rep)
            stock_thought, stock_answer = stock_rep(rep)
            control_rep(rep)
    if resolved_fast.compile_blocks or resolved_fast.compile_decode:
        # Compilation happens on first use: one untimed request pays it, reported once.
        _, first_ms = timed(fast_once, device)
        compile_s["first_request_s"] = round(first_ms / 1000, 2)
    for rep in rounds:
        if interleave:  # the order within a round rotates, so no side always runs first
            note_load(rep)
            order = ["stock", "fast", "control"]
            for name in order[rep % 3:] + order[: rep % 3]:
                if name == "stock":
                    stock_thought, stock_answer = stock_rep(rep)
                elif name == "fast":
                    fast_result = fast_rep(rep)
                else:
                    control_rep(rep)
        else:
            fast_result = fast_rep(rep)
    stock = {k: statistics.median(s[k] for s in stock_samples) for k in stock_samples[0]}
    fast = {k: statistics.median(s[k] for s in fast_samples) for k in fast_samples[0]}
    memory = peak_memory_mb(device)
    fast_thought = fast_result.thought.image
    contents = [[image, question, stock_thought]]
    vision = dict(vision_seen) or None

    log.info("timing done; measuring drift and per-token decode")
    # ---- drift of the fast path against stock
    drift: dict[str, Any] = {"thought_vs_stock": edit_measures(stock_thought, fast_thought),
                             "thought_max_abs_diff": int(np.abs(np.asarray(stock_thought, dtype=np.int16)
                                                                - np.asarray(fast_thought, dtype=np.int16)).max())}
    inputs = prepare_answer_inputs(model, pipe.processor, contents)
    drift.update(logit_drift(model, inputs, cfg.answer_tokens, resolved_fast, STOCK, backend))
    drift["answer_stock"], drift["answer_fast"] = stock_answer, fast_result.answer

    # ---- decode cost per token, stock vs fast cache settings
    decode = {}
    if cfg.answer_tokens > 1:
        decode = decode_ms_per_token(model, inputs, cfg.answer_tokens, device, cfg.reps,
                                     {"stock": lambda: apply_fast_path(backend, STOCK),
                                      "fast": lambda: apply_fast_path(backend, resolved_fast)})

    from g2u.bench.stats import ratio_row

    paired = {k: ratio_row([s[k] for s in stock_samples], [f[k] for f in fast_samples],
                           control=[a[k] / b[k] if b[k] else float("nan")
                                    for a, b in zip(stock_samples, control_samples)]) for k in stock}
    report.update({
        "stages_ms": {k: {"stock": stock[k], "fast": fast[k],
                          "speedup": (stock[k] / fast[k]) if fast[k] else None} for k in stock},
        "paired": paired,
        "load_avg_rounds": loads,
        "end_to_end_speedup": stock["total"] / fast["total"],
        "decode_ms_per_token": decode,
        "drift": drift,
        "vision_reuse": vision,
        "compile": compile_s,
        "peak_memory": memory,
        "fast_path": resolved_fast.to_dict(),
    })
    if "ledger" in report and device.type == "cuda":
        from g2u.bench.ledger import accelerator

        measured = {"edit": fast["edit"] / 1000, "understand": fast["understand"] / 1000}
        report["ledger"] = ledger_report(cfg, measured, accelerator(cfg.accelerator))
    return report


def ledger_report(cfg: BenchConfig, measured_s: dict[str, float] | None = None, acc=None) -> dict[str, Any]:
    """The ledger at the configured size, built on meta (nothing allocated)."""
    from g2u.bench.ledger import accelerator, qwen_image_edit_ledger

    acc = acc or accelerator(cfg.accelerator)
    parts = build_qwen_image_edit(cfg.size, cfg.seed, device="meta", dtype=torch.bfloat16)
    proc_cfg = None
    if parts.processor is not None:
        ip = parts.processor.image_processor
        proc_cfg = {"min_pixels": ip.size["shortest_edge"], "max_pixels": ip.size["longest_edge"],
                    "patch_size": ip.patch_size, "merge_size": ip.merge_size}
    width, height = cfg.edit_size
    ledger = qwen_image_edit_ledger(parts, width=width, height=height, steps=cfg.steps, text_cfg=cfg.text_cfg,
                                    answer_tokens=cfg.answer_tokens, vision_reuse=cfg.fast.vision_reuse,
                                    processor_cfg=proc_cfg)
    return ledger.to_dict(acc, measured_s)


def format_report(report: dict[str, Any]) -> str:
    """The human-readable table (stderr); the JSON is the machine-readable one."""
    lines = []
    m = report["machine"]
    c = report["config"]
    lines.append(f"g2u bench: size {c['size']}, {c['backend']}, {m['device']} ({m.get('gpu') or m.get('cpu')}, "
                 f"{m['cpus']} CPUs, load {m.get('load_avg', '')}), edit {c['edit_size'][0]}x{c['edit_size'][1]}, "
                 f"{c['steps']} steps, CFG {c['text_cfg']}, {c['answer_tokens']} tokens, median of {c['reps']} "
                 f"after {c['warmup']} warm-up")
    if "stages_ms" in report:
        lines.append(f"{'stage':<14} {'stock ms':>10} {'fast ms':>10} {'speedup':>8}")
        for stage, row in report["stages_ms"].items():
            sp = f"{row['speedup']:.2f}x" if row["speedup"] else "-"
            lines.append(f"{stage:<14} {row['stock']:>10.1f} {row['fast']:>10.1f} {sp:>8}")
        if report.get("paired"):
            lines.append("paired per-round ratios stock/fast (median, 95% bootstrap interval) against the same "
                         "rounds' A/A control stock/stock:")
            for stage, row in report["paired"].items():
                if row.get("ratio") is None:
                    continue
                verdict = "inside the noise" if row.get("inside_noise") else "beyond the noise"
                lines.append(f"  {stage:<12} {row['ratio']:.2f}x [{row['low']:.2f}, {row['high']:.2f}]  A/A "
                             f"{row['aa_ratio']:.2f} [{row['aa_low']:.2f}, {row['aa_high']:.2f}]  {verdict}")
            if report.get("load_avg_rounds"):
                la = report["load_avg_rounds"]
                lines.append(f"  load average over the rounds: {min(la):.1f}-{max(la):.1f} on {m['cpus']} CPUs")
        d = report["decode_ms_per_token"]
        if d:
            lines.append(f"decode ms/token: stock {d['stock']:.2f}, fast {d['fast']:.2f} ({d['speedup']:.2f}x)")
        dr = report["drift"]
        tv = dr["thought_vs_stock"]
        lines.append(f"drift: thought SSIM {tv['ssim']:.5f} PSNR {tv['psnr']:.1f}"
                     f" dB (max |Δ| {dr['thought_max_abs_diff']}/255); answer logits rel err "
                     f"{dr['answer_logit_rel_err_max']:.2e}, tokens equal {dr['answer_tokens_equal']:.2f}")
        lines.append(f"fast path: {report['fast_path']}; vision reuse {report['vision_reuse']}; "
                     f"compile {report['compile'] or 'none'}; peak memory {report['peak_memory']}")
    if "ledger" in report:
        from g2u.bench.ledger import format_ledger

        lines.append(format_ledger(report["ledger"]))
    return "\n".join(lines)
