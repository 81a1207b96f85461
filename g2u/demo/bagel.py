"""Demo checkpoint for the ``bagel`` backend: a tiny random BAGEL-MoT in the released layout.

Writes what ``ByteDance-Seed/BAGEL-7B-MoT`` ships — ``ema.safetensors`` (released parameter names, the
SigLIP patch embedding as a linear layer, the SigLIP's unused last layer absent), ``ae.safetensors``
(FLUX autoencoder, original names), ``llm_config.json``, ``vit_config.json`` and Qwen2-style tokenizer
files — so the backend loads it with the code path of the real checkpoint. Kept from the real model:
the MoT structure (two experts, Q/K norms), GQA, 2×2 latent patches over a stride-8, 16-channel VAE,
the 14-pixel ViT patches and the 256 timestep features. Everything else is shrunk.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file
from transformers import Qwen2Config, SiglipVisionConfig

from g2u.backends.bagel.config import BagelDims
from g2u.backends.bagel.model import BagelModel, SpecialTokens
from g2u.backends.bagel.vae import FLUX_NORM_GROUPS, FLUX_SCALE, FLUX_SHIFT, to_released
from g2u.demo import write_demo_marker

DEMO_EDIT_AREA = 64 * 64
"""Default working area of the demo: a 4×4 latent-token edit, milliseconds per step on a CPU."""

TOKENIZER_VOCAB = 400

# Shapes of the released llm_config.json / vit_config.json, shrunk (real: hidden 3584, 28 layers, 28 heads,
# 4 KV heads, intermediate 18944; SigLIP so400m: hidden 1152, 27 layers, 16 heads, 980 px / 14).
LLM_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "max_position_embeddings": 32768,
    "max_window_layers": 2,
    "model_type": "qwen2",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "qk_norm": True,
    "layer_module": "Qwen2MoTDecoderLayer",
}
VIT_CONFIG = {
    "model_type": "siglip_vision_model",
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": 32,
    "image_size": 280,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-06,
    "num_attention_heads": 2,
    "num_channels": 3,
    "num_hidden_layers": 3,
    "patch_size": 14,
}
MAX_LATENT_PER_SIDE = 16
"""Largest demo edit: 16 latent tokens a side = 256 px (real: 64 → 1024 px)."""


def build_bagel_demo(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random BAGEL-MoT checkpoint to ``folder`` (same seed → identical files)."""
    from g2u.backends.qwen_vl import _train_tiny_qwen_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tiny_qwen_tokenizer(TOKENIZER_VOCAB)
    tokenizer.save_pretrained(str(folder))
    vocab = tokenizer.get_vocab()
    special = SpecialTokens(bos=vocab["<|im_start|>"], eos=vocab["<|im_end|>"],
                            start_of_image=vocab["<|vision_start|>"], end_of_image=vocab["<|vision_end|>"])

    llm_data = {**LLM_CONFIG, "vocab_size": (len(tokenizer) + 63) // 64 * 64}
    vit_data = dict(VIT_CONFIG)
    (folder / "llm_config.json").write_text(json.dumps(llm_data, indent=2) + "\n")
    (folder / "vit_config.json").write_text(json.dumps(vit_data, indent=2) + "\n")

    used_vit = SiglipVisionConfig(**{**vit_data, "num_hidden_layers": vit_data["num_hidden_layers"] - 1,
                                     "vision_use_head": False})
    dims = BagelDims(hidden=llm_data["hidden_size"], vit_hidden=vit_data["hidden_size"], latent_channels=16,
                     latent_patch=2, max_latent_per_side=MAX_LATENT_PER_SIDE,
                     vit_max_per_side=vit_data["image_size"] // vit_data["patch_size"], timestep_features=256)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BagelModel(Qwen2Config(**llm_data), used_vit, dims, special)
        _randomise_norms(model)
        torch.manual_seed(seed + 1)
        # Real FLUX AE: 128/256/512/512 channels, 2 blocks per level; stride 8 and 16 channels are kept.
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 32, 32], layers_per_block=1,
            latent_channels=16, norm_num_groups=FLUX_NORM_GROUPS, scaling_factor=FLUX_SCALE,
            shift_factor=FLUX_SHIFT, use_quant_conv=False, use_post_quant_conv=False,
        )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "ema.safetensors"))
    save_file({k: v.contiguous() for k, v in to_released(vae).items()}, str(folder / "ae.safetensors"))
    write_demo_marker(folder, seed, default_edit_area=DEMO_EDIT_AREA)
    return folder


def _randomise_norms(model: torch.nn.Module) -> None:
    """Norm gains near 1 but not 1, so the two experts' norms differ (a test can tell them apart)."""
    for name, param in model.named_parameters():
        if name.endswith("norm.weight") or "layernorm" in name and name.endswith("weight"):
            param.data.uniform_(0.8, 1.2)
