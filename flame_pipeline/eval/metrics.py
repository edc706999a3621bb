"""Ranking metrics from a similarity matrix and a ground-truth relation.

One rule serves retrieval and classification: a query is correct at K when one of its
relevant gallery items ranks within the first K. The rank of a query is the number of
*irrelevant* gallery items scoring at least as high as its best relevant item, so ties
count against the model (a constant embedding scores no better than chance). Top-k
accuracy is the same computation with the one-hot class relation.

Duplicate-aware retrieval: rows are (image, text) pairs; identical images (same sha256)
and identical texts are merged into one gallery item each, and an image is relevant to
every text paired with any copy of it (and the reverse), see ``pair_relation``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np
import torch

CHUNK = 1024  # queries per block: bounds memory at CHUNK x gallery floats


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def first_relevant_rank(sim, relevant) -> np.ndarray:
    """0-based rank of each query's best relevant item (ties with irrelevant items count against).

    ``sim``: [queries, gallery] scores; ``relevant``: bool of the same shape. The best relevant
    score per query comes from the relation's nonzero entries; one pass over ``sim`` then
    counts the gallery items at or above it, less the relevant ones tied with it.
    """
    sim, rel = _as_tensor(sim), _as_tensor(relevant).bool()
    if sim.ndim != 2 or sim.shape != rel.shape:
        raise ValueError(f"similarity {tuple(sim.shape)} and relation {tuple(rel.shape)} "
                         "must be 2-D and of the same shape")
    n = sim.shape[0]
    q, g = rel.nonzero(as_tuple=True)
    per_query = torch.bincount(q, minlength=n)
    if bool((per_query == 0).any()):
        missing = (per_query == 0).nonzero()
        raise ValueError(f"{len(missing)} queries have no relevant gallery item "
                         f"(first: query {int(missing[0, 0])})")
    if not bool(torch.isfinite(sim).all()):
        raise ValueError("similarity matrix contains NaN or infinite values")
    scores = sim[q, g]
    best = torch.full((n,), float("-inf"), dtype=sim.dtype).scatter_reduce(0, q, scores, "amax")
    tied = torch.zeros(n, dtype=torch.long).index_add_(0, q, (scores >= best[q]).long())
    ranks = torch.empty(n, dtype=torch.long)
    for start in range(0, n, CHUNK):
        block = sim[start:start + CHUNK]
        ranks[start:start + CHUNK] = (block >= best[start:start + CHUNK, None]).sum(dim=1)
    return (ranks - tied).numpy()


def recall_at_k(sim, relevant, ks: Sequence[int]) -> dict[int, float]:
    """Percentage of queries with a relevant item in their top K, for each K."""
    ranks = first_relevant_rank(sim, relevant)
    return {int(k): float(100.0 * np.mean(ranks < k)) for k in ks}


def topk_accuracy(logits, labels, ks: Sequence[int]) -> dict[int, float]:
    """Classification accuracy in percent: the true class among the K highest logits."""
    logits = _as_tensor(logits)
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels {labels.shape} do not match logits {tuple(logits.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
    onehot = np.zeros(tuple(logits.shape), dtype=bool)
    onehot[np.arange(len(labels)), labels] = True
    return recall_at_k(logits, onehot, ks)


@dataclass(frozen=True)
class PairRelation:
    """Unique images and texts of a list of (image, text) rows, and which belong together."""
    image_rows: np.ndarray   # row index of the first copy of each unique image
    text_rows: np.ndarray    # row index of the first copy of each unique text
    relation: np.ndarray     # bool [unique images, unique texts]


def _first_occurrence(ids: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """(row of each unique id's first copy, unique index of every row), in row order."""
    index: dict[Hashable, int] = {}
    of_row = np.empty(len(ids), dtype=np.int64)
    first: list[int] = []
    for row, key in enumerate(ids):
        if key not in index:
            index[key] = len(first)
            first.append(row)
        of_row[row] = index[key]
    return np.asarray(first, dtype=np.int64), of_row


def pair_relation(image_ids: Sequence[Hashable], text_ids: Sequence[Hashable]) -> PairRelation:
    """Group rows by image id (sha256) and text id (caption); relate the groups of each row."""
    if len(image_ids) != len(text_ids):
        raise ValueError(f"{len(image_ids)} image ids but {len(text_ids)} text ids")
    image_rows, image_of = _first_occurrence(image_ids)
    text_rows, text_of = _first_occurrence(text_ids)
    relation = np.zeros((len(image_rows), len(text_rows)), dtype=bool)
    relation[image_of, text_of] = True
    return PairRelation(image_rows, text_rows, relation)


def retrieval_recalls(image_emb, text_emb, relation, ks: Sequence[int]) -> dict[str, float]:
    """R@K image->text and text->image from normalised embeddings of unique images and texts."""
    img, txt = _as_tensor(image_emb).float(), _as_tensor(text_emb).float()
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"image dim {img.shape[1]} != text dim {txt.shape[1]}")
    rel = _as_tensor(relation).bool()
    sim = img @ txt.T
    out = {f"i2t_R@{k}": v for k, v in recall_at_k(sim, rel, ks).items()}
    # a contiguous copy: the column-wise pass over a transposed view is slower than the copy
    out.update({f"t2i_R@{k}": v for k, v in recall_at_k(sim.T.contiguous(), rel.T, ks).items()})
    return out


def chance_r1(relation) -> dict[str, float]:
    """``chance_R@1``: R@1 in percent of a model that ranks the gallery at random, the mean share
    of relevant items a query has (an image among 300 texts, one its own: 0.33). It is the same
    both ways: the relevant pairs over images x texts."""
    rel = np.asarray(relation, dtype=bool)
    return {"chance_R@1": float(100.0 * rel.sum() / rel.size)}
