"""The evaluate stage: every benchmark of docs/METHOD.md#evaluation, run identically on FLAME and on CLIP.

Reads the curated test rows (and labelled training rows for the linear probe), the raw
images and both trained models; writes ``eval/metrics.json`` and ``eval/plots/*.png``;
returns the metrics as (model, benchmark, metric, value) rows, which ``stage.record``
stores in DuckDB with the run and artifact hashes; the report stage (``report.py``) then
writes ``eval/report.md`` from DuckDB.

Benchmark names: ``zeroshot/<source>/<task>``, ``retrieval/<source>``,
``long_retrieval/<source>``, ``long_retrieval_no_hn/<source>`` (without the hard
negatives), ``long_retrieval_77/<source>`` (captions cut to
``eval.truncate_tokens`` tokens), ``multilingual/<source>/<language>``,
``linear_probe/<source>/<task>``. Each output is written atomically, ``metrics.json`` last
with a fingerprint of the inputs (content hashes), settings and evaluation code: a rerun
with the same fingerprint returns the stored metrics without recomputing, any other reruns
everything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import torch

from flame_pipeline.config import Profile
from flame_pipeline.data.scenes import class_text as scene_class_text
from flame_pipeline.eval import plots
from flame_pipeline.eval.data import label_dicts, load_images, load_rows
from flame_pipeline.eval.encoders import MODELS, EvalModel, load_eval_model
from flame_pipeline.eval.interpret import TokenReader, token_map
from flame_pipeline.eval.probe import linear_probe
from flame_pipeline.eval.prompt_sets import caption_set, long_set
from flame_pipeline.eval.retrieval import retrieval, retrieval_per_language
from flame_pipeline.eval.zeroshot import class_embeddings, zeroshot_accuracy
from flame_pipeline.files import sha256_file, sha256_text, sha256_tree, write_json
from flame_pipeline.paths import Paths
from flame_pipeline.progress import progress
from flame_pipeline.stage import StageOutput
from flame_pipeline.vision.preprocess import decode

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


def truncate_texts(tokenizer, texts: list[str], n_tokens: int) -> list[str]:
    """Each text cut to its first ``n_tokens`` tokens (texts within the limit are unchanged)."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(i[:n_tokens]).strip() if len(i) > n_tokens else t
            for t, i in zip(texts, ids)]


