"""FLOP and byte ledger per G→U stage, counted by torch's own ``FlopCounterMode`` on the meta device.

Models are built on ``meta`` (no weights allocated), so the released 20B + 8B configs are counted on any
laptop. FLOPs are what the counter sees (matmuls, convolutions, attention); bytes are the minimum traffic
a stage cannot avoid: every weight it touches read once, plus the KV cache read per decoded token
(activations are left out: a fused kernel keeps most in cache, so this is a floor, not an estimate).
The floor on an accelerator is ``max(FLOPs / peak, bytes / bandwidth)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from g2u.errors import InputError


@dataclass(frozen=True)
class Accelerator:
    name: str
    flops_per_s: float
    bytes_per_s: float
    note: str = ""


ACCELERATORS: dict[str, Accelerator] = {
    "h100-sxm": Accelerator("h100-sxm", 989e12, 3.35e12, "datasheet: bf16 dense, HBM3"),
    "h100-sxm-measured": Accelerator("h100-sxm-measured", 773e12, 2.93e12,
                                     "measured on one H100 SXM: bf16 matmul, device copy"),
}


def accelerator(name: str) -> Accelerator:
    if name not in ACCELERATORS:
        raise InputError("accelerator", f"must be one of {', '.join(ACCELERATORS)}; got {name!r}")
    return ACCELERATORS[name]


@dataclass
class Entry:
    """One counted item: FLOPs and bytes of one call, and how many times the stage makes it."""

    stage: str
    item: str
    flops: float
    bytes: float
    times: float = 1.0

    def floor_s(self, acc: Accelerator) -> float:
        return self.times * max(self.flops / acc.flops_per_s, self.bytes / acc.bytes_per_s)


@dataclass
class Ledger:
    entries: list[Entry] = field(default_factory=list)
    assumptions: dict[str, Any] = field(default_factory=dict)

    def add(self, stage: str, item: str, flops: float, nbytes: float, times: float = 1.0) -> None:
        self.entries.append(Entry(stage, item, float(flops), float(nbytes), float(times)))

    def stages(self) -> list[str]:
        return list(dict.fromkeys(e.stage for e in self.entries))

    def stage_totals(self, acc: Accelerator) -> dict[str, dict[str, float]]:
        out = {}
        for stage in self.stages():
            rows = [e for e in self.entries if e.stage == stage]
            out[stage] = {"flops": sum(e.flops * e.times for e in rows),
                          "bytes": sum(e.bytes * e.times for e in rows),
                          "floor_s": sum(e.floor_s(acc) for e in rows)}
        return out

    def to_dict(self, acc: Accelerator, measured_s: dict[str, float] | None = None) -> dict[str, Any]:
        """JSON-ready: entries, per-stage totals and floors, and the fraction of the floor achieved
        (floor / measured) where a measured time on that accelerator is given."""
        totals = self.stage_totals(acc)
        for stage, t in totals.items():
            if measured_s and measured_s.get(stage):
                t["measured_s"] = measured_s[stage]
                t["fraction_of_floor"] = t["floor_s"] / measured_s[stage]
        return {"accelerator": asdict(acc), "assumptions": self.assumptions,
                "entries": [{**asdict(e), "floor_s": e.floor_s(acc)} for e in self.entries],
                "stages": totals,
                "total_floor_s": sum(t["floor_s"] for t in totals.values())}


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` as torch's FlopCounterMode counts them (works on meta tensors)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def weight_bytes(*modules: torch.nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of the modules' parameters (as ``dtype`` if given): what one forward must read at least."""
    total = 0
    for m in modules:
        for p in m.parameters():
            total += p.numel() * (torch.finfo(dtype).bits // 8 if dtype else p.element_size())
    return total


# --------------------------------------------------------------------------------------------- Qwen

def qwen_vision_grid(width: int, height: int, processor_cfg: dict[str, int] | None = None) -> tuple[int, int, int]:
    """(t, h, w) patch grid the Qwen2-VL image processor makes of a width×height image (its smart_resize)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    cfg = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280, "patch_size": 14, "merge_size": 2,
           **(processor_cfg or {})}
    factor = cfg["patch_size"] * cfg["merge_size"]
    h, w = smart_resize(height, width, factor=factor, min_pixels=cfg["min_pixels"], max_pixels=cfg["max_pixels"])
    return 1, h // cfg["patch_size"], w // cfg["patch_size"]


def _vision_forward(visual, grid: tuple[int, int, int], device, dtype):
    t, h, w = grid
    cfg = visual.config
    patch_dim = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2
    pixels = torch.empty(t * h * w, patch_dim, device=device, dtype=dtype)
    # grid_thw stays a real CPU tensor (the tower derives window indices from its values); the rotary
    # position ids it would build from it on CPU are passed in on the model's device instead.
    position_ids = torch.zeros(t * h * w, 2, dtype=torch.long, device=device)
    return visual(pixels, grid_thw=torch.tensor([list(grid)]), position_ids=position_ids)


def _lm_forward(text_model, batch: int, seq: int, past: int, device, dtype):
    """One language-model forward of ``seq`` new tokens after ``past`` cached ones (meta-friendly)."""
    from transformers import DynamicCache

    cfg = text_model.config
    embeds = torch.empty(batch, seq, cfg.hidden_size, device=device, dtype=dtype)
    position_ids = torch.arange(past, past + seq, device=device).view(1, 1, -1).expand(3, batch, -1)
    cache = None
    if past:
        cache = DynamicCache(config=cfg)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        for layer in range(cfg.num_hidden_layers):
            kv = torch.empty(batch, cfg.num_key_value_heads, past, head_dim, device=device, dtype=dtype)
            cache.update(kv, kv, layer)
    return text_model(inputs_embeds=embeds, position_ids=position_ids, past_key_values=cache, use_cache=past > 0)


def _transformer_forward(transformer, batch: int, width: int, height: int, text_len: int, device, dtype):
    cfg = transformer.config
    lh, lw = height // 16, width // 16
    hidden = torch.empty(batch, 2 * lh * lw, cfg.in_channels, device=device, dtype=dtype)
    text = torch.empty(batch, text_len, cfg.joint_attention_dim, device=device, dtype=dtype)
    timestep = torch.empty(batch, device=device, dtype=dtype)
    return transformer(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text,
                       img_shapes=[[(1, lh, lw), (1, lh, lw)]] * batch, return_dict=False)


def qwen_image_edit_ledger(parts, *, width: int = 512, height: int = 512, steps: int | None = None,
                           text_cfg: float | None = None, answer_tokens: int | None = None,
                           edit_text_tokens: int = 90, question_tokens: int = 60,
                           dtype: torch.dtype = torch.bfloat16, vision_reuse: bool = True,
                           processor_cfg: dict[str, int] | None = None) -> Ledger:
    """FLOPs and bytes of one G→U request on Qwen-Image-Edit at a width×height working size.

    ``parts`` are the components from ``g2u.bench.sizes.build_qwen_image_edit`` (on meta for the real
    size). Stage I: text encoder reads [template, I, edit prompt] (and the negative prompt under true CFG),
    VAE encode, ``steps`` transformer passes (both CFG branches in one batch-2 pass), VAE decode. Stage II:
    vision of I and Î (I reused from stage I when ``vision_reuse``), prefill of [I, q, Î], then
    ``answer_tokens`` decode steps (counted once at the mean context length). ``steps``, ``text_cfg`` and
    ``answer_tokens`` default to the request schema's (the paper's settings).
    """
    from g2u.schema import field_default

    steps = field_default("steps") if steps is None else steps
    text_cfg = field_default("text_cfg") if text_cfg is None else text_cfg
    answer_tokens = field_default("max_new_tokens") if answer_tokens is None else answer_tokens
    te, transformer, vae = parts.text_encoder, parts.transformer, parts.vae
    device = next(transformer.parameters()).device
    visual, lm = te.model.visual, te.model.language_model
    grid = qwen_vision_grid(width, height, processor_cfg)
    merge = visual.config.spatial_merge_size**2
    vis_tokens = grid[0] * grid[1] * grid[2] // merge
    cfg_branches = 2 if text_cfg > 1 else 1
    ledger = Ledger(assumptions={"working_size": f"{width}x{height}", "steps": steps, "text_cfg": text_cfg,
                                 "cfg_branches": cfg_branches, "answer_tokens": answer_tokens,
                                 "vision_grid_thw": list(grid), "vision_tokens_per_image": vis_tokens,
                                 "edit_text_tokens": edit_text_tokens, "question_tokens": question_tokens,
                                 "dtype": str(dtype).removeprefix("torch."), "vision_reuse": vision_reuse,
                                 "bytes": "weights read once per call + KV cache per decoded token"})
    vis_bytes = weight_bytes(visual, dtype=dtype)
    lm_bytes = weight_bytes(lm, te.lm_head, dtype=dtype)
    tr_bytes = weight_bytes(transformer, dtype=dtype)
    vae_enc_bytes = weight_bytes(vae.encoder, vae.quant_conv, dtype=dtype)
    vae_dec_bytes = weight_bytes(vae.decoder, vae.post_quant_conv, dtype=dtype)

    # Stage I
    vis = count_flops(_vision_forward, visual, grid, device, dtype)
    edit_seq = edit_text_tokens + vis_tokens
    prefill = count_flops(_lm_forward, lm, 1, edit_seq, 0, device, dtype)
    encodes = 1 if vision_reuse else cfg_branches
    ledger.add("edit", "vision tower, I at the working size", vis, vis_bytes, encodes)
    ledger.add("edit", f"text encoder prefill ({edit_seq} tokens), per CFG branch", prefill, lm_bytes, cfg_branches)
    image = torch.empty(1, 3, 1, height, width, device=device, dtype=dtype)
    ledger.add("edit", "VAE encode", count_flops(lambda x: vae.encoder(x), image), vae_enc_bytes)
    text_len = edit_seq - 64  # the pipeline drops the 64-token system prefix
    step_b1 = count_flops(_transformer_forward, transformer, 1, width, height, text_len, device, dtype)
    step_b2 = count_flops(_transformer_forward, transformer, cfg_branches, width, height, text_len, device, dtype)
    ledger.add("edit", "denoising step, one CFG branch (batch 1) [reference]", step_b1, tr_bytes, 0)
    ledger.add("edit", f"denoising step, {cfg_branches} CFG branches in one pass", step_b2, tr_bytes, steps)
    latent = torch.empty(1, vae.config.z_dim, 1, height // 8, width // 8, device=device, dtype=dtype)
    ledger.add("edit", "VAE decode", count_flops(lambda z: vae.decoder(z), latent), vae_dec_bytes)

    # Stage II: [I, q, Î]
    ledger.add("understand", "vision tower, Î (and I unless reused)", vis, vis_bytes, 1 if vision_reuse else 2)
    answer_seq = 2 * vis_tokens + question_tokens
    ledger.add("understand", f"prefill ({answer_seq} tokens)", count_flops(_lm_forward, lm, 1, answer_seq, 0,
                                                                          device, dtype), lm_bytes)
    mean_ctx = answer_seq + answer_tokens // 2
    lcfg = lm.config
    head_dim = getattr(lcfg, "head_dim", None) or lcfg.hidden_size // lcfg.num_attention_heads
    kv_bytes = 2 * lcfg.num_hidden_layers * lcfg.num_key_value_heads * head_dim * mean_ctx * (
        torch.finfo(dtype).bits // 8)
    decode = count_flops(_lm_forward, lm, 1, 1, mean_ctx, device, dtype)
    ledger.add("understand", f"decode, per answer token (context {mean_ctx})", decode, lm_bytes + kv_bytes,
               answer_tokens)
    return ledger


def format_ledger(ledger_dict: dict[str, Any]) -> str:
    """A plain-text table of the ledger (what ``g2u bench --flops`` prints to stderr)."""
    acc = ledger_dict["accelerator"]
    lines = [f"FLOP/byte ledger on {acc['name']} ({acc['flops_per_s'] / 1e12:.0f} TFLOP/s, "
             f"{acc['bytes_per_s'] / 1e12:.2f} TB/s): {ledger_dict['assumptions']}",
             f"{'stage':<11} {'item':<58} {'GFLOP':>12} {'MB':>10} {'x':>5} {'floor ms':>10}"]
    for e in ledger_dict["entries"]:
        lines.append(f"{e['stage']:<11} {e['item'][:58]:<58} {e['flops'] / 1e9:>12.1f} {e['bytes'] / 1e6:>10.1f} "
                     f"{e['times']:>5g} {e['floor_s'] * 1e3:>10.2f}")
    for stage, t in ledger_dict["stages"].items():
        extra = ""
        if "measured_s" in t:
            extra = f"  measured {t['measured_s'] * 1e3:.1f} ms, {100 * t['fraction_of_floor']:.1f}% of floor"
        lines.append(f"{stage:<11} total {t['flops'] / 1e12:.3f} TFLOP, {t['bytes'] / 1e9:.2f} GB, "
                     f"floor {t['floor_s'] * 1e3:.1f} ms{extra}")
    lines.append(f"G→U floor {ledger_dict['total_floor_s'] * 1e3:.1f} ms")
    return "\n".join(lines)
