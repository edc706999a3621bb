"""Asset checks: each reads the files a stage wrote and can fail.

The data and training checks are blocking: a failure stops the chain before the next
stage reads bad data. Nothing runs after evaluation, so its checks are not blocking; a
model no better than chance is a warning, not an error (the tiny profile trains 6 steps).
"""

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetChecksDefinition, MetadataValue,
                     asset_check)

from assets.metadata import md_table
from assets.resources import FlameParams, ResultsStoreResource
from assets.stages import stage_key
from flame_pipeline.data.splits import SPLITS, held_out_overlap
from flame_pipeline.paths import Paths

NORM_TOLERANCE = 2e-2      # fp16 storage: |1 - ||e||| stays well under this for normalised rows
RECALL = re.compile(r"^(i2t|t2i)_R@(\d+)$")


def _result(problems: list[str], severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
            **metadata) -> AssetCheckResult:
    """Passed when there are no problems; the problems (first 50) are listed in the metadata."""
    if problems:
        metadata["problems"] = MetadataValue.md("\n".join(f"- {p}" for p in problems[:50]))
    return AssetCheckResult(passed=not problems, severity=severity, metadata=metadata)


def _missing(*paths: Path) -> AssetCheckResult | None:
    """A failed result naming the stage files that do not exist, if any."""
    absent = [str(p) for p in paths if not p.exists()]
    return _result([f"missing {p}" for p in absent]) if absent else None


def _keys(frame: pl.DataFrame) -> set[str]:
    return set(frame["key"].to_list())


# ------------------------------------------------------------------ download
@asset_check(asset=stage_key("download"), blocking=True,
             description="Every input row is in the manifest as kept or rejected (with a reason), "
                         "keys are unique, and the shards hold exactly the kept samples.")
def every_row_accounted_for(flame: FlameParams) -> AssetCheckResult:
    paths = Paths.of(flame.load())
    if failed := _missing(paths.manifest, paths.raw_shards / "index.json"):
        return failed
    manifest = pl.read_parquet(paths.manifest)
    problems = []
    kept = manifest.filter(pl.col("status") == "kept")
    rejected = manifest.filter(pl.col("status") == "rejected")
    other = manifest.height - kept.height - rejected.height
    if other:
        problems.append(f"{other} manifest rows are neither kept nor rejected")
    if manifest["key"].n_unique() != manifest.height:
        problems.append(f"{manifest.height - manifest['key'].n_unique()} duplicate keys")
    if (n := rejected["reason"].is_null().sum()):
        problems.append(f"{n} rejected rows without a reason")
    if (n := kept["sha256"].is_null().sum()):
        problems.append(f"{n} kept rows without a sha256")
    index = json.loads((paths.raw_shards / "index.json").read_text())
    in_shards = sum(int(shard["samples"]) for shard in index["shards"])
    if in_shards != kept.height:
        problems.append(f"shards hold {in_shards} samples but the manifest keeps {kept.height}")
    reasons = (rejected.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
               .rows())
    return _result(problems, input_rows=manifest.height, kept=kept.height,
                   rejected=rejected.height, samples_in_shards=in_shards,
                   rejection_reasons=MetadataValue.md(md_table(["reason", "rows"], reasons)
                                                      if reasons else "none"))


# ------------------------------------------------------------------ curate
@asset_check(asset=stage_key("curate"), blocking=True,
             description="Every kept download row is either a curated caption or dropped with a "
                         "reason, never both; every caption has a train/test/val split.")
def kept_rows_curated_or_dropped(flame: FlameParams) -> AssetCheckResult:
    paths = Paths.of(flame.load())
    if failed := _missing(paths.manifest, paths.captions, paths.dropped):
        return failed
    kept = _keys(pl.read_parquet(paths.manifest).filter(pl.col("status") == "kept"))
    captions = pl.read_parquet(paths.captions)
    dropped = pl.read_parquet(paths.dropped)
    cap, drop = _keys(captions), _keys(dropped)
    problems = []
    if missing := kept - cap - drop:
        problems.append(f"{len(missing)} kept rows neither curated nor dropped, e.g. {sorted(missing)[:3]}")
    if both := cap & drop:
        problems.append(f"{len(both)} rows both curated and dropped, e.g. {sorted(both)[:3]}")
    if extra := (cap | drop) - kept:
        problems.append(f"{len(extra)} rows not kept by download, e.g. {sorted(extra)[:3]}")
    if captions.height != len(cap):
        problems.append(f"{captions.height - len(cap)} duplicate caption keys")
    if (n := (~captions["split"].is_in(SPLITS) | captions["split"].is_null()).sum()):
        problems.append(f"{n} captions without a train/test/val split")
    if (n := dropped["reason"].is_null().sum()):
        problems.append(f"{n} dropped rows without a reason")
    reasons = dropped.group_by("reason").len().sort(["len", "reason"], descending=[True, False]).rows()
    return _result(problems, kept_by_download=len(kept), curated=captions.height,
                   dropped=dropped.height,
                   drop_reasons=MetadataValue.md(md_table(["reason", "rows"], reasons)
                                                 if reasons else "none"))


