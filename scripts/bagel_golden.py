"""Golden tensors from the official BAGEL code, for ``tests/test_backend_bagel_golden.py``.

Usage (from the repository root, with the project's venv)::

    git --git-dir=<mirror of ByteDance-Seed/Bagel> archive 056b5fd51a88c1eb4547318609e25d40080fcf87 \\
        | (mkdir -p /tmp/bagel_ref && tar -x -C /tmp/bagel_ref)
    pip install --no-deps --target /tmp/bagel_ref_env transformers==4.49.0 tokenizers==0.21.0 \\
        huggingface_hub==0.29.1 einops==0.8.1
    python scripts/bagel_golden.py --bagel-src /tmp/bagel_ref --ref-site /tmp/bagel_ref_env

What it does:
1. builds the seeded tiny BAGEL demo checkpoint (``g2u.demo.bagel.build_bagel_demo``, seed 0) in a temp dir;
2. runs the *official* code (checkout outside this repo, never copied into it) on it in a subprocess whose
   path starts with the ``--ref-site`` packages (the transformers release their vendored Qwen2/SigLIP code
   was written against) and small run-time shims for what a CPU machine lacks:
   ``flash_attn.flash_attn_varlen_func`` (per-sequence SDPA in float32 on the bf16 inputs their attention
   passes it), ``torchvision`` (only the PIL bicubic resize / ToTensor / Normalize that ``ImageTransform``
   calls, which is what torchvision does for PIL images) and an empty ``cv2`` (training augmentations only);
3. writes ``tests/golden/bagel/golden.safetensors`` and ``meta.json``: understanding logits and greedy
   tokens, the VAE round trip, the initial noise, the first CFG velocity and the latents/image of a 3-step
   edit, and the think plan's tokens.

The AE posterior is read at its mean (``reg.sample = False``) so the goldens do not depend on an RNG draw
inside the reference; the edit's initial noise is recorded and fed to our sampler by the test.
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
TEXT_TOKENS = 6
THINK_TOKENS = 6
EDIT_STEPS = 3
NOISE_SEED = 123
EDIT = {"cfg_text_scale": 4.0, "cfg_img_scale": 1.0, "cfg_interval": [0.0, 1.0], "timestep_shift": 3.0,
        "cfg_renorm_min": 0.0, "cfg_renorm_type": "text_channel"}

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


# ------------------------------------------------------------------------------- reference process
def run_reference(ckpt: Path, out: Path) -> None:  # pragma: no cover - runs under the reference's env
    import torch
    from data.transforms import ImageTransform
    from inferencer import InterleaveInferencer
    from modeling.autoencoder import AutoEncoder, AutoEncoderParams
    from modeling.bagel import (
        Bagel,
        BagelConfig,
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipVisionConfig,
        SiglipVisionModel,
    )
    from safetensors.torch import load_file, save_file

    # The official inference runs the model in bfloat16 under CUDA autocast; on a CPU the same autocast
    # (bf16 matmuls) is CPU autocast: route their autocast("cuda") calls there.
    _autocast = torch.autocast

    class CpuAutocast(_autocast):
        def __init__(self, device_type, *a, **k):
            super().__init__("cpu", *a, **{**k, "dtype": torch.bfloat16})

    torch.autocast = torch.amp.autocast = CpuAutocast
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
    ae.reg.sample = False
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
    model = model.to(torch.bfloat16).eval()  # as the released inference (checkpoint loaded in bf16)

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

    logits: list[torch.Tensor] = []
    hook = model.language_model.lm_head.register_forward_hook(lambda m, i, o: logits.append(o.detach().float()))
    text = inf.interleave_inference([image, QUESTION], understanding_output=True, max_think_token_n=TEXT_TOKENS,
                                    do_sample=False)[0]
    text_logits = torch.cat(logits)
    logits.clear()
    think = inf.interleave_inference([image, EDIT_PROMPT], think=True, max_think_token_n=THINK_TOKENS,
                                     do_sample=False, num_timesteps=2, **EDIT)
    think_logits = torch.cat(logits)
    hook.remove()

    resized = vae_transform.resize_transform(image)
    pixels = vae_transform(image)[None]
    with torch.no_grad():
        z = ae.encode(pixels)
        recon = ae.decode(z)

    noises, velocities, final = [], [], []
    prep, flow, dec = model.prepare_vae_latent, model._forward_flow, inf.decode_image
    model.prepare_vae_latent = lambda *a, **k: (lambda r: noises.append(r["packed_init_noises"].clone()) or r)(
        prep(*a, **k))
    model._forward_flow = lambda *a, **k: (lambda v: velocities.append(v.detach().clone()) or v)(flow(*a, **k))
    inf.decode_image = lambda latent, shape: final.append(latent.detach().clone()) or dec(latent, shape)
    torch.manual_seed(NOISE_SEED)
    edited = inf.interleave_inference([image, EDIT_PROMPT], num_timesteps=EDIT_STEPS, **EDIT)[-1]

    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    save_file({
        "text_logits": text_logits.contiguous(),
        "text_tokens": text_logits.argmax(-1),
        "think_tokens": think_logits.argmax(-1),
        "vae_pixels": pixels.contiguous(),
        "vae_latents": z.contiguous(),
        "vae_recon": recon.float().contiguous(),
        "edit_noise": noises[0].float().contiguous(),
        "edit_velocity0": velocities[0].float().contiguous(),
        "edit_latents": final[0].float().contiguous(),
        "edit_image": torch.from_numpy(np.asarray(edited, dtype=np.uint8).copy()),
    }, str(out / "golden.safetensors"))
    (out / "meta.json").write_text(json.dumps({
        "bagel_commit": os.environ.get("BAGEL_COMMIT", "unknown"), "seed": SEED, "question": QUESTION,
        "edit_prompt": EDIT_PROMPT, "input_size": list(INPUT_SIZE), "resized": list(resized.size),
        "text": text, "think_plan": think[0] if isinstance(think[0], str) else None, "edit": EDIT,
        "edit_steps": EDIT_STEPS, "noise_seed": NOISE_SEED, "text_tokens": TEXT_TOKENS,
        "think_tokens": THINK_TOKENS,
    }, indent=2) + "\n")


# ------------------------------------------------------------------------------- driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bagel-src", type=Path, help="checkout of ByteDance-Seed/Bagel (outside this repo)")
    parser.add_argument("--ref-site", type=Path, help="folder with the reference's python packages")
    parser.add_argument("--bagel-commit", default=PINNED_COMMIT, help="the commit the checkout is at")
    parser.add_argument("--out", type=Path, default=Path("tests/golden/bagel"))
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)  # internal: checkpoint dir
    args = parser.parse_args()
    if args.reference is not None:
        run_reference(args.reference, args.out)
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
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--reference", str(ckpt),
                        "--out", str(args.out.resolve())], check=True, cwd=args.bagel_src, env=env)
    print(f"goldens written to {args.out}")


if __name__ == "__main__":
    main()
