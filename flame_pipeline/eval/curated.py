"""The benchmarks of the pipeline's own held-out split (docs/METHOD.md#evaluation), each a
function of (settings, ``Curated`` data, model) that returns its metrics by benchmark name.

Names: ``zeroshot/<source>/<task>``, ``retrieval/<source>``, ``long_retrieval/<source>``,
``long_retrieval_no_hn/<source>`` (without the hard negatives), ``long_retrieval_77/<source>``
(captions cut to ``eval.truncate_tokens`` tokens), ``multilingual/<source>/<language>``,
``linear_probe/<source>/<task>``. The interpretability map is a figure, drawn by the evaluate
stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl

from flame_pipeline.config import Profile
from flame_pipeline.data.scenes import class_text as scene_class_text
from flame_pipeline.eval.data import label_dicts
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.probe import linear_probe as fit_probe
from flame_pipeline.eval.prompt_sets import caption_set, long_set
from flame_pipeline.eval.retrieval import retrieval as recall, retrieval_per_language
from flame_pipeline.eval.zeroshot import class_embeddings, zeroshot_accuracy

Results = dict[str, dict[str, float]]   # benchmark -> metric -> value


@dataclass(frozen=True)
class Task:
    source: str
    task: str
    classes: list[str]


def class_text(source: str, task: str, value: str) -> str:
    """The words a class is named with in the zero-shot templates."""
    return scene_class_text(task, value) if source == "scenes" else value


def labelled(rows: pl.DataFrame, source: str, task: str) -> tuple[np.ndarray, list[str]]:
    """Indices of ``rows`` holding the task's images (the first row of each sha256 of the
    source with that label) and their classes."""
    idx, values, seen = [], [], set()
    for i, (src, sha, labels) in enumerate(zip(rows["source"], rows["sha256"], label_dicts(rows))):
        if src == source and task in labels and sha not in seen:
            seen.add(sha)
            idx.append(i)
            values.append(labels[task])
    return np.asarray(idx, dtype=np.int64), values


def classification_tasks(test: pl.DataFrame, train: pl.DataFrame) -> tuple[list[Task], list[str]]:
    """(source, task) label pairs that make a classification benchmark, and why others do not.

    A task qualifies when its test images carry at least two classes and some class has
    several images (a label unique to each image, like an emoji's name, is retrieval, not
    classification). Classes are those seen in either split.
    """
    tasks, skipped = [], []
    pairs = sorted({(s, t) for s, labels in zip(test["source"], label_dicts(test)) for t in labels})
    for source, task in pairs:
        _, values = labelled(test, source, task)
        n_classes = len(set(values))
        if n_classes < 2 or n_classes >= len(values):
            skipped.append(f"{source}/{task}: {n_classes} classes over {len(values)} test images")
            continue
        tasks.append(Task(source, task, sorted(set(values) | set(labelled(train, source, task)[1]))))
    return tasks, skipped


def per_row(encode: Callable[[list[bytes]], np.ndarray], rows: pl.DataFrame,
            images: dict[str, bytes]) -> np.ndarray:
    """``encode`` applied to each distinct image (sha256) once, then one output row per row."""
    unique = rows.unique("sha256", keep="first", maintain_order=True)
    if unique.is_empty():
        return np.zeros((0, 0), dtype=np.float32)
    out = encode([images[k] for k in unique["key"]])
    index = {sha: i for i, sha in enumerate(unique["sha256"])}
    return out[[index[s] for s in rows["sha256"]]]


@dataclass
class Curated:
    """The held-out rows, the labelled training rows the linear probe fits on, their images,
    the classification tasks, the caption cutter and the notes of what could not run; each
    model's test image embeddings are computed once."""
    test: pl.DataFrame
    train: pl.DataFrame
    images: dict[str, bytes]
    tasks: list[Task]
    truncate: Callable[[list[str]], list[str]]
    skipped: list[str] = field(default_factory=list)
    _embeddings: dict[str, np.ndarray] = field(default_factory=dict)

    def embeddings(self, model: EvalModel) -> np.ndarray:
        if model.name not in self._embeddings:
            self._embeddings[model.name] = per_row(model.image_embeddings, self.test, self.images)
        return self._embeddings[model.name]

    def rows_of(self, model: EvalModel, mask: pl.Expr) -> tuple[pl.DataFrame, np.ndarray]:
        idx = self.test.with_row_index("_i").filter(mask)
        return idx.drop("_i"), self.embeddings(model)[idx["_i"].to_numpy()]

    def sources(self) -> list[str]:
        return sorted(set(self.test["source"]))