def run_benchmarks(cfg: Profile, model: EvalModel, test: pl.DataFrame, train: pl.DataFrame,
                   images: dict[str, bytes], tasks: list[Task],
                   truncate: Callable[[list[str]], list[str]],
                   skipped: list[str] | None = None) -> Results:
    """Every enabled benchmark for one model; the same code path for FLAME and CLIP, with a
    progress line per benchmark done. A benchmark that cannot run on this data appends its
    reason to ``skipped``."""
    skipped = [] if skipped is None else skipped
    ev, mode, out = cfg.eval, cfg.eval.prompt_mode, {}
    bar = progress(None, f"evaluate {model.name}", "benchmark")

    def put(name: str, metrics: dict[str, float]) -> None:
        out[name] = metrics
        bar.set_postfix_str(name, refresh=False)
        bar.update(1)
    emb = per_row(model.image_embeddings, test, images)
    en_plain = (pl.col("language") == "en") & ~pl.col("hard_negative")

    def rows_of(mask: pl.Expr) -> tuple[pl.DataFrame, np.ndarray]:
        idx = test.with_row_index("_i").filter(mask)
        return idx.drop("_i"), emb[idx["_i"].to_numpy()]

    def text_fn(prompt_set: str):
        return lambda texts: model.text_embeddings(texts, prompt_set)

    if "zeroshot" in ev.benchmarks:
        for task in tasks:
            idx, values = labelled(test, task.source, task.task)
            names = [class_text(task.source, task.task, c) for c in task.classes]
            cls = class_embeddings(text_fn("single"), names, ev.zeroshot_templates)
            put(f"zeroshot/{task.source}/{task.task}", zeroshot_accuracy(
                emb[idx], cls, [task.classes.index(v) for v in values]))
    for source in sorted(set(test["source"])):
        src = pl.col("source") == source
        if "retrieval" in ev.benchmarks:
            rows, e = rows_of(src & en_plain)
            if rows.height:
                put(f"retrieval/{source}", retrieval(e, rows["sha256"].to_list(),
                                                     rows["caption"].to_list(),
                                                     text_fn(caption_set(mode)), ev.recall_ks))
        if "long_retrieval" in ev.benchmarks:
            # hard negatives stay in: their long captions differ from the original's in one fact
            rows, e = rows_of(src & (pl.col("language") == "en") & pl.col("long_caption").is_not_null())
            if rows.height:
                texts = rows["long_caption"].to_list()
                for name, batch in (("long_retrieval", texts), ("long_retrieval_77", truncate(texts))):
                    put(f"{name}/{source}", retrieval(e, rows["sha256"].to_list(), batch,
                                                      text_fn(long_set(mode)), ev.recall_ks))
                if rows["hard_negative"].any():   # the same gallery without its hard negatives
                    keep = ~rows["hard_negative"].to_numpy()
                    easy = rows.filter(~pl.col("hard_negative"))
                    put(f"long_retrieval_no_hn/{source}", retrieval(
                        e[keep], easy["sha256"].to_list(), easy["long_caption"].to_list(),
                        text_fn(long_set(mode)), ev.recall_ks))
        if "multilingual" in ev.benchmarks:
            rows, e = rows_of(src & ~pl.col("hard_negative"))
            if rows["language"].n_unique() > 1:
                per = retrieval_per_language(e, rows["sha256"].to_list(), rows["caption"].to_list(),
                                             rows["language"].to_list(), text_fn("single"), ev.recall_ks)
                for lang, m in per.items():
                    put(f"multilingual/{source}/{lang}", m)
    if "linear_probe" in ev.benchmarks and tasks:
        train_x = per_row(model.pooled_features, train, images)
        test_x = per_row(model.pooled_features, test, images)
        for task in tasks:
            tr_idx, tr_y = labelled(train, task.source, task.task)
            te_idx, te_y = labelled(test, task.source, task.task)
            unseen = sorted(set(te_y) - set(tr_y))
            if len(set(tr_y)) < 2 or unseen:
                skipped.append(f"linear_probe/{task.source}/{task.task}: {len(set(tr_y))} training "
                               f"classes; test classes never trained on: {unseen}")
                continue
            put(f"linear_probe/{task.source}/{task.task}", linear_probe(
                train_x[tr_idx], tr_y, test_x[te_idx], te_y, max_iter=ev.probe_max_iter))
    bar.close()
    return out


def interpretability(cfg: Profile, model: EvalModel, reader: TokenReader, decode_token,
                     test: pl.DataFrame, images: dict[str, bytes], path) -> list[list[list[str]]]:
    """The token map of the first test images (scenes first), drawn as one PNG at ``path``."""
    rows = (test.filter(~pl.col("hard_negative"))
                .sort(pl.col("source") != "scenes", maintain_order=True)
                .unique("sha256", keep="first", maintain_order=True)
                .head(cfg.eval.interpret_images))
    pngs = [images[k] for k in rows["key"]]
    tokens = torch.from_numpy(model.projected_tokens(pngs))
    grids = [token_map(t, reader, cfg.eval.interpret_cells, decode_token) for t in tokens]
    plots.token_map_figure([np.asarray(decode(p)) for p in pngs], grids, path)
    return grids


def fingerprint(cfg: Profile) -> dict:
    """What the results depend on: the inputs' content hashes, the settings, the eval code.

    Images enter through the manifest (it holds every image's sha256), so the raw shards,
    which can be large, are not hashed again.
    """
    paths = Paths.of(cfg)
    inputs = {"captions": paths.captions, "manifest": paths.manifest, "flame": paths.flame_model,
              "clip": paths.clip_model, "embed_meta": paths.embed_meta,
              "embed_postprocess": paths.embed_postprocess}   # text-side statistics
    code = Path(__file__).parent
    return {"inputs": {k: sha256_tree(p) if p.exists() else None for k, p in sorted(inputs.items())},
            "settings": {"eval": cfg.eval.model_dump(mode="json"),
                         "embed": cfg.embed.model_dump(mode="json"),
                         "image_size": cfg.vision.image_size},
            "code": sha256_text("".join(sha256_file(f) for f in sorted(code.glob("*.py"))))}


