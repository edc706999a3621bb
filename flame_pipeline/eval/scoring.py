"""Scoring a benchmark read from files (``benchmark_files.Loaded``) with one model: retrieval
and zero-shot classification over its rows, through the same functions as the evaluate stage's
own benchmarks (``retrieval.retrieval``, ``zeroshot``)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from flame_pipeline.eval.benchmark_files import Row
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.prompt_sets import encode_by_set
from flame_pipeline.eval.retrieval import retrieval
from flame_pipeline.eval.zeroshot import class_embeddings, zeroshot_accuracy


def image_embeddings(model: EvalModel, rows: Sequence[Row]) -> np.ndarray:
    """One embedding per row; each distinct image (sha256) is encoded once."""
    first: dict[str, bytes] = {}
    for r in rows:
        first.setdefault(r.sha256, r.image)
    index = {sha: i for i, sha in enumerate(first)}
    emb = model.image_embeddings(list(first.values()))
    return emb[[index[r.sha256] for r in rows]]


def row_retrieval(model: EvalModel, rows: Sequence[Row], prompt_set: str | Mapping[str, str],
                  ks: Sequence[int], per_entry: bool = False) -> dict[str, float]:
    """R@K both ways over ``rows``' (image, text) pairs, each text embedded through
    ``prompt_set`` (one set, or text -> set). Duplicate-aware by default (identical
    images and identical texts are one gallery item each); ``per_entry`` counts as
    CLIP_benchmark does: each image entry is one gallery item and each caption its own query,
    so an image query is a hit when any of its captions ranks within K."""
    texts = [r.text for r in rows]
    sets = (lambda t: [prompt_set] * len(t)) if isinstance(prompt_set, str) else \
        (lambda t: [prompt_set[x] for x in t])
    return retrieval(image_embeddings(model, rows),
                     [r.entry if per_entry else r.sha256 for r in rows], texts,
                     lambda t: encode_by_set(model.text_embeddings, t, sets(t)), ks,
                     text_ids=list(range(len(rows))) if per_entry else None)


def row_zeroshot(model: EvalModel, rows: Sequence[Row], classes: Sequence[str],
                 templates: Sequence[str], prompt_set: str) -> dict[str, float]:
    """Top-1/top-5 over the labelled images (each distinct image once, with its first label)."""
    first: dict[str, Row] = {}
    for r in rows:
        if r.label is not None:
            first.setdefault(r.sha256, r)
    labelled = list(first.values())
    position = {c: i for i, c in enumerate(classes)}
    cls = class_embeddings(lambda t: model.text_embeddings(t, prompt_set), classes, templates)
    return dict(zeroshot_accuracy(image_embeddings(model, labelled), cls,
                                  [position[r.label] for r in labelled]),
                n_images=float(len(labelled)), n_classes=float(len(classes)))
