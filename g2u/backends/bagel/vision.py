"""BAGEL's understanding-side image path: resize → SigLIP (NaViT-style, any aspect ratio) → connector.

The encoder is transformers' ``SiglipVisionModel`` (its encoder layers and post-layernorm, SDPA attention)
under the released names ``vit_model.vision_model.*``. BAGEL replaces the conv patch embedding with an
equivalent linear layer over flattened patches and indexes the position table with ids laid out on a
fixed ``max_patches_per_side`` grid, so images of any size share one table; both are reproduced here.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

VIT_MAX_SIDE = 980
VIT_MIN_SIDE = 224
VIT_MAX_PIXELS = 14 * 14 * 9 * 1024
"""The released understanding transform (``ImageTransform(980, 224, 14)``)."""


def to_unit_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """``[3, H, W]`` in [-1, 1] (mean 0.5, std 0.5) after a bicubic resize to ``size`` (width, height)."""
    img = image.convert("RGB")
    if img.size != tuple(size):
        img = img.resize(size, Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / 255.0
    return arr.permute(2, 0, 1) * 2.0 - 1.0


class VitContainer(nn.Module):
    """``vit_model``: holds ``vision_model`` (transformers' SigLIP) under the released prefix."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.vision_model = SiglipVisionModel(config)
        emb = self.vision_model.embeddings
        # The released checkpoint stores the patch embedding as a linear layer over flattened patches.
        emb.patch_embedding = nn.Linear(config.num_channels * config.patch_size**2, config.hidden_size)
        self.patch_size = config.patch_size
        self.max_patches_per_side = config.image_size // config.patch_size

    def encode(self, patches: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """``[images, n, p·p·3]`` patches of same-sized images → ``[images, n, hidden]`` features."""
        vm = self.vision_model
        x = vm.embeddings.patch_embedding(patches) + vm.embeddings.position_embedding(position_ids)
        x = vm.encoder(inputs_embeds=x).last_hidden_state
        return vm.post_layernorm(x)


class MLPConnector(nn.Module):
    """ViT features → LLM hidden size (``connector.fc1/fc2``)."""

    def __init__(self, in_dim: int, out_dim: int, act: str = "gelu_pytorch_tanh"):
        super().__init__()
        from transformers.activations import ACT2FN

        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = ACT2FN[act]
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
