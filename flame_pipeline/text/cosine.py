"""How much the stored vectors share one direction: the mean cosine between distinct pairs,
per stored embedding name, before and after post-processing (``embed/meta.json``'s
``mean_cosine``)."""
from __future__ import annotations

import numpy as np


class CosineMeter:
    """Mean cosine over distinct pairs of unit vectors, per stored name, from running sums:
    for n unit vectors with sum s it is (|s|^2 - n) / (n (n - 1)). The sums of parts of the
    rows add up (the embed stage adds every rank's)."""

    def __init__(self, names: list[str], dim: int):
        self.names = names
        self.sum = np.zeros((len(names), dim), np.float64)
        self.n = np.zeros(len(names), np.int64)

    def add(self, x: np.ndarray, valid: np.ndarray) -> None:
        """Add the valid vectors of rows ``x`` [n, E, d] (``valid`` [n, E])."""
        ok = valid.astype(bool)
        self.sum += np.where(ok[..., None], x, 0).sum(0, dtype=np.float64)
        self.n += ok.sum(0)

    def result(self) -> dict[str, float | None]:
        sq = (self.sum ** 2).sum(-1)
        return {name: (round(float((sq[i] - n) / (n * (n - 1))), 4) if n > 1 else None)
                for i, (name, n) in enumerate(zip(self.names, self.n))}