def _output(paths: Paths, doc: dict, resumed: bool) -> StageOutput:
    results = doc["models"]
    metrics = [(m, b, k, float(v)) for m, r in sorted(results.items()) for b, ms in sorted(r.items())
               for k, v in sorted(ms.items())]
    return StageOutput(artifacts={"metrics": paths.metrics, "plots": paths.plots},
                       rows={"metrics": len(metrics)},
                       summary={"benchmarks": len({b for _, b, _, _ in metrics}),
                                "plots": doc["plots"], "skipped": doc["skipped"], "resumed": resumed},
                       metrics=metrics)


def _finished(paths: Paths, fp: dict) -> dict | None:
    """The previous run's metrics document when it is complete and made from the same inputs."""
    if not paths.metrics.is_file():
        return None
    doc = json.loads(paths.metrics.read_text())
    if doc.get("fingerprint") != fp or not all((paths.plots / p).is_file() for p in doc["plots"]):
        return None
    return doc


def evaluate(cfg: Profile) -> StageOutput:
    from flame_pipeline.llm_files import load_tokenizer
    from flame_pipeline.text.encoder import TextEncoder
    from flame_pipeline.text.llm import final_norm, load_llm, output_embedding

    paths = Paths.of(cfg)
    fp = fingerprint(cfg)
    done = _finished(paths, fp)
    if done is not None:
        return _output(paths, done, resumed=True)
    test = load_rows(paths, [cfg.eval.split])   # the held-out rows: test, or val when asked
    if test.is_empty():
        raise ValueError(f"{paths.captions} has no {cfg.eval.split} rows to evaluate on")
    train = load_rows(paths, ["train"]).filter(pl.col("labels").is_not_null())
    tasks, skipped = classification_tasks(test, train)
    probe_train = train.filter(pl.col("source").is_in([t.source for t in tasks])) \
        if "linear_probe" in cfg.eval.benchmarks else train.clear()
    images = load_images(paths, set(test["key"]) | set(probe_train["key"]))
    tokenizer = load_tokenizer(cfg.embed)
    truncate = lambda texts: truncate_texts(tokenizer, texts, cfg.eval.truncate_tokens)  # noqa: E731

    results, models, notes = {}, {}, []
    for name in MODELS:
        models[name] = load_eval_model(cfg, name)
        results[name] = run_benchmarks(cfg, models[name], test, probe_train, images, tasks,
                                       truncate, notes)
    skipped += sorted(set(notes))   # the same data for both models: the same notes

    paths.plots.mkdir(parents=True, exist_ok=True)
    made = []
    curves = sorted({b for r in results.values() for b in r if "retrieval" in b.split("/")[0]})
    if curves:
        made.append(plots.recall_curves(results, curves, paths.recall_plot))
    per_lang = {m: {b.removeprefix("multilingual/"): v for b, v in r.items()
                    if b.startswith("multilingual/")} for m, r in results.items()}
    if any(per_lang.values()):
        made.append(plots.language_bars(per_lang, paths.multilingual_plot))
    grids = None
    if "interpretability" in cfg.eval.benchmarks:
        llm, _ = load_llm(cfg.embed)   # for its final norm and LM head; freed after the map
        try:   # the map reads cells with the statistics of the plan's first prompt set
            reader = TokenReader(TextEncoder.of(cfg).postprocess(), cfg.embed.plan[0][1],
                                 final_norm(llm), output_embedding(cfg.embed, llm))
        except ValueError as err:      # no LM head to map through: the other benchmarks stand
            skipped.append(f"interpretability: {err}")
            reader = None
        del llm
        if reader is not None:
            grids = interpretability(cfg, models["flame"], reader,
                                     lambda i: tokenizer.decode([i]), test, images,
                                     paths.token_map_plot)
            made.append(paths.token_map_plot)
    for stale in set(paths.plots.glob("*.png")) - set(made):   # from a run with other settings
        stale.unlink()

    doc = {"models": results, "skipped": skipped, "token_maps": grids,
           "plots": sorted(p.name for p in made), "prompt_mode": cfg.eval.prompt_mode,
           "split": cfg.eval.split, "test_rows": test.height, "probe_train_rows": probe_train.height,
           "fingerprint": fp}
    write_json(paths.metrics, doc)   # last: its fingerprint marks the run complete
    return _output(paths, doc, resumed=False)
