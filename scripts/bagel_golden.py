"""Golden data from the official BAGEL code, for ``tests/backends/test_bagel_golden.py``.

Usage (from the repository root, with the project's venv)::

    git --git-dir=<mirror of ByteDance-Seed/Bagel> archive 056b5fd51a88c1eb4547318609e25d40080fcf87 \\
        | (mkdir -p /tmp/bagel_ref && tar -x -C /tmp/bagel_ref)
    pip install --no-deps --target /tmp/bagel_ref_env transformers==4.49.0 tokenizers==0.21.0 \\
        huggingface_hub==0.29.1 einops==0.8.1
    python scripts/bagel_golden.py --bagel-src /tmp/bagel_ref --ref-site /tmp/bagel_ref_env
    # the released precision, for measuring the bf16 floor only (not stored):
    python scripts/bagel_golden.py --bagel-src /tmp/bagel_ref --ref-site /tmp/bagel_ref_env \\
        --dtype bfloat16 --out /tmp/bagel_golden_bf16

What it does:
1. builds the seeded tiny BAGEL demo checkpoint (``g2u.demo.bagel.build_bagel_demo``, seed 0) in a temp dir;
2. runs the *official* code (checkout outside this repo, never copied into it) on it in a subprocess whose
   path starts with the ``--ref-site`` packages (the transformers release their vendored Qwen2/SigLIP code
   was written against) and small run-time shims for what a CPU machine lacks:
   ``flash_attn.flash_attn_varlen_func`` (per-sequence SDPA in float32, cast back to the input dtype),
   ``torchvision`` (only the PIL bicubic resize / ToTensor / Normalize that ``ImageTransform`` calls, which
   is what torchvision does for PIL images) and an empty ``cv2`` (training augmentations only);
3. ``--dtype float32`` (the stored goldens): the reference's hard-coded ``.to(torch.bfloat16)`` casts and
   its bf16 autocast are the only thing between it and float32, so in that process ``torch.bfloat16`` is
   aliased to ``torch.float32`` and autocast is off; the model then runs in float32 end to end, as ours
   does in the tests. ``--dtype bfloat16`` is the released inference (bf16 weights, CPU bf16 autocast);
4. writes ``golden.safetensors`` and ``meta.json`` (small: the tiny demo at 64×48):
   * understanding (``understanding_output=True``), plain and with ``think``: every text segment the
     inferencer laid out (token ids, ``<|im_start|>``/``<|im_end|>`` included), the lm-head logits, the
     generated ids and text;
   * the VAE: its input pixels and posterior mean;
   * edits over a grid of settings (``EDIT_CASES``: image CFG 1 and > 1, CFG intervals whose bounds
     fall between grid points, every renorm type, a binding renorm minimum, text CFG 1 with image CFG 2),
     each run end to end as the inferencer does after ``torch.manual_seed(seed)`` (posterior sampled,
     then the initial noise): the posterior sample, the initial noise, the guided velocity of every step
     and the decoded uint8 image;
   * an edit with ``think``: the laid-out segments (planning system prompt, prompt, re-read plan), the
     plan's ids and text and the decoded image;
   * the reference's defaults: ``interleave_inference``/``gen_image`` signatures, the editing cells of
     ``inference.ipynb``, ``app.py``'s ``edit_image``, and its two think system prompts verbatim.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PINNED_COMMIT = "056b5fd51a88c1eb4547318609e25d40080fcf87"
SEED = 0
QUESTION = "What is in the picture?"
EDIT_PROMPT = "sharpen the details"
INPUT_SIZE = (96, 64)
TEXT_TOKENS = 8
THINK_TOKENS = 8
THINK_EDIT_STEPS = 3
PAPER = {"cfg_text_scale": 4.0, "cfg_img_scale": 1.0, "cfg_interval": [0.0, 1.0], "timestep_shift": 3.0,
         "cfg_renorm_min": 0.0, "cfg_renorm_type": "text_channel"}
EDIT_CASES = {
    # the paper's recipe (our defaults) on a longer grid
    "paper": {**PAPER, "num_timesteps": 8, "seed": 11},
    # image CFG on; the interval [0.4, 0.9] leaves t = 1, 0.947 (above) and 0.333 (below) unguided
    "image_cfg_interval": {**PAPER, "cfg_img_scale": 2.0, "cfg_interval": [0.4, 0.9], "num_timesteps": 8,
                           "seed": 12},
    # global renorm whose minimum binds (the demo's ratio |v| / |guided| is ~0.845 here), another shift,
    # the inferencer's default interval
    "global_renorm_min": {**PAPER, "cfg_text_scale": 6.0, "cfg_img_scale": 1.5, "cfg_interval": [0.4, 1.0],
                          "timestep_shift": 2.0, "cfg_renorm_type": "global", "cfg_renorm_min": 0.9,
                          "num_timesteps": 7, "seed": 13},
    # per-token renorm whose minimum binds for some tokens (ratios 0.90–0.97)
    "channel": {**PAPER, "cfg_text_scale": 3.0, "cfg_img_scale": 1.5, "cfg_renorm_type": "channel",
                "cfg_renorm_min": 0.93, "num_timesteps": 6, "seed": 14},
    # text CFG off, image CFG on: the reference applies no guidance at all
    "image_cfg_only": {**PAPER, "cfg_text_scale": 1.0, "cfg_img_scale": 2.0, "num_timesteps": 5, "seed": 15},
}
THINK_EDIT = {**PAPER, "num_timesteps": THINK_EDIT_STEPS, "seed": 16}

FLASH_ATTN_SHIM = '''
import torch
import torch.nn.functional as F


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                           causal=False, **_):
    out = torch.empty_like(q)
    hq, hk = q.shape[1], k.shape[1]
    for i in range(len(cu_seqlens_q) - 1):
        qs, qe = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
        ks, ke = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        qi = q[qs:qe].transpose(0, 1).float()
        ki, vi = k[ks:ke].transpose(0, 1).float(), v[ks:ke].transpose(0, 1).float()
        if hk != hq:
            ki, vi = ki.repeat_interleave(hq // hk, 0), vi.repeat_interleave(hq // hk, 0)
        mask = None
        if causal:  # flash-attn aligns the causal mask bottom-right
            lq, lk = qe - qs, ke - ks
            mask = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
        out[qs:qe] = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask).transpose(0, 1).to(q.dtype)
    return out
'''
TORCHVISION_SHIM = {
    "__init__.py": "",
    "transforms/__init__.py": '''
import enum
import numpy as np
import torch
from . import functional  # noqa: F401
from .functional import InterpolationMode  # noqa: F401


class ToTensor:
    def __call__(self, img):
        return torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0


class Normalize:
    def __init__(self, mean, std, inplace=False):
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def __call__(self, x):
        return (x - self.mean) / self.std


class Compose:
    def __init__(self, ts):
        self.ts = ts

    def __call__(self, x):
        for t in self.ts:
            x = t(x)
        return x


def __getattr__(name):  # training-only transforms are never called here
    return object
''',
    "transforms/functional.py": '''
import enum
from PIL import Image


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


_PIL = {InterpolationMode.NEAREST: Image.NEAREST, InterpolationMode.BILINEAR: Image.BILINEAR,
        InterpolationMode.BICUBIC: Image.BICUBIC}


def resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True):
    h, w = size  # torchvision takes (height, width); for PIL input it calls PIL's resize
    return img.resize((w, h), _PIL[interpolation])


def __getattr__(name):
    return object
''',
}


def write_shims(folder: Path) -> None:
    (folder / "flash_attn").mkdir(parents=True)
    (folder / "flash_attn" / "__init__.py").write_text(FLASH_ATTN_SHIM)
    for rel, text in TORCHVISION_SHIM.items():
        path = folder / "torchvision" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (folder / "cv2").mkdir()
    (folder / "cv2" / "__init__.py").write_text("")


def golden_picture():
    """The input of every golden: deterministic structure, 96×64."""
    import numpy as np
    from PIL import Image

    w, h = INPUT_SIZE
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    arr = np.stack([(x * 5) % 256, (y * 7) % 256, ((x + y) * 3) % 256], axis=-1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


# ------------------------------------------------------------------------------- reference defaults
def _call_defaults(tree, name: str) -> dict:
    """Keyword defaults of a function ``name`` in a parsed module (literals only)."""
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            args = node.args.args[len(node.args.args) - len(node.args.defaults):]
            return {a.arg: ast.literal_eval(d) for a, d in zip(args, node.args.defaults)}
    raise SystemExit(f"{name} not found in the reference")


def reference_defaults(src: Path) -> dict:
    """The sampler settings the reference ships: the inferencer's signatures, the notebook's editing
    cells (an input image and a prompt) and the demo app's ``edit_image``."""
    import ast
    import inspect

    from inferencer import InterleaveInferencer

    def sig(fn):
        return {k: (list(v.default) if isinstance(v.default, tuple) else v.default)
                for k, v in inspect.signature(fn).parameters.items() if v.default is not inspect.Parameter.empty}

    cells = []
    for cell in json.loads((src / "inference.ipynb").read_text())["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "code" and text.startswith("inference_hyper=dict("):
            call = ast.parse(text).body[0].value
            cells.append({k.arg: ast.literal_eval(k.value) for k in call.keywords})
    edit_cells = [c for c in cells if c.get("cfg_renorm_type") == "text_channel"]  # the two editing cells
    return {"interleave_inference": sig(InterleaveInferencer.interleave_inference),
            "gen_image": sig(InterleaveInferencer.gen_image),
            "notebook_edit": edit_cells,
            "app_edit_image": _call_defaults(ast.parse((src / "app.py").read_text()), "edit_image")}


# ------------------------------------------------------------------------------- reference process
def run_reference(ckpt: Path, out: Path, dtype: str) -> None:  # pragma: no cover - the reference's env
    import contextlib

    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file  # its dtype table is read before any alias below

    if dtype == "float32":
        # The reference hard-codes ``.to(torch.bfloat16)`` in attention and the MoT layers; aliasing the
        # name runs exactly its code in float32. Autocast is off (their autocast("cuda") becomes a no-op).
        torch.bfloat16 = torch.float32
        torch.autocast = torch.amp.autocast = lambda *a, **k: contextlib.nullcontext()
    else:
        # The released inference: bf16 weights under CUDA autocast; on a CPU the same bf16 matmuls.
        _autocast = torch.autocast

        class CpuAutocast(_autocast):
            def __init__(self, device_type, *a, **k):
                super().__init__("cpu", *a, **{**k, "dtype": torch.bfloat16})

        torch.autocast = torch.amp.autocast = CpuAutocast

    from data.transforms import ImageTransform
    from inferencer import GEN_THINK_SYSTEM_PROMPT, VLM_THINK_SYSTEM_PROMPT, InterleaveInferencer
    from modeling.autoencoder import AutoEncoder, AutoEncoderParams
    from modeling.bagel import (
        Bagel,
        BagelConfig,
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    torch.manual_seed(SEED)
    llm_config = Qwen2Config.from_json_file(str(ckpt / "llm_config.json"))
    llm_config.qk_norm, llm_config.tie_word_embeddings = True, False
    llm_config.layer_module = "Qwen2MoTDecoderLayer"
    vit_config = SiglipVisionConfig.from_json_file(str(ckpt / "vit_config.json"))
    vit_config.rope = False
    vit_config.num_hidden_layers -= 1
    ae_sd = load_file(str(ckpt / "ae.safetensors"))
    ch = ae_sd["encoder.conv_in.weight"].shape[0]
    levels = 1 + max(int(k.split(".")[2]) for k in ae_sd if k.startswith("encoder.down."))
    blocks = 1 + max(int(k.split(".")[4]) for k in ae_sd if k.startswith("encoder.down.0.block."))
    mult = [ae_sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels)]
    ae_params = AutoEncoderParams(resolution=256, in_channels=3, downsample=8, ch=ch, out_ch=3, ch_mult=mult,
                                  num_res_blocks=blocks, z_channels=ae_sd["decoder.conv_in.weight"].shape[1],
                                  scale_factor=0.3611, shift_factor=0.1159)
    ae = AutoEncoder(ae_params)
    ae.load_state_dict(ae_sd, strict=True)
    ae.eval()
    ema = load_file(str(ckpt / "ema.safetensors"))
    latent_side = int(ema["latent_pos_embed.pos_embed"].shape[0] ** 0.5)
    vit_side = int(ema["vit_pos_embed.pos_embed"].shape[0] ** 0.5)
    config = BagelConfig(visual_gen=True, visual_und=True, llm_config=llm_config, vit_config=vit_config,
                         vae_config=ae_params, vit_max_num_patch_per_side=vit_side,
                         connector_act="gelu_pytorch_tanh", latent_patch_size=2, max_latent_size=latent_side)
    model = Bagel(Qwen2ForCausalLM(llm_config), SiglipVisionModel(vit_config), config)
    model.vit_model.vision_model.embeddings.convert_conv2d_to_linear(vit_config)
    missing, unexpected = model.load_state_dict(ema, strict=False)
    if missing or unexpected:
        raise SystemExit(f"reference model does not take the demo checkpoint: missing {missing}, "
                         f"unexpected {unexpected}")
    model = model.to(torch.bfloat16).eval()  # the released inference's dtype (float32 under the alias)

    from tokenizers import Tokenizer

    class Tok:  # the reference only calls encode/decode; the demo ships tokenizer.json
        def __init__(self, path):
            self.t = Tokenizer.from_file(str(path))

        def encode(self, text):
            return self.t.encode(text, add_special_tokens=False).ids

        def decode(self, ids):
            return self.t.decode([int(i) for i in ids], skip_special_tokens=False)

    tok = Tok(ckpt / "tokenizer.json")
    ids = {k: tok.t.token_to_id(v) for k, v in (("bos_token_id", "<|im_start|>"), ("eos_token_id", "<|im_end|>"),
                                                 ("start_of_image", "<|vision_start|>"),
                                                 ("end_of_image", "<|vision_end|>"))}
    scale = (json.loads((ckpt / "g2u_demo.json").read_text())["default_edit_area"] ** 0.5) / 1024
    vae_transform = ImageTransform(int(1024 * scale), int(512 * scale), 16,
                                   max_pixels=int(14 * 14 * 9 * 1024 * scale * scale))
    vit_transform = ImageTransform(min(980, vit_side * 14), min(224, vit_side * 14), 14)
    inf = InterleaveInferencer(model, ae, tok, vae_transform, vit_transform, ids)
    image = golden_picture()

    # --- what each run lays out, generates and computes, captured by wrapping the reference's methods
    sinks: dict[str, list] = {"segments": [], "generated": [], "logits": [], "posterior": [], "noise": [],
                              "velocity": []}

    def tap(obj, name, sink, pick):
        orig = getattr(obj, name)

        def wrapper(*a, **k):
            result = orig(*a, **k)
            sinks[sink].append(pick(result))
            return result

        setattr(obj, name, wrapper)

    # Every text is laid out into the conditional context and again into the image-free CFG context; the
    # conditional one is the context dict the inferencer passes first (it is updated in place).
    contexts: list = []

    def tagged(name):
        orig = getattr(inf, name)

        def wrapper(item, ctx, *a, **k):
            if not contexts:
                contexts.append(ctx)
            kind = "cond" if ctx is contexts[0] else "image_free"
            before = len(sinks["segments"])
            result = orig(item, ctx, *a, **k)
            for seg in sinks["segments"][before:]:
                seg.setdefault("context", kind)
            return result

        setattr(inf, name, wrapper)

    tagged("update_context_text")
    tagged("update_context_image")
    tap(model, "prepare_prompts", "segments", lambda r: {"ids": r[0]["packed_text_ids"].tolist()})
    tap(model, "generate_text", "generated", lambda r: r[:, 0].tolist()[1:])  # without the start token
    tap(model, "prepare_vae_latent", "noise", lambda r: r["packed_init_noises"].float().clone())
    tap(model, "_forward_flow", "velocity", lambda r: r.detach().float().clone())
    tap(ae, "encode", "posterior", lambda r: r.detach().float().clone())
    model.language_model.lm_head.register_forward_hook(lambda m, i, o: sinks["logits"].append(o.detach().float()))

    def run(inputs, seed=None, **kw):
        for s in sinks.values():
            s.clear()
        contexts.clear()
        if seed is not None:
            torch.manual_seed(seed)
        result = inf.interleave_inference(inputs, **kw)
        got = {k: list(v) for k, v in sinks.items()}
        segs = got.pop("segments")
        got["segments"] = [s["ids"] for s in segs if s["context"] == "cond"]
        got["image_free_segments"] = [s["ids"] for s in segs if s["context"] == "image_free"]
        return result, got

    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {"bagel_commit": os.environ.get("BAGEL_COMMIT", "unknown"), "reference_dtype": dtype,
                  "seed": SEED, "question": QUESTION, "edit_prompt": EDIT_PROMPT, "input_size": list(INPUT_SIZE),
                  "resized": list(vae_transform.resize_transform(image).size),
                  "vlm_think_system_prompt": VLM_THINK_SYSTEM_PROMPT,
                  "gen_think_system_prompt": GEN_THINK_SYSTEM_PROMPT,
                  "defaults": reference_defaults(Path.cwd())}

    def uint8(img):
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())

    # understanding, plain and with the reasoning system prompt
    for name, think in (("understanding", False), ("understanding_think", True)):
        budget = TEXT_TOKENS if not think else THINK_TOKENS
        (text,), got = run([image, QUESTION], think=think, understanding_output=True, max_think_token_n=budget,
                           do_sample=False)
        tensors[f"{name}_logits"] = torch.cat(got["logits"]).contiguous()
        meta[name] = {"budget": budget, "text": text, "generated": got["generated"][0], "segments": got["segments"]}

    # the VAE: the transform's pixels and the posterior mean
    pixels = vae_transform(image)[None]
    ae.reg.sample = False
    with torch.no_grad():
        tensors["vae_pixels"] = pixels.float().contiguous()
        tensors["vae_mean"] = ae.encode(pixels).float().contiguous()
    ae.reg.sample = True  # as released: the edits below sample the posterior

    meta["edits"] = {}
    for name, case in EDIT_CASES.items():
        settings = {k: v for k, v in case.items() if k != "seed"}
        (edited,), got = run([image, EDIT_PROMPT], seed=case["seed"], **settings)
        tensors[f"{name}_posterior"] = got["posterior"][0].contiguous()
        tensors[f"{name}_noise"] = got["noise"][0].contiguous()
        tensors[f"{name}_velocities"] = torch.stack(got["velocity"]).contiguous()
        tensors[f"{name}_image"] = uint8(edited)
        meta["edits"][name] = {**case, "segments": got["segments"],
                               "image_free_segments": got["image_free_segments"]}

    settings = {k: v for k, v in THINK_EDIT.items() if k != "seed"}
    (plan, edited), got = run([image, EDIT_PROMPT], seed=THINK_EDIT["seed"], think=True,
                              max_think_token_n=THINK_TOKENS, do_sample=False, **settings)
    tensors["think_edit_image"] = uint8(edited)
    tensors["think_edit_velocities"] = torch.stack(got["velocity"]).contiguous()
    meta["think_edit"] = {**THINK_EDIT, "budget": THINK_TOKENS, "plan": plan, "generated": got["generated"][0],
                          "segments": got["segments"], "image_free_segments": got["image_free_segments"]}

    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "golden.safetensors"))
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


