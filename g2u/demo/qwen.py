"""Demo checkpoint for the ``qwen_image_edit`` backend: a tiny random Qwen-Image-Edit.

Written in the exact layout of ``Qwen/Qwen-Image-Edit`` (model_index.json, scheduler/, vae/,
text_encoder/, tokenizer/, processor/, transformer/), each component with ``save_pretrained``, so the
backend loads it with the same ``from_pretrained`` call as the real checkpoint. Kept from the real
configs: the scheduler (all values), the VAE's structure (8× spatial stride, 16 latent channels and
their real mean/std), the transformer's 2×2 packing (in_channels 64, out_channels 16) and a
Qwen2.5-VL text encoder with an LM head whose hidden size is the transformer's ``joint_attention_dim``.
Everything else is shrunk so the build takes well under a second on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

from g2u.backends.qwen_vl import build_tiny_qwen2_5_vl, save_qwen_vl_processor
from g2u.demo import write_demo_marker

DEMO_EDIT_AREA = 64 * 64
"""Default working area of the demo: tiny, so a demo edit takes milliseconds on a CPU."""

TEXT_HIDDEN_SIZE = 32

# scheduler/scheduler_config.json of Qwen/Qwen-Image-Edit.
SCHEDULER_CONFIG = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

# model_index.json of Qwen/Qwen-Image-Edit (written by hand: the pipeline object here may hold the
# image-only processor, whose class must not leak into the checkpoint).
MODEL_INDEX = {
    "_class_name": "QwenImageEditPipeline",
    "processor": ["transformers", "Qwen2VLProcessor"],
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
    "tokenizer": ["transformers", "Qwen2Tokenizer"],
    "transformer": ["diffusers", "QwenImageTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKLQwenImage"],
}


def build_qwen_image_edit_plus_demo(folder: Path, seed: int = 0) -> None:
    """A tiny random Qwen-Image-Edit-Plus (the 2509/2511 releases): the same components in the same layout,
    model_index.json naming ``QwenImageEditPlusPipeline`` (what tells the two apart)."""
    build_qwen_image_edit_demo(folder, seed=seed, pipeline_class="QwenImageEditPlusPipeline")


def build_qwen_image_edit_demo(folder: Path, seed: int = 0, pipeline_class: str = "QwenImageEditPipeline",
                               text_hidden_size: int = TEXT_HIDDEN_SIZE, text_options: dict | None = None) -> None:
    """Write a tiny random Qwen-Image-Edit checkpoint to ``folder`` (same seed → identical files).

    ``text_hidden_size`` widens the text encoder (and the transformer's ``joint_attention_dim`` with it):
    ``g2u demo train`` uses a wider answerer than the random demo; ``text_options`` passes its other shape
    knobs (layers, heads, vision width and depth) to ``build_tiny_qwen2_5_vl``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Real: base_dim 96, dim_mult [1, 2, 4, 4], num_res_blocks 2; stride 8 and z_dim 16 are kept.
        vae = AutoencoderKLQwenImage(
            base_dim=8,
            z_dim=16,
            dim_mult=[1, 2, 2, 2],
            num_res_blocks=1,
            attn_scales=[],
            temperal_downsample=[False, True, True],
        )
        torch.manual_seed(seed + 1)
        # Real: 60 layers, 24 heads × 128, joint_attention_dim 3584, axes_dims_rope (16, 56, 56).
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=64,
            out_channels=16,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=text_hidden_size,
            guidance_embeds=False,
            axes_dims_rope=(4, 6, 6),
        )
    vae.save_pretrained(folder / "vae")
    transformer.save_pretrained(folder / "transformer")

    text_encoder, _, processor = build_tiny_qwen2_5_vl(None, seed=seed + 2, hidden_size=text_hidden_size,
                                                        **(text_options or {}))
    text_encoder.save_pretrained(folder / "text_encoder")
    save_qwen_vl_processor(folder / "tokenizer", processor, with_vision=False)
    save_qwen_vl_processor(folder / "processor", processor)

    index = {**MODEL_INDEX, "_class_name": pipeline_class, "_diffusers_version": diffusers.__version__}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    write_demo_marker(folder, seed, default_edit_area=DEMO_EDIT_AREA)
