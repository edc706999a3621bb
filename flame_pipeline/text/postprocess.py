"""Post-processing of the raw facet vectors (``embed.postprocess``) and its statistics file.

``center``: the raw last-token vectors of these LLMs share one dominant direction (high mean
cosine between unrelated captions); the mean of each facet over the TRAIN split is subtracted
and the vector renormalised. ``whiten`` then also maps each prompt set's centred vectors
through ``C^-1/2`` of their TRAIN-split covariance ``C`` (eigenvalues floored at
``embed.whiten_floor`` x the largest, so noise directions are not blown up), which spreads the
few directions that dominate the cosine over all of them. The embed stage fits the statistics
(``text/embed.py``) and saves them as ``embed/postprocess.npz``; ``TextEncoder`` loads them to
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


def whitening_matrix(cov: np.ndarray, floor: float) -> np.ndarray:
    """Symmetric ``(C + floor * lambda_max * I)^-1/2``, scaled so its largest gain is 1."""
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, 0.0) + floor * max(float(w.max()), 1e-12)
    gain = 1.0 / np.sqrt(w)
    return ((v * (gain / gain.max())) @ v.T).astype(np.float32)