@asset_check(asset=stage_key("curate"), blocking=True,
             description="Held out means held out: no test or val row whose split curation "
                         "chose shares a caption (lowercase letters and digits) or an image with "
                         "a training row. Rows whose source set the split (Fashion-MNIST's class "
                         "captions) are counted in the metadata but do not fail the check.")
def held_out_disjoint_from_train(flame: FlameParams) -> AssetCheckResult:
    paths = Paths.of(flame.load())
    if failed := _missing(paths.manifest, paths.captions):
        return failed
    given = pl.read_parquet(paths.manifest, columns=["key", "split", "sha256"])
    rows = (pl.read_parquet(paths.captions, columns=["key", "split", "caption"])
              .join(given.select("key", "sha256", assigned=pl.col("split").is_null()), on="key", how="left"))
    overlap = held_out_overlap(rows)
    shared = {"caption_in_train": "a caption", "image_in_train": "an image"}
    problems = [f"{c[what]} of {c['rows']} {split} rows share {text} with training"
                for split, c in overlap["curate"].items() for what, text in shared.items() if c[what]]
    table = [[origin, split, c["rows"], c["caption_in_train"], c["image_in_train"]]
             for origin, by_split in overlap.items() for split, c in by_split.items()]
    return _result(problems, held_out=MetadataValue.md(md_table(
        ["split set by", "split", "rows", "caption in train", "image in train"], table)))


# ------------------------------------------------------------------ embed
@asset_check(asset=stage_key("embed"), blocking=True,
             description="One embedding row per curated caption of the stored splits (embed.splits); "
                         "every valid embedding is finite "
                         "and unit-norm.")
def embeddings_finite_unit_norm(flame: FlameParams) -> AssetCheckResult:
    from flame_pipeline.shards import iter_shards

    cfg = flame.load()
    paths = Paths.of(cfg)
    if failed := _missing(paths.captions, paths.embed_meta, paths.embed_shards / "index.json"):
        return failed
    captions = _keys(pl.read_parquet(paths.captions).filter(pl.col("split").is_in(cfg.embed.splits)))
    names = json.loads(paths.embed_meta.read_text())["names"]
    problems, keys, n_valid, worst = [], [], 0, 0.0
    for row in iter_shards(paths.embed_shards):
        keys.append(row["key"])
        emb = np.asarray(row["emb"], dtype=np.float32)
        valid = np.asarray(row["valid"]).astype(bool)
        if emb.shape != (len(names), emb.shape[-1]) or valid.shape != (len(names),):
            problems.append(f"{row['key']}: emb {emb.shape}, valid {valid.shape}, "
                            f"expected {len(names)} rows ({names})")
            continue
        if not np.isfinite(emb[valid]).all():
            problems.append(f"{row['key']}: non-finite values")
            continue
        err = np.abs(np.linalg.norm(emb[valid], axis=1) - 1.0)
        n_valid += int(valid.sum())
        worst = max(worst, float(err.max(initial=0.0)))
        if (err > NORM_TOLERANCE).any():
            problems.append(f"{row['key']}: norm off by {err.max():.3g}")
    if len(set(keys)) != len(keys):
        problems.append(f"{len(keys) - len(set(keys))} duplicate embedding keys")
    if set(keys) != captions:
        problems.append(f"{len(captions - set(keys))} captions without embeddings, "
                        f"{len(set(keys) - captions)} embeddings without a caption")
    return _result(problems, rows=len(keys), valid_embeddings=n_valid,
                   max_norm_error=MetadataValue.float(worst), facets=names)


