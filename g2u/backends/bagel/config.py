"""Read a BAGEL checkpoint folder in the released layout.

    ema.safetensors   the model (language model with both experts, SigLIP, connector, latent heads)
    ae.safetensors    the FLUX autoencoder (original names, no config)
    llm_config.json   Qwen2 config        vit_config.json   SigLIP vision config
    tokenizer files   Qwen2.5 tokenizer (tokenizer.json / vocab.json + merges.txt, tokenizer_config.json)

The released code sets a few values in code rather than in the files (MoT layers with Q/K norms, an
untied LM head, SigLIP without its last layer and without rotary embeddings, 2×2 latent patches); the
sizes that the files do determine (latent grid, ViT grid, timestep features) are read from tensor shapes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open
from transformers import Qwen2Config, SiglipVisionConfig

from g2u.errors import CheckpointError

REQUIRED_FILES = ("ema.safetensors", "ae.safetensors", "llm_config.json", "vit_config.json")
VAE_DOWNSAMPLE = 8


@dataclass(frozen=True)
class BagelDims:
    """Sizes of BAGEL's glue modules, read from ``ema.safetensors`` shapes."""

    hidden: int
    vit_hidden: int
    latent_channels: int
    latent_patch: int
    max_latent_per_side: int
    vit_max_per_side: int
    timestep_features: int

    @property
    def size_multiple(self) -> int:
        """Pixels per latent token side: the VAE stride × the latent patch."""
        return VAE_DOWNSAMPLE * self.latent_patch

    @property
    def max_edit_side(self) -> int:
        return self.max_latent_per_side * self.size_multiple


def check_layout(folder: Path) -> None:
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder} is not a BAGEL checkpoint: missing {', '.join(missing)}")


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a safetensors file, without reading the tensors."""
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def llm_config(folder: Path) -> Qwen2Config:
    data = json.loads((folder / "llm_config.json").read_text())
    data.update(tie_word_embeddings=False, qk_norm=True, layer_module="Qwen2MoTDecoderLayer")
    return Qwen2Config(**data)


def vit_config(folder: Path) -> SiglipVisionConfig:
    data = json.loads((folder / "vit_config.json").read_text())
    data["num_hidden_layers"] = data["num_hidden_layers"] - 1  # BAGEL uses the penultimate layer's features
    data["vision_use_head"] = False
    config = SiglipVisionConfig(**data)
    config._attn_implementation = "sdpa"
    return config


def bagel_dims(shapes: dict[str, tuple[int, ...]], ae_shapes: dict[str, tuple[int, ...]], llm: Qwen2Config,
               vit: SiglipVisionConfig) -> BagelDims:
    """Glue sizes from the two files: the VAE fixes the latent channels C, ``vae2llm`` takes p·p·C."""

    def side(name: str) -> int:
        rows = shapes[name][0]
        n = math.isqrt(rows)
        if n * n != rows:
            raise CheckpointError(f"{name} has {rows} rows, not a square grid")
        return n

    try:
        channels = ae_shapes["decoder.conv_in.weight"][1]
        patch_values = shapes["vae2llm.weight"][1]
        patch = math.isqrt(patch_values // channels)
        if patch * patch * channels != patch_values:
            raise CheckpointError(f"vae2llm takes {patch_values} values, not p²×{channels} latent channels")
        return BagelDims(
            hidden=llm.hidden_size,
            vit_hidden=vit.hidden_size,
            latent_channels=channels,
            latent_patch=patch,
            max_latent_per_side=side("latent_pos_embed.pos_embed"),
            vit_max_per_side=side("vit_pos_embed.pos_embed"),
            timestep_features=shapes["time_embedder.mlp.0.weight"][1],
        )
    except KeyError as exc:
        raise CheckpointError(f"missing tensor {exc.args[0]}: not a BAGEL-MoT checkpoint") from exc
