"""Contrastive losses: FLAME's multi-positive sigmoid loss and CLIP's InfoNCE.

Both take this rank's features and gather the other ranks' with gradient
(``torch.distributed.nn.functional.all_gather``), so other ranks' texts are negatives. Each rank
scores its own images (and, for InfoNCE, its own texts) against the global batch; the mean of
the ranks' losses, which DDP's gradient averaging optimises, equals the single-process loss of
the same global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather

from flame_pipeline.distributed import world


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, in rank order, keeping gradients."""
    if world()[1] == 1:
        return x
    return torch.cat(all_gather(x.contiguous()), dim=0)


def sigmoid_loss(images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor) -> torch.Tensor:
    """Multi-positive sigmoid loss.

    ``images`` [B, d]; ``texts`` [B, M, d] (the M positives of each image). Logits
    [B, M * B_global] = exp(scale) * cos + bias; label +1 on an image's own M texts, -1 elsewhere;
    loss = sum(-log sigmoid(label * logit)) / (M * B).
    """
    b, m, _ = texts.shape
    rank, _ = world()
    img = F.normalize(images.float(), dim=-1)
    txt = gather(F.normalize(texts.float(), dim=-1).flatten(0, 1))
    logits = logit_scale.float().exp() * img @ txt.T + logit_bias.float()
    labels = -torch.ones_like(logits)
    rows = torch.arange(b, device=logits.device).repeat_interleave(m)
    cols = rank * b * m + torch.arange(b * m, device=logits.device)
    labels[rows, cols] = 1.0
    return -F.logsigmoid(labels * logits).sum() / (m * b)


def info_nce(images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor,
             max_scale: float = 100.0) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) with temperature exp(scale) clamped at ``max_scale``.

    ``images``, ``texts`` [B, d]: pair i is the positive, every other global pair a negative.
    """
    b = images.shape[0]
    rank, _ = world()
    img = F.normalize(images.float(), dim=-1)
    txt = F.normalize(texts.float(), dim=-1)
    scale = logit_scale.float().exp().clamp(max=max_scale)
    target = rank * b + torch.arange(b, device=img.device)
    per_image = scale * img @ gather(txt).T
    per_text = scale * txt @ gather(img).T
    return (F.cross_entropy(per_image, target) + F.cross_entropy(per_text, target)) / 2
