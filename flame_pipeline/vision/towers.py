"""The FLAME image tower: a transformers ViT from scratch + a per-token projector into the LLM space.

Features are all patch tokens of the ViT's last layer (after its final LayerNorm; the CLS token
is dropped). Each token goes through Linear(d_vision -> h) -> GELU -> Linear(h -> d_llm)
-> LayerNorm, h = max(d_llm, ``vision.projector_min_width``) (d_llm by default, at least 4096 in
the reference code); the image embedding is the mean over the projected patch tokens. The model also
holds the sigmoid loss's learned logit scale and bias (initialised from ``train.logit_scale_init``
and ``train.logit_bias_init``; the reference's 10 and -10).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTConfig, ViTModel

from flame_pipeline.config import VisionConfig


def vit_config(v: VisionConfig) -> ViTConfig:
    if v.hidden_size % v.heads:
        raise ValueError(f"vision.hidden_size {v.hidden_size} is not divisible by vision.heads {v.heads}")
    if v.image_size % v.patch_size:
        raise ValueError(f"vision.image_size {v.image_size} is not a multiple of vision.patch_size {v.patch_size}")
    return ViTConfig(hidden_size=v.hidden_size, num_hidden_layers=v.layers,
                     num_attention_heads=v.heads, intermediate_size=v.mlp_size,
                     image_size=v.image_size, patch_size=v.patch_size, num_channels=3,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


class FlameModel(nn.Module):
    def __init__(self, vision: VisionConfig, d_llm: int, logit_scale: float = 10.0,
                 logit_bias: float = -10.0):
        super().__init__()
        self.vision_config = vision
        self.d_llm = d_llm
        self.vit = ViTModel(vit_config(vision), add_pooling_layer=False)
        if vision.gradient_checkpointing:
            self.vit.gradient_checkpointing_enable({"use_reentrant": False})
        width = max(d_llm, vision.projector_min_width)
        self.projector = nn.Sequential(nn.Linear(vision.hidden_size, width), nn.GELU(),
                                       nn.Linear(width, d_llm), nn.LayerNorm(d_llm))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias)))

    def patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """ViT patch tokens [n, P, d_vision] (CLS dropped), in grid order (row-major)."""
        return self.vit(pixel_values=pixels).last_hidden_state[:, 1:]

    def pooled_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Mean of the patch tokens without the projector [n, d_vision]: the linear-probe features."""
        return self.patch_features(pixels).mean(dim=1)

    def projected_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Every patch token in the LLM space [n, P, d_llm]: the interpretability map's input."""
        return self.projector(self.patch_features(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings [n, d_llm] (mean of projected tokens, not normalised)."""
        return self.projected_tokens(pixels).mean(dim=1)

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self(pixels).float(), dim=-1)

    @property
    def grid(self) -> int:
        """Patches per side of the square patch grid."""
        return self.vision_config.image_size // self.vision_config.patch_size
