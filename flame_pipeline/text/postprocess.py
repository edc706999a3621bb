"""Post-processing of the raw facet vectors (``embed.postprocess``) and its statistics file.

``center``: the raw last-token vectors of these LLMs share one dominant direction (high mean
cosine between unrelated captions); the mean of each facet over the TRAIN split is subtracted
and the vector renormalised. ``whiten`` then also maps each prompt set's centred vectors
through ``C^-1/2`` of their TRAIN-split covariance ``C`` (eigenvalues floored at
``embed.whiten_floor`` x the largest, so noise directions are not blown up), which spreads the
few directions that dominate the cosine over all of them. The statistics are fitted from
sums over the train split (``TrainSums``), which add up over parts of it: under torchrun each
rank sums its rows and the ranks add their sums, so every rank fits the same. The embed stage
(``text/embed.py``) saves them as ``embed/postprocess.npz``; ``TextEncoder`` loads them to
apply the same to evaluation queries.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flame_pipeline.files import atomic_path


@dataclass(frozen=True)
class Postprocess:
    """``none``; ``center``: subtract a per-(prompt set, facet) mean of the train split;
    ``whiten``: centre, then multiply by the prompt set's whitening matrix."""
    kind: str
    fingerprint: str
    means: dict[str, np.ndarray]    # prompt set -> [K, d]
    floor: float = 0.0              # whiten: eigenvalue floor, as a fraction of the largest
    whiteners: dict[str, np.ndarray] = field(default_factory=dict)   # prompt set -> [d, d]

    def apply(self, prompt_set: str, x: np.ndarray) -> np.ndarray:
        """[n, K, d] raw unit vectors -> post-processed unit vectors (float32)."""
        x = x.astype(np.float32)
        if self.kind != "none":
            if prompt_set not in self.means:
                raise KeyError(f"no {self.kind} statistics for prompt set {prompt_set!r} "
                               f"(have {sorted(self.means)}); it is not in embed.plan")
            x = x - self.means[prompt_set][None]
        if self.kind == "whiten":
            x = x @ self.whiteners[prompt_set]
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    def save(self, path: Path) -> None:
        arrays = {f"mean/{k}": v for k, v in sorted(self.means.items())}
        arrays.update({f"whiten/{k}": v for k, v in sorted(self.whiteners.items())})
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, kind=np.array(self.kind), fingerprint=np.array(self.fingerprint),
                     floor=np.array(self.floor), **arrays)

    @classmethod
    def load(cls, path: Path) -> "Postprocess":
        if not path.is_file():
            raise FileNotFoundError(f"post-processing statistics not found: {path} "
                                    "(run the embed stage first)")
        with np.load(path) as z:
            part = lambda name: {k.split("/", 1)[1]: z[k] for k in z.files  # noqa: E731
                                 if k.startswith(name + "/")}
            return cls(str(z["kind"]), str(z["fingerprint"]), part("mean"),
                       float(z["floor"]) if "floor" in z.files else 0.0,
                       part("whiten"))


class TrainSums:
    """What ``embed.postprocess`` (center or whiten) is fitted from, per prompt set of the plan, in float64: the
    number of train texts (``n/<set>``), the sum of their raw [K, d] vectors (``sum/<set>``)
    and, for ``whiten``, the sum of x x^T over all their facets (``square/<set>``, [d, d])."""

    def __init__(self, kind: str, facets: dict[str, int], dim: int):
        self.kind = kind
        self.arrays: dict[str, np.ndarray] = {}
        for ps, k in facets.items():
            self.arrays[f"n/{ps}"] = np.zeros(())
            self.arrays[f"sum/{ps}"] = np.zeros((k, dim))
            if kind == "whiten":
                self.arrays[f"square/{ps}"] = np.zeros((dim, dim))

    def add(self, prompt_set: str, x: np.ndarray) -> None:
        """Add the raw vectors [n, K, d] of n train texts through ``prompt_set``."""
        x = x.astype(np.float64)
        self.arrays[f"n/{prompt_set}"] += len(x)
        self.arrays[f"sum/{prompt_set}"] += x.sum(0)
        if self.kind == "whiten":
            flat = x.reshape(-1, x.shape[-1])
            self.arrays[f"square/{prompt_set}"] += flat.T @ flat

    def fit(self, fingerprint: str, floor: float, used: frozenset[str]) -> Postprocess:
        """Per prompt set with train texts its facet means, and for ``whiten`` the whitening
        matrix of its centred vectors (all facets pooled: sum of x x^T minus n * sum_k
        mean_k mean_k^T); ``used``: the prompt sets that embed any text, each of which needs
        train texts."""
        counts = {name[2:]: int(n) for name, n in self.arrays.items() if name.startswith("n/")}
        missing = sorted(ps for ps in used if not counts[ps])
        if missing:
            raise ValueError(f"embed.postprocess={self.kind}: prompt set(s) {missing} embed test "
                             "texts but no train-split text; cannot compute their statistics")
        means = {ps: self.arrays[f"sum/{ps}"] / n for ps, n in counts.items() if n}
        stored = {ps: m.astype(np.float32) for ps, m in means.items()}
        if self.kind == "center":
            return Postprocess("center", fingerprint, stored)
        whiteners = {ps: whitening_matrix((self.arrays[f"square/{ps}"] - counts[ps] * m.T @ m)
                                          / (counts[ps] * len(m)), floor)
                     for ps, m in means.items()}
        return Postprocess("whiten", fingerprint, stored, floor, whiteners)


def whitening_matrix(cov: np.ndarray, floor: float) -> np.ndarray:
    """Symmetric ``(C + floor * lambda_max * I)^-1/2``, scaled so its largest gain is 1."""
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, 0.0) + floor * max(float(w.max()), 1e-12)
    gain = 1.0 / np.sqrt(w)
    return ((v * (gain / gain.max())) @ v.T).astype(np.float32)
