"""Random-weight models of the real architectures at three sizes, built in memory (never saved).

* ``tiny``: the demo checkpoint's shapes (``g2u.demo``), milliseconds per stage.
* ``small``: the real depth (60 transformer blocks, 28 decoder layers, 32 vision blocks) at reduced
  width, a few hundred MB: per-layer overheads are real, so CPU ratios mean something.
* ``real``: the released configs, written below as dicts from the public ``config.json`` files of
  ``Qwen/Qwen-Image-Edit`` (transformer, vae, text_encoder = Qwen2.5-VL-7B-Instruct) and
  ``ByteDance-Seed/BAGEL-7B-MoT`` (llm_config, vit_config, FLUX ae). Built on the ``meta`` device for the
  FLOP ledger (no weights allocated), or on a GPU for timing.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import torch

from g2u.errors import InputError

SIZES = ("tiny", "small", "real")

# Qwen/Qwen-Image-Edit transformer/config.json (diffusers QwenImageTransformer2DModel).
REAL_QWEN_IMAGE_TRANSFORMER: dict[str, Any] = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}
# Qwen/Qwen-Image-Edit vae/config.json (AutoencoderKLQwenImage; latents_mean/std are the class defaults).
REAL_QWEN_IMAGE_VAE: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
}
# Qwen/Qwen-Image-Edit text_encoder/config.json = Qwen/Qwen2.5-VL-7B-Instruct config.json.
REAL_QWEN2_5_VL_7B_TEXT: dict[str, Any] = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
REAL_QWEN2_5_VL_7B_VISION: dict[str, Any] = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
REAL_QWEN2_5_VL_7B_TOKENS: dict[str, int] = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}
# ByteDance-Seed/BAGEL-7B-MoT llm_config.json (Qwen2.5-7B with the MoT decoder layer) and vit_config.json
# (SigLIP so400m/14 at 980 px; BAGEL drops its last layer when loading).
REAL_BAGEL_LLM: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_act": "silu",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "model_type": "qwen2",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "vocab_size": 152064,
    "qk_norm": True,
    "layer_module": "Qwen2MoTDecoderLayer",
}
REAL_BAGEL_VIT: dict[str, Any] = {
    "model_type": "siglip_vision_model",
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": 1152,
    "image_size": 980,
    "intermediate_size": 4304,
    "layer_norm_eps": 1e-06,
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 27,
    "patch_size": 14,
}

# Small: the real depths, widths cut so the whole Qwen-Image-Edit is ~65M parameters (~260 MB fp32).
SMALL_QWEN_IMAGE_TRANSFORMER = {**REAL_QWEN_IMAGE_TRANSFORMER, "attention_head_dim": 64, "num_attention_heads": 2,
                                "joint_attention_dim": 256, "axes_dims_rope": (8, 28, 28)}
SMALL_QWEN_IMAGE_VAE = {**REAL_QWEN_IMAGE_VAE, "base_dim": 16}
SMALL_QWEN2_5_VL_TEXT = {"hidden_size": 256, "intermediate_size": 1344, "num_layers": 28, "heads": 4, "kv_heads": 1,
                         "vision_depth": 32, "vision_hidden": 128, "vision_intermediate": 320}


@dataclass
class QwenImageEditParts:
    """The six components of a Qwen-Image-Edit pipeline (processor/tokenizer None on meta)."""

    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    processor: Any
    scheduler: Any


def check_size(size: str) -> str:
    if size not in SIZES:
        raise InputError("size", f"must be one of {', '.join(SIZES)}; got {size!r}")
    return size


def real_qwen2_5_vl_config():
    """``Qwen2_5_VLConfig`` of Qwen2.5-VL-7B-Instruct (the Qwen-Image-Edit text encoder)."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(text_config=copy.deepcopy(REAL_QWEN2_5_VL_7B_TEXT),
                            vision_config=copy.deepcopy(REAL_QWEN2_5_VL_7B_VISION),
                            tie_word_embeddings=False, **REAL_QWEN2_5_VL_7B_TOKENS)


