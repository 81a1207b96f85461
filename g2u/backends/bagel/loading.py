"""Load a released-layout BAGEL folder: model (``ema.safetensors``), FLUX VAE, tokenizer.

The model is built without allocating weights (accelerate's ``init_empty_weights``) and the checkpoint's
tensors are assigned in place, already on the target device and dtype: the 14B-parameter real model never
exists twice in memory and never goes through a random initialisation.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from g2u.backends.bagel.config import bagel_dims, check_layout, llm_config, tensor_shapes, vit_config
from g2u.backends.bagel.model import BagelModel, SpecialTokens
from g2u.backends.bagel.vae import load_flux_vae
from g2u.errors import CheckpointError

PATCH_EMBED = "vit_model.vision_model.embeddings.patch_embedding.weight"
_VIT_LAYER = re.compile(r"vit_model\.vision_model\.encoder\.layers\.(\d+)\.")
SPECIAL_TOKENS = {"bos": "<|im_start|>", "eos": "<|im_end|>",
                  "start_of_image": "<|vision_start|>", "end_of_image": "<|vision_end|>"}


def load_tokenizer(folder: Path) -> tuple[PreTrainedTokenizerBase, SpecialTokens]:
    """The Qwen2.5 tokenizer and BAGEL's four structural tokens (which must be in its vocabulary)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the tokenizer from {folder}: {exc}") from exc
    vocab = tokenizer.get_vocab()
    missing = [tok for tok in SPECIAL_TOKENS.values() if tok not in vocab]
    if missing:
        raise CheckpointError(f"the tokenizer in {folder} lacks {', '.join(missing)}")
    return tokenizer, SpecialTokens(**{k: vocab[tok] for k, tok in SPECIAL_TOKENS.items()})


def load_model(folder: Path, special: SpecialTokens, device: torch.device, dtype: torch.dtype) -> BagelModel:
    check_layout(folder)
    llm, vit = llm_config(folder), vit_config(folder)
    dims = bagel_dims(tensor_shapes(folder / "ema.safetensors"), tensor_shapes(folder / "ae.safetensors"), llm, vit)
    with init_empty_weights():
        model = BagelModel(llm, vit, dims, special)
    state = {}
    with safe_open(str(folder / "ema.safetensors"), framework="pt") as f:
        for key in f.keys():
            layer = _VIT_LAYER.match(key)
            if layer and int(layer.group(1)) >= vit.num_hidden_layers:
                continue  # the released SigLIP's last layer is not used
            tensor = f.get_tensor(key)
            if key == PATCH_EMBED and tensor.ndim == 4:  # a conv kernel: flatten as (row, col, channel)
                tensor = tensor.permute(0, 2, 3, 1).reshape(tensor.shape[0], -1)
            state[key] = tensor.to(device=device, dtype=dtype)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"ema.safetensors does not match BAGEL-MoT: missing {result.missing_keys[:5]}, "
                              f"unexpected {result.unexpected_keys[:5]}")
    return model.to(device).eval().requires_grad_(False)


def load_vae(folder: Path, device: torch.device, dtype: torch.dtype) -> AutoencoderKL:
    return load_flux_vae(load_file(str(folder / "ae.safetensors")), dtype).to(device)