# ------------------------------------------------------------------ train, train_baseline
def _loss_check(stage: str, model_dir: str) -> AssetChecksDefinition:
    @asset_check(asset=stage_key(stage), name="loss_finite", blocking=True,
                 description=f"The training curve of models/{model_dir} has no NaN or infinite loss.")
    def _check(flame: FlameParams) -> AssetCheckResult:
        curve = Paths.of(flame.load()).curve(model_dir)
        if failed := _missing(curve):
            return failed
        with open(curve, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        bad = [r["step"] for r in rows if not math.isfinite(float(r["loss"]))]
        problems = [f"non-finite loss at steps {bad[:10]}"] if bad else []
        if not rows:
            problems.append(f"{curve} has no rows")
        return _result(problems, logged_steps=len(rows),
                       last_step=int(float(rows[-1]["step"])) if rows else -1,
                       last_loss=MetadataValue.float(float(rows[-1]["loss"]) if rows else math.nan))

    return _check


# ------------------------------------------------------------------ evaluate
def _latest_metrics(results: ResultsStoreResource) -> tuple[dict, pl.DataFrame]:
    """The latest successful evaluate run of the profile and its metric rows (none: empty)."""
    from flame_pipeline.eval.report import latest_run, run_metrics

    store = results.store()
    try:
        run = latest_run(store, results.params.load().name)
    except LookupError:
        return {"run_id": "none", "params_hash": None}, pl.DataFrame(schema={
            "model": pl.String, "benchmark": pl.String, "metric": pl.String, "value": pl.Float64})
    return run, run_metrics(store, run["run_id"])


@asset_check(asset=stage_key("evaluate"),
             description="The latest evaluate run, made with this profile's params, recorded "
                         "metrics in DuckDB for both FLAME and CLIP on the same benchmarks.")
def flame_vs_clip_recorded(results: ResultsStoreResource) -> AssetCheckResult:
    run, metrics = _latest_metrics(results)
    by_model = {m: set(zip(g["benchmark"], g["metric"]))
                for (m,), g in metrics.group_by("model")}
    problems = [f"no metrics for {m}" for m in ("flame", "clip") if not by_model.get(m)]
    params_hash = results.params.load().params_hash()
    if run["params_hash"] not in (None, params_hash):
        problems.append(f"the latest evaluation used params {run['params_hash']}, "
                        f"this profile's are {params_hash}")
    if not problems and (diff := by_model["flame"] ^ by_model["clip"]):
        problems.append(f"{len(diff)} benchmark metrics recorded for one model only, "
                        f"e.g. {sorted(diff)[:3]}")
    counts = [[m, len(v)] for m, v in sorted(by_model.items())]
    return _result(problems, run_id=run["run_id"],
                   metrics_per_model=MetadataValue.md(md_table(["model", "metrics"], counts)))


def chance_recall(k: int, gallery: float, relevant: float = 1.0) -> float:
    """Recall@K in percent of a random ranking of ``gallery`` items, ``relevant`` of them right."""
    n, r = int(gallery), max(1, round(relevant))
    if k >= n:
        return 100.0
    miss = math.comb(n - r, k) / math.comb(n, k)  # no relevant item among the first K
    return round(100.0 * (1.0 - miss), 9)


@asset_check(asset=stage_key("evaluate"),
             description="FLAME's image-text retrieval beats a random ranking: on every retrieval "
                         "benchmark and direction, its mean R@K over the informative K (chance "
                         "< 100 %) is above the mean chance level.")
def retrieval_above_chance(results: ResultsStoreResource) -> AssetCheckResult:
    run, metrics = _latest_metrics(results)
    flame = {(b, k): v for b, k, v in metrics.filter(pl.col("model") == "flame")
             .select("benchmark", "metric", "value").rows()}
    table, problems = [], []
    for bench in sorted({b for b, k in flame if (b, "n_texts") in flame and (b, "n_images") in flame}):
        texts, images = flame[(bench, "n_texts")], flame[(bench, "n_images")]
        for direction, gallery, queries in (("i2t", texts, images), ("t2i", images, texts)):
            pairs = [(int(m[2]), value, chance_recall(int(m[2]), gallery, gallery / queries))
                     for (b, metric), value in flame.items()
                     if b == bench and (m := RECALL.match(metric)) and m[1] == direction]
            pairs = sorted(p for p in pairs if p[2] < 100.0)
            if not pairs:
                continue
            recall = sum(v for _, v, _ in pairs) / len(pairs)
            chance = sum(c for _, _, c in pairs) / len(pairs)
            table.append([bench, direction, ",".join(str(k) for k, _, _ in pairs), recall, chance])
            if not recall > chance:
                problems.append(f"{bench} {direction}: mean R@K {recall:.3g} <= chance {chance:.3g}")
    if not table:
        problems.append("no retrieval recall with gallery sizes recorded for flame")
    return _result(problems, AssetCheckSeverity.WARN, run_id=run["run_id"], recalls=MetadataValue.md(
        md_table(["benchmark", "direction", "K", "flame mean R@K", "chance"], table)))


# ------------------------------------------------------------------ report
@asset_check(asset=stage_key("report"),
             description="The report exists and names the latest evaluate run of this profile, "
                         "so it shows the numbers of that run.")
def report_names_latest_evaluation(results: ResultsStoreResource) -> AssetCheckResult:
    run, _ = _latest_metrics(results)
    report = Paths.of(results.params.load()).report
    if failed := _missing(report):
        return failed
    problems = [] if f"run: `{run['run_id']}`" in report.read_text() else [
        f"{report} does not name the latest evaluate run {run['run_id']}"]
    return _result(problems, run_id=run["run_id"])


CHECKS: list[AssetChecksDefinition] = [
    every_row_accounted_for, kept_rows_curated_or_dropped, held_out_disjoint_from_train,
    embeddings_finite_unit_norm,
    _loss_check("train", "flame"), _loss_check("train_baseline", "clip"),
    flame_vs_clip_recorded, retrieval_above_chance, report_names_latest_evaluation,
]