# ------------------------------------------------------------------------------- driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bagel-src", type=Path, help="checkout of ByteDance-Seed/Bagel (outside this repo)")
    parser.add_argument("--ref-site", type=Path, help="folder with the reference's python packages")
    parser.add_argument("--bagel-commit", default=PINNED_COMMIT, help="the commit the checkout is at")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="the reference's precision (stored goldens: float32)")
    parser.add_argument("--out", type=Path, default=Path("tests/golden/bagel"))
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)  # internal: checkpoint dir
    args = parser.parse_args()
    if args.reference is not None:
        run_reference(args.reference, args.out, args.dtype)
        return
    if args.bagel_commit != PINNED_COMMIT:
        raise SystemExit(f"goldens are pinned to {PINNED_COMMIT}; got {args.bagel_commit}")
    if not (args.bagel_src and (args.bagel_src / "inferencer.py").is_file()):
        raise SystemExit("--bagel-src must be a checkout of ByteDance-Seed/Bagel (inferencer.py missing)")
    from g2u.demo.bagel import build_bagel_demo

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = build_bagel_demo(tmp / "bagel", seed=SEED)
        write_shims(tmp / "shims")
        path = [str(tmp / "shims"), str(args.ref_site or ""), str(args.bagel_src.resolve()),
                str(Path(__file__).resolve().parent)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p), "BAGEL_COMMIT": args.bagel_commit}
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--reference", str(ckpt), "--dtype",
                        args.dtype, "--out", str(args.out.resolve())], check=True, cwd=args.bagel_src, env=env)
    print(f"goldens written to {args.out}")


if __name__ == "__main__":
    main()