def _texts(model: EvalModel, prompt_set: str):
    return lambda texts: model.text_embeddings(texts, prompt_set)


EN_PLAIN = (pl.col("language") == "en") & ~pl.col("hard_negative")


def zeroshot(cfg: Profile, data: Curated, model: EvalModel) -> Results:
    emb, out = data.embeddings(model), {}
    for task in data.tasks:
        idx, values = labelled(data.test, task.source, task.task)
        names = [class_text(task.source, task.task, c) for c in task.classes]
        cls = class_embeddings(_texts(model, "single"), names, cfg.eval.zeroshot_templates)
        out[f"zeroshot/{task.source}/{task.task}"] = zeroshot_accuracy(
            emb[idx], cls, [task.classes.index(v) for v in values])
    return out


def retrieval(cfg: Profile, data: Curated, model: EvalModel) -> Results:
    out = {}
    for source in data.sources():
        rows, e = data.rows_of(model, (pl.col("source") == source) & EN_PLAIN)
        if rows.height:
            out[f"retrieval/{source}"] = recall(e, rows["sha256"].to_list(), rows["caption"].to_list(),
                                                _texts(model, caption_set(cfg.eval.prompt_mode)),
                                                cfg.eval.recall_ks)
    return out


def long_retrieval(cfg: Profile, data: Curated, model: EvalModel) -> Results:
    """Hard negatives stay in: their long captions differ from the original's in one fact."""
    ev, out = cfg.eval, {}
    encode = _texts(model, long_set(ev.prompt_mode))
    for source in data.sources():
        rows, e = data.rows_of(model, (pl.col("source") == source) & (pl.col("language") == "en")
                               & pl.col("long_caption").is_not_null())
        if not rows.height:
            continue
        texts = rows["long_caption"].to_list()
        for name, batch in (("long_retrieval", texts), ("long_retrieval_77", data.truncate(texts))):
            out[f"{name}/{source}"] = recall(e, rows["sha256"].to_list(), batch, encode, ev.recall_ks)
        if rows["hard_negative"].any():   # the same gallery without its hard negatives
            keep = ~rows["hard_negative"].to_numpy()
            easy = rows.filter(~pl.col("hard_negative"))
            out[f"long_retrieval_no_hn/{source}"] = recall(
                e[keep], easy["sha256"].to_list(), easy["long_caption"].to_list(), encode, ev.recall_ks)
    return out


def multilingual(cfg: Profile, data: Curated, model: EvalModel) -> Results:
    out = {}
    for source in data.sources():
        rows, e = data.rows_of(model, (pl.col("source") == source) & ~pl.col("hard_negative"))
        if rows["language"].n_unique() > 1:
            per = retrieval_per_language(e, rows["sha256"].to_list(), rows["caption"].to_list(),
                                         rows["language"].to_list(), _texts(model, "single"),
                                         cfg.eval.recall_ks)
            out.update({f"multilingual/{source}/{lang}": m for lang, m in per.items()})
    return out


def linear_probe(cfg: Profile, data: Curated, model: EvalModel) -> Results:
    if not data.tasks:
        return {}
    train_x = per_row(model.pooled_features, data.train, data.images)
    test_x = per_row(model.pooled_features, data.test, data.images)
    out = {}
    for task in data.tasks:
        tr_idx, tr_y = labelled(data.train, task.source, task.task)
        te_idx, te_y = labelled(data.test, task.source, task.task)
        unseen = sorted(set(te_y) - set(tr_y))
        if len(set(tr_y)) < 2 or unseen:
            data.skipped.append(f"linear_probe/{task.source}/{task.task}: {len(set(tr_y))} training "
                                f"classes; test classes never trained on: {unseen}")
            continue
        out[f"linear_probe/{task.source}/{task.task}"] = fit_probe(
            train_x[tr_idx], tr_y, test_x[te_idx], te_y, max_iter=cfg.eval.probe_max_iter)
    return out
