"""Image-text retrieval benchmarks over (image, text) rows, duplicate-aware.

Rows are grouped by image id (sha256) and by text; each unique text is embedded once and
each unique image's embedding is taken from its first row. Per-language retrieval runs the
same computation on each language's rows.
"""
from __future__ import annotations

from typing import Callable, Hashable, Sequence

import numpy as np

from flame_pipeline.eval.metrics import chance_r1, pair_relation, retrieval_recalls

EncodeTexts = Callable[[list[str]], np.ndarray]


def retrieval(image_emb: np.ndarray, image_ids: Sequence[Hashable], texts: Sequence[str],
              encode_texts: EncodeTexts, ks: Sequence[int],
              text_ids: Sequence[Hashable] | None = None) -> dict[str, float]:
    """R@K both ways. ``image_emb`` has one row per (image, text) row, like ``image_ids``.
    Texts are grouped by ``text_ids`` (default: the texts themselves, so a repeated caption is
    one gallery item); distinct ids keep every row's text a query of its own."""
    text_ids = texts if text_ids is None else text_ids
    if not (len(image_emb) == len(image_ids) == len(texts) == len(text_ids)):
        raise ValueError(f"{len(image_emb)} image embeddings, {len(image_ids)} image ids and "
                         f"{len(texts)} texts: one of each per row is required")
    if not len(texts):
        raise ValueError("retrieval needs at least one row")
    rel = pair_relation(list(image_ids), list(text_ids))
    unique_texts = [texts[i] for i in rel.text_rows]
    text_emb = np.asarray(encode_texts(unique_texts), dtype=np.float32)
    out = retrieval_recalls(np.asarray(image_emb, np.float32)[rel.image_rows], text_emb,
                            rel.relation, ks)
    out.update(n_images=float(len(rel.image_rows)), n_texts=float(len(rel.text_rows)),
               **chance_r1(rel.relation))
    return out


def retrieval_per_language(image_emb: np.ndarray, image_ids: Sequence[Hashable],
                           texts: Sequence[str], languages: Sequence[str],
                           encode_texts: EncodeTexts, ks: Sequence[int]) -> dict[str, dict[str, float]]:
    """``retrieval`` on each language's rows separately: language -> metrics."""
    languages = np.asarray(languages, dtype=object)
    if len(languages) != len(texts):
        raise ValueError(f"{len(languages)} languages for {len(texts)} texts")
    out = {}
    for lang in sorted(set(languages)):
        rows = np.flatnonzero(languages == lang)
        out[str(lang)] = retrieval(np.asarray(image_emb)[rows], [image_ids[i] for i in rows],
                                   [texts[i] for i in rows], encode_texts, ks)
    return out
