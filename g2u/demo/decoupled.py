"""Demo checkpoints for the ``decoupled`` backend: a tiny diffusers editor + a tiny transformers answerer.

Two layouts, each a folder with ``g2u_backend.json``, ``editor/`` (a ``DiffusionPipeline`` folder with
``model_index.json``) and ``answerer/`` (an image-text-to-text model folder with its processor):

* ``build_decoupled_demo``: InstructPix2Pix editor (UNet with 8 input channels: noisy latents + image
  latents) + tiny Qwen2.5-VL answerer.
* ``build_decoupled_kontext_demo``: FLUX.1-Kontext editor (Flux transformer with guidance embedding,
  CLIP + T5 text encoders) + tiny LLaVA-1.5 answerer (CLIP vision tower + Llama).

Weights are random (seeded, so the same seed writes the same weights); tokenizers are character-level
vocabularies built in code, so nothing is downloaded. The configs keep the real architectures' structural
constants that the backend depends on (VAE stride 8, Flux 2×2 latent packing, LLaVA's CLS-dropping
feature selection) and shrink everything else so that each builder runs in a few seconds on a CPU.
"""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Iterator
from pathlib import Path

import torch

from g2u.decoding import non_text_token_ids
from g2u.demo import write_demo_marker

DEMO_EDIT_AREA = 64 * 64
"""Default working area of the demo editors: tiny, so a demo edit takes milliseconds."""

BACKEND_FILE = "g2u_backend.json"

# Reading-order chat template for the tiny LLaVA: images and text are rendered where they appear,
# so the G→U order [I, q, Î] survives (the stock llava-1.5 template renders all images first). It
# writes the BOS itself, so the prompt is complete when tokenized with add_special_tokens=False.
LLAVA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG for model init without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE uses for raw bytes (GPT-2/CLIP mapping)."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    visible += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in visible:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _clip_tokenizer():
    """Character-level CLIP BPE tokenizer: every byte is a token, with and without the word-end mark."""
    from transformers import CLIPTokenizer

    alphabet = _byte_level_alphabet()
    tokens = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [c + "</w>" for c in alphabet]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer():
    """Character-level T5 (Unigram) tokenizer over printable ASCII, no sentinel tokens."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in string.printable.strip()]
    pieces += [("▁" + c, -2.5) for c in string.ascii_letters + string.digits]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _llama_tokenizer():
    """Character-level Llama tokenizer (byte fallback) with LLaVA's ``<image>`` placeholder token."""
    from transformers import LlamaTokenizer

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁"]
    tokens += list(string.ascii_letters + string.digits + string.punctuation)
    tokens += ["▁" + c for c in string.ascii_letters + string.digits]
    tok = LlamaTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], padding_side="left")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<unk>"})
    tok.chat_template = LLAVA_CHAT_TEMPLATE
    return tok


def _clip_text_encoder(vocab_size: int, hidden: int):
    """Tiny CLIP text tower; ``eos_token_id`` is the real one of our vocab so pooling finds it."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=hidden,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    return CLIPTextModel(cfg).eval()


def _vae(latent_channels: int, **kwargs):
    """Tiny ``AutoencoderKL`` with four levels, i.e. the real stride of 8 pixels per latent."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels, sample_size=64, **kwargs,
    ).eval()


def build_instruct_pix2pix_pipeline(seed: int = 0):
    """A tiny random ``StableDiffusionInstructPix2PixPipeline`` (no safety checker)."""
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )

    tokenizer = _clip_tokenizer()
    with _seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
        ).eval()
    with _seeded(seed + 1):
        vae = _vae(latent_channels=4)
    with _seeded(seed + 2):
        text_encoder = _clip_text_encoder(len(tokenizer), hidden=32)
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    )
    return StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_flux_kontext_pipeline(seed: int = 0):
    """A tiny random ``FluxKontextPipeline`` (guidance-distilled transformer, as FLUX.1-Kontext-dev)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    latent_channels = 4
    tokenizer, tokenizer_2 = _clip_tokenizer(), _t5_tokenizer()
    with _seeded(seed):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
            guidance_embeds=True, axes_dims_rope=(4, 4, 8),
        ).eval()
    with _seeded(seed + 1):
        vae = _vae(latent_channels, shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False,
                   use_post_quant_conv=False)
    with _seeded(seed + 2):
        text_encoder = _clip_text_encoder(len(tokenizer), hidden=32)
    with _seeded(seed + 3):
        t5_cfg = T5Config(
            vocab_size=len(tokenizer_2), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_heads=4,
            relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )
        text_encoder_2 = T5EncoderModel(t5_cfg).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    return FluxKontextPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
    )


def build_tiny_llava(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` in the llava-hf layout.

    Vision tower: CLIP ViT, 32² input, 8-pixel patches, LLaVA-1.5's ``default`` feature selection (drops
    CLS), so each image costs 16 ``<image>`` tokens.
    """
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    tokenizer = _llama_tokenizer()
    image_size, patch = 32, 8
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch, projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        image_seq_length=(image_size // patch) ** 2,
    )
    with _seeded(seed + 10):
        model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    # Word pieces only: random weights would sample control bytes (g2u.decoding).
    model.generation_config.suppress_tokens = non_text_token_ids(tokenizer, len(tokenizer),
                                                                 keep=[tokenizer.eos_token_id])
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _write_backend_file(folder: Path) -> None:
    (folder / BACKEND_FILE).write_text(
        json.dumps({"backend": "decoupled", "editor": "editor", "answerer": "answerer"}, indent=2) + "\n"
    )


def build_decoupled_demo(folder: str | Path, seed: int = 0) -> Path:
    """Demo checkpoint: tiny InstructPix2Pix editor + tiny Qwen2.5-VL answerer."""
    from g2u.backends.qwen_vl import build_tiny_qwen2_5_vl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_instruct_pix2pix_pipeline(seed).save_pretrained(folder / "editor")
    build_tiny_qwen2_5_vl(folder / "answerer", seed=seed + 10)
    _write_backend_file(folder)
    write_demo_marker(folder, seed, default_edit_area=DEMO_EDIT_AREA)
    return folder


def build_decoupled_kontext_demo(folder: str | Path, seed: int = 0) -> Path:
    """Demo checkpoint: tiny FLUX.1-Kontext editor + tiny LLaVA answerer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_flux_kontext_pipeline(seed).save_pretrained(folder / "editor")
    build_tiny_llava(folder / "answerer", seed=seed)
    _write_backend_file(folder)
    write_demo_marker(folder, seed, default_edit_area=DEMO_EDIT_AREA)
    return folder


__all__ = [
    "DEMO_EDIT_AREA",
    "build_decoupled_demo",
    "build_decoupled_kontext_demo",
    "build_flux_kontext_pipeline",
    "build_instruct_pix2pix_pipeline",
    "build_tiny_llava",
]
