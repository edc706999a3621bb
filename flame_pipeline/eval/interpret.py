"""Semantic interpretability: which LLM token each region of an image maps to.

Projected patch tokens (already in the LLM's hidden space) are average-pooled on their
grid (e.g. 8x8 -> 4x4), each cell is mapped through the LLM's output embedding (lm_head,
or the tied input embeddings) and the top-1 token is kept. The reference code keeps the
50th-ranked token by mistake; this takes the top one (a test checks it).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


def pool_grid(patch_tokens: torch.Tensor, cells: int) -> torch.Tensor:
    """[patches, d] on a square grid -> [cells, cells, d] by adaptive average pooling."""
    n, d = patch_tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} patch tokens do not form a square grid")
    if not 1 <= cells <= side:
        raise ValueError(f"cannot pool a {side}x{side} grid into {cells}x{cells} cells")
    grid = patch_tokens.float().T.reshape(1, d, side, side)
    return F.adaptive_avg_pool2d(grid, cells)[0].permute(1, 2, 0)


def top_token_ids(cells: torch.Tensor, output_embedding: torch.Tensor) -> np.ndarray:
    """[g, g, d] cells x [vocab, d] output embedding -> [g, g] id of the highest logit."""
    if cells.shape[-1] != output_embedding.shape[1]:
        raise ValueError(f"cell width {cells.shape[-1]} != output embedding width "
                         f"{output_embedding.shape[1]}")
    logits = cells.float() @ output_embedding.float().T
    return logits.argmax(dim=-1).numpy()


def token_map(patch_tokens: torch.Tensor, output_embedding: torch.Tensor, cells: int,
              decode: Callable[[int], str]) -> list[list[str]]:
    """The top-1 token text of each pooled cell, row by row."""
    ids = top_token_ids(pool_grid(patch_tokens, cells), output_embedding)
    return [[decode(int(i)).strip() or repr(decode(int(i))) for i in row] for row in ids]