def build_qwen_image_edit(size: str, seed: int = 0, device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32) -> QwenImageEditParts:
    """Random-weight Qwen-Image-Edit components at ``size``.

    ``real`` on ``device="meta"`` allocates nothing (for the FLOP ledger); tokenizer and processor are then
    None (the ledger feeds token counts, not text). ``tiny``/``small`` use the demo's trained tiny BPE.
    """
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    from g2u.demo.qwen import SCHEDULER_CONFIG, TEXT_HIDDEN_SIZE

    check_size(size)
    scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
    if size == "tiny":
        tcfg = {**REAL_QWEN_IMAGE_TRANSFORMER, "num_layers": 2, "attention_head_dim": 16, "num_attention_heads": 2,
                "joint_attention_dim": TEXT_HIDDEN_SIZE, "axes_dims_rope": (4, 6, 6)}
        vcfg = {**REAL_QWEN_IMAGE_VAE, "base_dim": 8, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1}
    elif size == "small":
        tcfg, vcfg = SMALL_QWEN_IMAGE_TRANSFORMER, SMALL_QWEN_IMAGE_VAE
    else:
        tcfg, vcfg = REAL_QWEN_IMAGE_TRANSFORMER, REAL_QWEN_IMAGE_VAE

    direct = size == "real" and torch.device(device).type != "meta"  # 20 B parameters: never in fp32 first
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        with _default_dtype(dtype) if direct else contextlib.nullcontext():
            transformer = QwenImageTransformer2DModel(**tcfg).to(dtype).eval()
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLQwenImage(**vcfg).to(dtype).eval()
        torch.manual_seed(seed + 2)
        text_encoder, tokenizer, processor = _build_text_encoder(size, seed + 2, dtype)
    return QwenImageEditParts(transformer, vae, text_encoder, tokenizer, processor, scheduler)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _build_text_encoder(size: str, seed: int, dtype: torch.dtype):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from g2u.backends.qwen_vl import build_tiny_qwen2_5_vl
    from g2u.demo.qwen import TEXT_HIDDEN_SIZE

    if size == "real":
        config = real_qwen2_5_vl_config()
        if torch.empty(0).device.type == "meta":  # the ledger: shapes only, no text to tokenize
            return Qwen2_5_VLForConditionalGeneration(config).to(dtype).eval(), None, None
        # Timed at real size (a GPU): the demo's tiny BPE and an image processor with the real pixel bounds
        # stand in for the hub's tokenizer (random weights read any ids below the real vocabulary); the
        # config's special-token ids follow that tokenizer. Built in ``dtype`` directly: 8.3 B parameters
        # in fp32 first would need twice the memory.
        _, tok, proc = build_tiny_qwen2_5_vl(None, seed, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
        ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
            ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
        for name, value in ids.items():
            setattr(config, name, value)
            if hasattr(config.text_config, name):
                setattr(config.text_config, name, value)
        config.text_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
        config.text_config.pad_token_id = config.text_config.bos_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
        with _default_dtype(dtype):
            model = Qwen2_5_VLForConditionalGeneration(config).eval()
        return model, tok, proc
    if size == "tiny":
        model, tok, proc = build_tiny_qwen2_5_vl(None, seed, hidden_size=TEXT_HIDDEN_SIZE)
        return model.to(dtype), tok, proc
    s = SMALL_QWEN2_5_VL_TEXT
    # Real processor pixel bounds would make 256² cost 81 merged tokens, as with the real model.
    model, tok, proc = build_tiny_qwen2_5_vl(None, seed, hidden_size=s["hidden_size"], num_layers=s["num_layers"],
                                             vision_depth=s["vision_depth"], min_pixels=56 * 56,
                                             max_pixels=28 * 28 * 1280, heads=s["heads"], kv_heads=s["kv_heads"],
                                             intermediate_size=s["intermediate_size"],
                                             vision_hidden=s["vision_hidden"],
                                             vision_intermediate=s["vision_intermediate"],
                                             fullatt_block_indexes=REAL_QWEN2_5_VL_7B_VISION["fullatt_block_indexes"])
    return model.to(dtype), tok, proc


def qwen_image_edit_pipeline(parts: QwenImageEditParts):
    """The g2u pipeline class over in-memory components (same class the backend loads from disk)."""
    from g2u.backends.qwen_edit_pipeline import QwenImageEditG2UPipeline

    return QwenImageEditG2UPipeline(scheduler=parts.scheduler, vae=parts.vae, text_encoder=parts.text_encoder,
                                    tokenizer=parts.tokenizer, processor=parts.processor,
                                    transformer=parts.transformer)


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (meta tensors included: shapes only)."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
