"""AdamW with the reference's decay exclusions, and the warm-up + cosine learning-rate schedule."""
from __future__ import annotations

import functools
import math

import torch
from torch import nn

from flame_pipeline.config import TrainConfig

NO_DECAY_NAMES = ("bias", "norm", "logit_scale", "logit_bias")


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay applies to matrices only: not to biases, norms, the logit scale or bias."""
    lowered = name.lower()
    return param.ndim >= 2 and not any(n in lowered for n in NO_DECAY_NAMES)


def build_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.AdamW:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": t.weight_decay},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    # the fused kernel (CPU and CUDA): one pass over all parameters, ~7x faster per step on CPU
    # than the per-tensor loop for the CLIP baseline's 151k-row token embedding
    fused = all(p.device.type in ("cpu", "cuda") for _, p in named)
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, eps=t.eps, fused=fused)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the base lr for optimizer step ``step`` (0-based): linear warm-up over
    ``warmup`` steps, then half a cosine down to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def build_scheduler(optimizer: torch.optim.Optimizer, t: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    fn = functools.partial(lr_factor, warmup=t.warmup_steps, total=t.steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
