"""The evaluate stage: the profile's benchmarks (``eval.benchmarks``, docs/METHOD.md#evaluation),
run identically on FLAME and on CLIP.

Reads the curated test rows (and labelled training rows for the linear probe), the raw
images, both trained models and the file benchmarks the profile lists (under
``eval.benchmark_dir``); writes ``eval/metrics.json`` and ``eval/plots/*.png``; returns the
metrics as (model, benchmark, metric, value) rows, which ``stage.record`` stores in DuckDB with
the run and artifact hashes; the report stage (``report.py``) then writes ``eval/report.md``
from DuckDB. What runs each kind is ``registry.KINDS``; the benchmark names are those of
``curated.py``, ``compositional.py`` and ``manifest/<name>/...`` for file benchmarks, whose
rows read, used and rejected (with the reasons) go into ``metrics.json``. Each output is
written atomically, ``metrics.json`` last with a fingerprint of the inputs (content hashes,
the file benchmarks' too), settings and evaluation code: a rerun with the same fingerprint
returns the stored metrics without recomputing, any other reruns everything.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import torch

from flame_pipeline.config import DataBenchmark, Profile
from flame_pipeline.data import scenes
from flame_pipeline.eval import plots
from flame_pipeline.eval.curated import Curated, Results, Task, classification_tasks
from flame_pipeline.eval.data import load_images, load_rows
from flame_pipeline.eval.encoders import MODELS, EvalModel, load_eval_model
from flame_pipeline.eval.interpret import TokenReader, token_map
from flame_pipeline.eval.registry import Suite, run_suite, warnings
from flame_pipeline.files import sha256_file, sha256_text, sha256_tree, write_json
from flame_pipeline.paths import Paths
from flame_pipeline.stage import StageOutput
from flame_pipeline.vision.preprocess import decode


def truncate_texts(tokenizer, texts: list[str], n_tokens: int) -> list[str]:
    """Each text cut to its first ``n_tokens`` tokens (texts within the limit are unchanged)."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(i[:n_tokens]).strip() if len(i) > n_tokens else t
            for t, i in zip(texts, ids)]


def run_benchmarks(cfg: Profile, model: EvalModel, test: pl.DataFrame, train: pl.DataFrame,
                   images: dict[str, bytes], tasks: list[Task],
                   truncate: Callable[[list[str]], list[str]],
                   skipped: list[str] | None = None) -> Results:
    """The profile's benchmarks for one model on these curated rows (``registry.run_suite``);
    a benchmark that cannot run on this data appends its reason to ``skipped``."""
    data = Curated(test, train, images, tasks, truncate, [] if skipped is None else skipped)
    return run_suite(Suite(cfg, data), model)


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
    inputs.update({f"benchmark/{b.title}": Path(cfg.eval.benchmark_dir) / b.path
                   for b in cfg.eval.benchmarks if isinstance(b, DataBenchmark)})
    here = Path(__file__).parent   # the evaluation code, its template sets, the probe's scenes
    code = [*sorted(here.glob("*.py")), *sorted((here / "templates").glob("*.txt")),
            Path(scenes.__file__), Path(scenes.__file__).with_name("scene_lexicon.py")]
    return {"inputs": {k: sha256_tree(p) if p.exists() else None for k, p in sorted(inputs.items())},
            "settings": {"eval": cfg.eval.model_dump(mode="json"),
                         "embed": cfg.embed.model_dump(mode="json"),
                         "image_size": cfg.vision.image_size},
            "code": sha256_text("".join(sha256_file(f) for f in code))}


def _output(paths: Paths, doc: dict, resumed: bool) -> StageOutput:
    results = doc["models"]
    metrics = [(m, b, k, float(v)) for m, r in sorted(results.items()) for b, ms in sorted(r.items())
               for k, v in sorted(ms.items())]
    return StageOutput(artifacts={"metrics": paths.metrics, "plots": paths.plots},
                       rows={"metrics": len(metrics)},
                       summary={"benchmarks": len({b for _, b, _, _ in metrics}),
                                "plots": doc["plots"], "skipped": doc["skipped"], "resumed": resumed,
                                "data_benchmarks": {n: {k: a[k] for k in ("rows", "used", "problems")}
                                                    for n, a in doc.get("data_benchmarks", {}).items()}},
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
        if cfg.eval.has("linear_probe") else train.clear()
    images = load_images(paths, set(test["key"]) | set(probe_train["key"]))
    tokenizer = load_tokenizer(cfg.embed)
    truncate = lambda texts: truncate_texts(tokenizer, texts, cfg.eval.truncate_tokens)  # noqa: E731

    suite = Suite(cfg, Curated(test, probe_train, images, tasks, truncate))
    results, models = {}, {}
    for name in MODELS:
        models[name] = load_eval_model(cfg, name)
        results[name] = run_suite(suite, models[name])
    skipped += sorted(set(suite.curated.skipped))       # the same data for both: the same notes
    skipped += warnings({b: m for b, m in results["flame"].items() if b.startswith("manifest/")})

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
    if cfg.eval.has("interpretability"):
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
           "data_benchmarks": {name: b.accounting() for name, b in suite.loaded.items()},
           "fingerprint": fp}
    write_json(paths.metrics, doc)   # last: its fingerprint marks the run complete
    return _output(paths, doc, resumed=False)
