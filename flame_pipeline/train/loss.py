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


# the largest logit scale either loss uses: exp(logit_scale) is clamped here (ln 100 on the
# parameter's log scale), as CLIP and the reference code do; past it the scale gets no gradient
MAX_LOGIT_SCALE = 100.0


def scale_of(logit_scale: torch.Tensor) -> torch.Tensor:
    """The multiplier of the cosines: exp(logit_scale), clamped at ``MAX_LOGIT_SCALE``."""
    return logit_scale.float().exp().clamp(max=MAX_LOGIT_SCALE)


def sigmoid_loss(images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-positive sigmoid loss.

    ``images`` [B, d]; ``texts`` [B, M, d], the M text slots of each image; ``mask`` [B, M]
    (default all true) says which slots hold a text: a sample with fewer than M valid
    embeddings fills the rest with empty slots, which are neither positives nor negatives.
    Logits [B, M * B_global] = scale * cos + bias (scale = exp(logit_scale), at most
    ``MAX_LOGIT_SCALE``); label +1 on an image's own texts, -1 on every other text;
    loss = sum over (image, text) of -log sigmoid(label * logit) / the number of texts. Under
    torchrun each rank's share is scaled so that the mean over ranks is that global loss.
    """
    b, m, _ = texts.shape
    rank, size = world()
    if mask is None:
        mask = torch.ones(b, m, dtype=torch.bool, device=texts.device)
    img = F.normalize(images.float(), dim=-1)
    txt = gather(F.normalize(texts.float(), dim=-1).flatten(0, 1))
    real = gather(mask.flatten().float())                                  # [M * B_global]
    logits = scale_of(logit_scale) * img @ txt.T + logit_bias.float()
    labels = -torch.ones_like(logits)
    rows = torch.arange(b, device=logits.device).repeat_interleave(m)
    cols = rank * b * m + torch.arange(b * m, device=logits.device)
    labels[rows, cols] = 1.0
    return -(F.logsigmoid(labels * logits) * real).sum() * size / real.sum()


def info_nce(images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) with temperature exp(scale) clamped at ``MAX_LOGIT_SCALE``.

    ``images``, ``texts`` [B, d]: pair i is the positive, every other global pair a negative.
    """
    b = images.shape[0]
    rank, _ = world()
    img = F.normalize(images.float(), dim=-1)
    txt = F.normalize(texts.float(), dim=-1)
    scale = scale_of(logit_scale)
    target = rank * b + torch.arange(b, device=img.device)
    per_image = scale * img @ gather(txt).T
    per_text = scale * txt @ gather(img).T
    return (F.cross_entropy(per_image, target) + F.cross_entropy(per_text, target)) / 2
