"""Zero-shot classification: class names put into templates, embedded as text, averaged per class.

The same code serves FLAME and CLIP: ``encode`` is the model's text encoder (for FLAME the
single prompt, docs/METHOD.md#zero-shot-classification), so only the encoder differs between
the two models.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from flame_pipeline.eval.metrics import topk_accuracy

Encode = Callable[[list[str]], np.ndarray]


def normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("cannot normalise a zero embedding")
    return (x / norm).astype(np.float32)


def class_embeddings(encode: Encode, classnames: Sequence[str],
                     templates: Sequence[str]) -> np.ndarray:
    """[classes, d]: each class's template embeddings averaged, then L2-normalised."""
    if not classnames or not templates:
        raise ValueError("zero-shot needs at least one class name and one template")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"templates must contain '{{}}' for the class name: {bad}")
    texts = [t.format(c) for c in classnames for t in templates]
    emb = np.asarray(encode(texts), dtype=np.float32)
    if emb.shape[0] != len(texts):
        raise ValueError(f"encoder returned {emb.shape[0]} embeddings for {len(texts)} texts")
    per_class = normalise(emb).reshape(len(classnames), len(templates), -1).mean(axis=1)
    return normalise(per_class)


def zeroshot_accuracy(image_emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[int],
                      ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (percent) of cosine similarity to the class embeddings, and the top-1 of a
    random guess (``chance_top1`` = 100 / classes).

    K values not below the number of classes are left out (they would be 100 by construction).
    """
    ks = [k for k in ks if k == 1 or k < class_emb.shape[0]]
    acc = topk_accuracy(np.asarray(image_emb, np.float32) @ class_emb.T, np.asarray(labels), ks)
    return {**{f"top{k}": v for k, v in acc.items()}, "chance_top1": 100.0 / class_emb.shape[0]}
