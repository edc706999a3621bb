"""Linear probe: logistic regression on frozen, average-pooled vision features (no projector).

One fixed setting for every model (docs/METHOD.md#linear-probe): standardised features, L2-regularised
multinomial logistic regression with C = 1 and the lbfgs solver, so only the features differ.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from flame_pipeline.eval.metrics import topk_accuracy


def linear_probe(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray,
                 test_y: Sequence[str], max_iter: int = 1000) -> dict[str, float]:
    """Fit on the training features, return top-1 accuracy (percent) on the test features."""
    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be 2-D with one width: {train_x.shape} vs {test_x.shape}")
    if len(train_y) != len(train_x) or len(test_y) != len(test_x):
        raise ValueError("one label per feature row is required")
    classes = sorted(set(train_y))
    if len(classes) < 2:
        raise ValueError(f"a linear probe needs at least two training classes, got {classes}")
    unseen = sorted(set(test_y) - set(classes))
    if unseen:
        raise ValueError(f"test classes never seen in training: {unseen}")
    model = make_pipeline(StandardScaler(),
                          LogisticRegression(C=1.0, max_iter=max_iter, solver="lbfgs"))
    model.fit(train_x, list(train_y))
    index = {c: i for i, c in enumerate(model.classes_)}
    proba = model.predict_proba(test_x)
    return {"top1": topk_accuracy(proba, [index[y] for y in test_y], [1])[1]}
