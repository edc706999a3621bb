"""Semantic interpretability: which LLM token each region of an image maps to.

Projected patch tokens are average-pooled on their grid (e.g. 8x8 -> 4x4). A cell lives where
training put it: in the space of the stored embeddings, which are post-processed (centred, or
whitened: docs/METHOD.md#stored-embeddings-and-post-processing), not in the LLM's own hidden
space. So a cell is first mapped back (``to_llm_space``: the inverse of ``Postprocess.apply``,
the scale its normalisation dropped being the one that gives a unit vector, as every raw vector
is), then read the way the LLM reads a hidden state: its final norm, then its LM head (the output
embedding, or the tied input embeddings). The statistics are those of one prompt set, the plan's
first (``single`` by default: the one-word description). A token scores its logit less the logit
the set's mean vector gives it (where the embed stage fitted a mean), so a cell shows what sets
it apart, not what every caption predicts (the next word after the prompt's quote, ``a``).

The top-1 token of each cell is kept; the reference code keeps the 50th-ranked token by mistake.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flame_pipeline.text.postprocess import Postprocess


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


def to_llm_space(post: Postprocess, prompt_set: str, x: np.ndarray) -> np.ndarray:
    """[n, d] vectors of the post-processed space -> unit vectors of the LLM's hidden space:
    ``u = x W^-1`` (W the set's whitening matrix, if any), then ``s u + mean`` with the s > 0
    that makes it a unit vector (the mean over the set's facets). For a stored embedding this
    gives back the raw vector it was made from."""
    x = np.asarray(x, np.float64)
    if post.kind == "none":
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    mean = post.means[prompt_set].astype(np.float64).mean(axis=0)
    u = np.linalg.solve(post.whiteners[prompt_set].astype(np.float64), x.T).T \
        if post.kind == "whiten" else x      # the whitening matrix is symmetric
    a, b, c = (u * u).sum(-1), u @ mean, mean @ mean - 1.0   # |s u + mean|^2 = 1
    s = (-b + np.sqrt(np.maximum(b * b - a * c, 0.0))) / np.maximum(a, 1e-24)
    return s[:, None] * u + mean


class TokenReader:
    """Reads vectors of the post-processed space of ``prompt_set`` as LLM tokens (module doc)."""

    def __init__(self, post: Postprocess, prompt_set: str, norm: nn.Module, head: torch.Tensor):
        self.post, self.prompt_set = post, prompt_set
        self.norm, self.head = norm, head.float()
        self.base = None
        if post.kind != "none":
            self.base = self._llm_logits(post.means[prompt_set].astype(np.float64).mean(axis=0)[None])

    def _llm_logits(self, hidden: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return self.norm(torch.from_numpy(np.asarray(hidden, np.float32))) @ self.head.T

    def logits(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[n, d] post-processed vectors -> [n, vocab] scores (logit less the mean's)."""
        if x.shape[-1] != self.head.shape[1]:
            raise ValueError(f"vector width {x.shape[-1]} != LM head width {self.head.shape[1]}")
        z = self._llm_logits(to_llm_space(self.post, self.prompt_set, np.asarray(x)))
        return z if self.base is None else z - self.base

    def top(self, x: np.ndarray | torch.Tensor, k: int = 1) -> np.ndarray:
        """[n, k] ids of the k best-scoring tokens, best first."""
        return self.logits(x).topk(k, dim=-1).indices.numpy()


def token_map(patch_tokens: torch.Tensor, reader: TokenReader, cells: int,
              decode: Callable[[int], str]) -> list[list[str]]:
    """The top-1 token text of each pooled cell, row by row."""
    grid = pool_grid(patch_tokens, cells)
    ids = reader.top(grid.reshape(cells * cells, -1).numpy())[:, 0].reshape(cells, cells)
    return [[decode(int(i)).strip() or repr(decode(int(i))) for i in row] for row in ids]
