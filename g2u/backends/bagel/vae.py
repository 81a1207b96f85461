"""The FLUX autoencoder BAGEL ships as ``ae.safetensors``, run as diffusers' ``AutoencoderKL``.

The released file uses the original (Black Forest Labs) parameter names and carries no config; the
architecture is read from the tensor shapes and the names are mapped to diffusers' both ways (the demo
builder writes the released names with the same table). Latents are normalised as BAGEL does:
``z = 0.3611 · (x − 0.1159)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from diffusers import AutoencoderKL

FLUX_SCALE = 0.3611
FLUX_SHIFT = 0.1159
FLUX_NORM_GROUPS = 32


def vae_config_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """diffusers ``AutoencoderKL`` kwargs for a FLUX-layout state dict (names → shapes)."""
    levels = sorted({int(k.split(".")[2]) for k in shapes if k.startswith("encoder.down.")})
    widths = [shapes[f"encoder.down.{i}.block.0.conv1.weight"][0] for i in levels]
    blocks = {int(k.split(".")[4]) for k in shapes if k.startswith("encoder.down.0.block.")}
    return {
        "in_channels": shapes["encoder.conv_in.weight"][1],
        "out_channels": shapes["decoder.conv_out.weight"][0],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": widths,
        "layers_per_block": len(blocks),
        "latent_channels": shapes["decoder.conv_in.weight"][1],
        "norm_num_groups": FLUX_NORM_GROUPS,
        "scaling_factor": FLUX_SCALE,
        "shift_factor": FLUX_SHIFT,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
    }


_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_RESNET = {"conv_shortcut": "nin_shortcut"}


def released_name(key: str, levels: int) -> str:
    """The FLUX/BFL name of a diffusers ``AutoencoderKL`` parameter."""
    side, rest = key.split(".", 1)
    rest = rest.replace("conv_norm_out", "norm_out")
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)", rest):
        kind, i, j, part, p = m.groups()
        level = int(i) if kind == "down" else levels - 1 - int(i)
        rest = f"{kind}.{level}.block.{j}.{_RESNET.get(part, part)}.{p}"
    elif m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(downsamplers|upsamplers)\.0\.conv\.(\w+)", rest):
        kind, i, _, p = m.groups()
        level = int(i) if kind == "down" else levels - 1 - int(i)
        rest = f"{kind}.{level}.{'downsample' if kind == 'down' else 'upsample'}.conv.{p}"
    elif m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(\w+)\.(\w+)", rest):
        j, part, p = m.groups()
        rest = f"mid.block_{int(j) + 1}.{_RESNET.get(part, part)}.{p}"
    elif m := re.fullmatch(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(\w+)", rest):
        part, p = m.groups()
        rest = f"mid.attn_1.{_ATTN[part]}.{p}"
    return f"{side}.{rest}"


def _is_attn_matrix(key: str) -> bool:
    return bool(re.search(r"attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$", key))


def to_released(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """A diffusers FLUX-style VAE's weights under the released names (1×1 convs for attention)."""
    levels = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        out[released_name(key, levels)] = value[:, :, None, None] if _is_attn_matrix(key) else value
    return out


def load_flux_vae(state: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """Build diffusers' ``AutoencoderKL`` from a released-name state dict (strict: every name maps).

    The weights are assigned already in ``dtype`` (diffusers warns on any ``.to(dtype)`` cast)."""
    config = vae_config_from_shapes({k: tuple(v.shape) for k, v in state.items()})
    vae = AutoencoderKL(**config)
    levels = len(config["block_out_channels"])
    converted = {}
    for key, ref in vae.state_dict().items():
        value = state[released_name(key, levels)]
        value = value.reshape(ref.shape) if _is_attn_matrix(key) else value
        converted[key] = value.to(dtype)
    vae.load_state_dict(converted, strict=True, assign=True)
    return vae.eval().requires_grad_(False)


def encode_latents(vae: AutoencoderKL, pixels: torch.Tensor,
                   generators: list[torch.Generator] | None) -> torch.Tensor:
    """``[B, 3, H, W]`` in [-1, 1] → normalised latents ``[B, C, H/8, W/8]``.

    With ``generators`` the posterior is sampled, one generator per image (BAGEL samples it); without,
    its mean is used."""
    posterior = vae.encode(pixels.to(vae.dtype)).latent_dist
    if generators is None:
        z = posterior.mean
    else:
        noise = torch.stack([torch.randn(posterior.mean.shape[1:], generator=g, dtype=torch.float32)
                             for g in generators]).to(posterior.mean.device, posterior.mean.dtype)
        z = posterior.mean + posterior.std * noise
    return FLUX_SCALE * (z - FLUX_SHIFT)


def decode_latents(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    """Normalised latents → pixels in [-1, 1]."""
    return vae.decode((z / FLUX_SCALE + FLUX_SHIFT).to(vae.dtype)).sample
