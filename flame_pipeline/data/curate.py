"""Curation stage: the download manifest's kept rows become a clean, tokenised, split caption table.

Reads ``raw/manifest.parquet`` (only ``status == "kept"`` rows are curated; the download
stage's rejections are counted in the stats) and ``raw/shards``. Writes, each atomically:
``curated/captions.parquet`` (kept rows, manifest order), ``curated/dropped.parquet``
(``key``, ``stage`` = "curate", ``reason``, ``detail``), ``curated/train_shards`` (the train
split's rows in the captions table's order with their stored images: what the train stages
stream, ``train/data.py``), ``curated/stats.json`` and ``curated/token_lengths.png``. Every
kept manifest row ends in exactly one of the two tables.

Rules, in order; a row is dropped with the first reason that applies:

1. ``empty_caption``: nothing left of the caption after normalisation (``captions.py`` rules,
   applied to caption, short caption and long caption; a recaption left empty becomes null).
2. ``boilerplate``: the normalised caption matches a built-in pattern (``BOILERPLATE``: bare
   "image"/"untitled"/"stock photo"-style captions, "click to enlarge", file names such as
   ``IMG_1234.jpg``, camera file stems, a lone URL) or one of ``curate.boilerplate_patterns``
   (Rust-regex syntax, case-insensitive, searched anywhere in the caption). ``detail`` = pattern.
3. ``too_short`` / ``too_long``: caption shorter than ``min_chars``, or caption or a
   recaption longer than ``max_chars`` characters (after normalisation).
4. Split (``splits.assign_splits``): a source's split is kept as is. The other rows go to a
   split by *unit*: rows that share an image (sha256), a caption (compared lowercase, letters
   and digits only) or a ``group`` are linked, and a connected component of links is one unit
   (a chain image A - caption X - image B - caption Y is one unit), named by its smallest key.
   A unit that holds rows whose source set their split follows it (train when they disagree);
   any other unit is drawn from a stable hash of its name: test for about ``test_fraction`` of
   units, val (validation) for about ``val_fraction``, else train. So no test or val row whose
   split curation chose shares a caption or an image with a training row; the stats
   (``held_out``) and the stage's metrics count such rows, apart for the rows whose source set
   the split (Fashion-MNIST's test captions are class captions that training has too, by design).
5. ``duplicate``: same image (sha256), language and normalised caption as an earlier row of
   the same split; the first row in manifest order is kept and named in ``detail``. The same
   caption on a *different* image is a different image-text pair and is not a duplicate
   (many images rightly share a caption such as "a red cube.").
6. ``near_duplicate``: same image, language and split as an earlier row that survived rule 5, and a
   caption similarity >= ``near_dup_threshold``: Jaccard similarity of the character 3-gram
   sets of the canonical caption (lowercase, letters and spaces only; a canonical text
   shorter than 3 is its own single gram; a caption without letters is never a near
   duplicate). ``detail`` = the earliest such row.

Deduplication happens within a split and a language only: a test row is never dropped because
of a train row, and a name shared by two languages (Spanish and Mexican Spanish) keeps a row in
each, so every language's benchmark sees its whole gallery.
``dup_group`` = key of the first kept row of the same split showing the same image, so rows
that share an image (several captions, languages) can be told apart from distinct images.

Token counts come from the embedding LLM's tokenizer (caption tokens only, no special
tokens), over the unique texts in batches; ``is_long`` = long caption > ``long_tokens`` tokens.

The stage is one pass over a table, so resuming means: ``stats.json`` is written last and
records a fingerprint of the inputs (manifest hash, curate params, tokenizer, this code) and
the hashes of the other outputs; a rerun that finds them all matching does nothing, any
other rerun rewrites every output, with the same bytes for the same input.
"""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from flame_pipeline.config import CurateConfig, Profile
from flame_pipeline import captions as captions_module
from flame_pipeline.captions import normalise_expr
from flame_pipeline.data import splits as splits_module
from flame_pipeline.data.splits import SPLITS, assign_splits, held_out_overlap
from flame_pipeline.files import atomic_path, sha256_file, sha256_text, write_json, write_parquet
from flame_pipeline.paths import Paths
from flame_pipeline.shards import open_shards, raw_rows, sample_at, write_shards
from flame_pipeline.stage import StageOutput
from flame_pipeline.llm_files import load_tokenizer

STAGE = "curate"
REQUIRED_COLUMNS = {"key": pl.String, "source": pl.String, "split": pl.String,
                    "caption": pl.String, "short_caption": pl.String, "long_caption": pl.String,
                    "language": pl.String,
                    "labels": pl.String, "group": pl.String, "status": pl.String,
                    "reason": pl.String, "sha256": pl.String}
CAPTION_COLUMNS = ["key", "source", "split", "language", "caption", "short_caption", "long_caption",
                   "labels", "group", "n_tokens", "n_tokens_long", "is_long", "dup_group"]
RECAPTIONS = ("short_caption", "long_caption")
TRAIN_COLUMNS = {"key": "str", "image": "bytes", "caption": "str", "long_caption": "str"}

# Whole-caption boilerplate (the caption is normalised, so it may end in '.', '!' or '?').
_END = r"[.!?…]?$"
BOILERPLATE = [
    r"^(an? |the )?(image|photo|photograph|picture|pic|img|thumbnail|preview|placeholder"
    r"|untitled|no title|no caption|caption|null|none|n/?a|unknown|default)( \d+)?" + _END,
    r"^(stock )?(photo|image|picture|vector|illustration)s?( stock)?( photo| image)?" + _END,
    r"\bclick (here )?to (enlarge|view|zoom)\b",
    r"^[\w\-. ()]+\.(jpe?g|png|gif|bmp|webp|tiff?|svg|heic|raw)" + _END,   # IMG_1234.jpg
    r"^(img|dsc|dscn|dscf|pict|pxl|photo|image|screenshot)[_\- ]?\d[\d_\- ]*" + _END,  # IMG_1234
    r"^(https?://|www\.)\S+" + _END,                                      # a lone URL
]
TEXT_GRAM = 3
BATCH = 1024
HIST_EDGES = [0, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]


class ManifestError(ValueError):
    """The manifest breaks the download stage's contract (docs/DESIGN.md)."""


# ------------------------------------------------------------------ inputs
def read_manifest(path: Path) -> pl.DataFrame:
    """The manifest with its contract checked; ``_row`` keeps the manifest order."""
    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path} (run the download stage first)")
    frame = pl.read_parquet(path)
    missing = sorted(set(REQUIRED_COLUMNS) - set(frame.columns))
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}")
    for name, dtype in REQUIRED_COLUMNS.items():
        if frame[name].dtype == pl.Null:
            frame = frame.with_columns(pl.col(name).cast(dtype))
        elif frame[name].dtype != dtype:
            raise ManifestError(f"{path}: column {name!r} is {frame[name].dtype}, expected {dtype}")
    dup_keys = frame.filter(pl.col("key").is_duplicated())["key"].unique().sort()
    if len(dup_keys) or frame["key"].null_count():
        raise ManifestError(f"{path}: keys must be unique and non-null; "
                            f"repeated: {dup_keys.head(5).to_list()}")
    bad_status = frame.filter(~pl.col("status").is_in(["kept", "rejected"]))
    if len(bad_status):
        raise ManifestError(f"{path}: status must be kept/rejected; row {bad_status['key'][0]!r} "
                            f"has {bad_status['status'][0]!r}")
    bad_split = frame.filter(pl.col("split").is_not_null() & ~pl.col("split").is_in(SPLITS))
    if len(bad_split):
        raise ManifestError(f"{path}: split must be train/test/val/null; row {bad_split['key'][0]!r} "
                            f"has {bad_split['split'][0]!r}")
    no_hash = frame.filter((pl.col("status") == "kept") & pl.col("sha256").is_null())
    if len(no_hash):
        raise ManifestError(f"{path}: kept row {no_hash['key'][0]!r} has no image sha256")
    return frame.with_row_index("_row")


def check_patterns(patterns: list[str]) -> None:
    """Fail before any work on a pattern that the regex engine rejects."""
    probe = pl.Series([""], dtype=pl.String)
    for i, pattern in enumerate(patterns):
        try:
            probe.str.contains(pattern)
        except pl.exceptions.PolarsError as err:
            raise ValueError(f"curate.boilerplate_patterns[{i}]: invalid regex {pattern!r}: "
                             f"{str(err).splitlines()[0]}") from None


# ------------------------------------------------------------------ tokenizer
def count_tokens(tokenizer, texts: list[str]) -> list[int]:
    """Caption tokens (no special tokens) per text, tokenised in batches."""
    counts: list[int] = []
    for start in range(0, len(texts), BATCH):
        ids = tokenizer(texts[start:start + BATCH], add_special_tokens=False)["input_ids"]
        counts.extend(len(x) for x in ids)
    return counts


def _token_table(tokenizer, texts: pl.Series) -> pl.DataFrame:
    unique = texts.drop_nulls().unique().sort()
    return pl.DataFrame({"text": unique,
                         "n": pl.Series(count_tokens(tokenizer, unique.to_list()), dtype=pl.Int32)})


# ------------------------------------------------------------------ rules
def _boilerplate_hit(patterns: list[str]) -> pl.Expr:
    """The first pattern the caption matches (null when none)."""
    hit = pl.lit(None, dtype=pl.String)
    for pattern in reversed(patterns):
        hit = pl.when(pl.col("caption").str.contains("(?i)" + pattern)).then(pl.lit(pattern)).otherwise(hit)
    return hit


def _first_reason(frame: pl.DataFrame, cfg: CurateConfig) -> pl.DataFrame:
    """Rules 1-3 as one ``reason`` / ``detail`` pair per row (null when the row passes)."""
    n_cap = pl.col("caption").str.len_chars()
    n_long = pl.max_horizontal(pl.col(c).str.len_chars().fill_null(0) for c in RECAPTIONS)
    hit = _boilerplate_hit(BOILERPLATE + list(cfg.boilerplate_patterns))
    return frame.with_columns(hit=hit).with_columns(
        reason=pl.when(pl.col("caption").is_null() | (n_cap == 0)).then(pl.lit("empty_caption"))
        .when(pl.col("hit").is_not_null()).then(pl.lit("boilerplate"))
        .when(n_cap < cfg.min_chars).then(pl.lit("too_short"))
        .when((n_cap > cfg.max_chars) | (n_long > cfg.max_chars)).then(pl.lit("too_long")),
        detail=pl.when(pl.col("caption").is_not_null() & (n_cap > 0)).then(pl.col("hit")),
    ).drop("hit")


def exact_duplicates(frame: pl.DataFrame) -> pl.DataFrame:
    """``_row``, ``detail`` of each row repeating an earlier (split, image, caption) triple."""
    first = pl.col("key").first().over(["split", "sha256", "language", "caption"], order_by="_row")
    return (frame.with_columns(detail=first)
                 .filter(pl.col("detail") != pl.col("key"))
                 .select("_row", "detail"))


def near_duplicates(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """``_row``, ``detail`` of rows whose caption is near an earlier one's on the same image."""
    shared = frame.filter(pl.len().over(["split", "sha256", "language"]) > 1)
    canon = (pl.col("caption").str.to_lowercase().str.replace_all(r"[^\p{L}\s]", "")
             .str.replace_all(r"\s+", " ").str.strip_chars(" "))
    unit = pl.col("split") + ":" + pl.col("sha256") + ":" + pl.col("language").fill_null("")
    grams = (shared.select("_row", "key", unit=unit, canon=canon)
                   .filter(pl.col("canon").str.len_chars() > 0)
                   .with_columns(pos=pl.int_ranges(0, pl.max_horizontal(
                       pl.col("canon").str.len_chars().cast(pl.Int64) - (TEXT_GRAM - 1), 1)))
                   .explode("pos")
                   .select("_row", "key", "unit", gram=pl.col("canon").str.slice(pl.col("pos"), TEXT_GRAM))
                   .unique(["_row", "gram"]))
    con.register("grams", grams)
    near = con.sql(f"""
        WITH size AS (SELECT _row, count(*) AS n FROM grams GROUP BY _row),
        pairs AS (
            SELECT a._row AS _row, b._row AS earlier, any_value(b.key) AS earlier_key, count(*) AS inter
            FROM grams a JOIN grams b ON a.unit = b.unit AND a.gram = b.gram AND b._row < a._row
            GROUP BY a._row, b._row)
        SELECT p._row, arg_min(p.earlier_key, p.earlier) AS detail
        FROM pairs p JOIN size sa ON sa._row = p._row JOIN size sb ON sb._row = p.earlier
        WHERE p.inter / (sa.n + sb.n - p.inter) >= {float(threshold)!r}
        GROUP BY p._row""").pl()
    con.unregister("grams")
    return near.with_columns(pl.col("_row").cast(frame["_row"].dtype))


def _drop(frame: pl.DataFrame, hits: pl.DataFrame, reason: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``frame`` into (rows not in ``hits``, dropped rows with ``reason``)."""
    dropped = frame.join(hits, on="_row").select("_row", "key", reason=pl.lit(reason), detail="detail")
    return frame.join(hits, on="_row", how="anti"), dropped


# ------------------------------------------------------------------ stats
def _histogram(values: pl.Series) -> dict:
    data = values.drop_nulls().to_numpy()
    counts, _ = np.histogram(data, bins=HIST_EDGES + [np.inf])
    summary = {"bin_edges": HIST_EDGES, "counts": counts.tolist(), "n": int(len(data))}
    if len(data):
        summary.update(mean=round(float(data.mean()), 3), median=float(np.median(data)),
                       p95=float(np.percentile(data, 95)), max=int(data.max()))
    return summary


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    table = frame.group_by(column).len().sort(column, nulls_last=True)
    return {("null" if k is None else k): n for k, n in table.iter_rows()}


def _stats(manifest: pl.DataFrame, kept: pl.DataFrame, dropped: pl.DataFrame, cfg: Profile) -> dict:
    rejected = manifest.filter(pl.col("status") == "rejected")
    return {
        "manifest_rows": len(manifest),
        "download": {"kept": len(manifest) - len(rejected), "rejected": len(rejected)},
        "curated": len(kept),
        "dropped": len(dropped),
        "rejection_reasons": {"download": _counts(rejected, "reason"),
                              "curate": _counts(dropped, "reason")},
        "per_language": _counts(kept, "language"),
        "per_source": _counts(kept, "source"),
        "per_split": _counts(kept, "split"),
        "per_split_language": {split: _counts(part, "language")
                               for (split,), part in kept.sort("split").group_by("split", maintain_order=True)},
        "recaptions": recaption_counts(kept),
        "long": {"long_tokens": cfg.curate.long_tokens,
                 "with_long_caption": int(kept["long_caption"].is_not_null().sum()),
                 "is_long": int(kept["is_long"].sum())},
        "token_histogram": {"tokenizer": cfg.embed.llm,
                            "caption": _histogram(kept["n_tokens"]),
                            "long_caption": _histogram(kept["n_tokens_long"])},
        "held_out": held_out_overlap(kept),
    }


def recaption_counts(kept: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per source: curated rows, and how many have no short / no long caption."""
    table = kept.group_by("source").agg(
        rows=pl.len(), no_short_caption=pl.col("short_caption").null_count(),
        no_long_caption=pl.col("long_caption").null_count())
    return {row.pop("source"): row for row in table.sort("source").to_dicts()}


def held_out_metrics(held_out: dict) -> list[tuple[str, str, str, float]]:
    """The stats' ``held_out`` counts as metric rows (model "data", benchmark "curate"): e.g.
    ``test_caption_in_train`` for the rows curation split, ``source_test_caption_in_train`` for
    the rows whose source set the split."""
    prefix = {"curate": "", "source": "source_"}
    return sorted(("data", STAGE, f"{prefix[origin]}{split}_{name}", float(value))
                  for origin, by_split in held_out.items() for split, counts in by_split.items()
                  for name, value in counts.items())


def _plot(path: Path, kept: pl.DataFrame, long_tokens: int) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(6, 3.5), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.95, bottom=0.15)
    ax = fig.add_subplot()
    top = max(HIST_EDGES[-1] * 2, int(kept["n_tokens_long"].max() or 0) + 1)
    edges = [1] + HIST_EDGES[2:] + [top]  # log axis: a caption has at least one token
    for column, label in (("n_tokens", "caption"), ("n_tokens_long", "long caption")):
        values = kept[column].drop_nulls().to_numpy()
        if len(values):
            ax.hist(values, bins=edges, histtype="step", label=f"{label} (n={len(values)})")
    ax.axvline(long_tokens, color="grey", linestyle="--", label=f"long_tokens={long_tokens}")
    ax.set_xscale("log")
    ax.set_xlim(1, top)
    ax.set_xlabel("tokens")
    ax.set_ylabel("captions")
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


# ------------------------------------------------------------------ stage
def write_train_shards(paths: Paths, manifest: pl.DataFrame, kept: pl.DataFrame) -> int:
    """``curated/train_shards``: the train rows in ``kept``'s order, each with its stored image
    and its caption and long caption ("" for none). A kept manifest row's image is the raw
    shards' row at its rank among the kept rows (the download stage writes them in manifest
    order); each row's key is checked against it."""
    train = (kept.filter(pl.col("split") == "train").select("key", "caption", "long_caption")
                 .join(raw_rows(manifest), on="key", how="left", maintain_order="left"))
    raw = open_shards(paths.raw_shards)

    def rows():
        for key, caption, long_caption, i in train.iter_rows():
            sample = sample_at(raw, i, key)
            if sample is None:
                raise ManifestError(f"{paths.raw_shards} does not match {paths.manifest}: kept row "
                                    f"{key!r} is not at raw row {i} (re-run the download stage)")
            yield {"key": key, "image": sample["image"], "caption": caption,
                   "long_caption": long_caption or ""}

    with atomic_path(paths.train_shards) as tmp:
        return write_shards(tmp, TRAIN_COLUMNS, rows())


def _fingerprint(manifest_path: Path, cfg: Profile) -> dict:
    code = "".join(Path(f).read_text() for f in (captions_module.__file__, splits_module.__file__, __file__))
    return {"manifest_sha256": sha256_file(manifest_path), "curate": cfg.curate.model_dump(mode="json"),
            "tokenizer": cfg.embed.llm, "code_sha256": sha256_text(code)}


def _outputs(paths: Paths) -> dict[str, Path]:
    return {"captions": paths.captions, "dropped": paths.dropped,
            "histogram": paths.token_histogram, "train_shards": paths.train_shards / "index.json"}


def _finished(paths: Paths, fingerprint: dict) -> dict | None:
    """The stats of a completed run with this fingerprint whose outputs are intact, else None."""
    if not paths.curate_stats.exists():
        return None
    stats = json.loads(paths.curate_stats.read_text())
    outputs = stats.get("outputs", {})
    if stats.get("fingerprint") != fingerprint:
        return None
    for name, path in _outputs(paths).items():
        if not path.exists() or outputs.get(name) != sha256_file(path):
            return None
    return stats


def _result(paths: Paths, stats: dict, resumed: bool) -> StageOutput:
    artifacts = {**_outputs(paths), "train_shards": paths.train_shards, "stats": paths.curate_stats}
    return StageOutput(artifacts=artifacts,
                       rows={"captions": stats["curated"], "dropped": stats["dropped"]},
                       summary={"curated": stats["curated"], "dropped": stats["dropped"],
                                "drop_reasons": stats["rejection_reasons"]["curate"],
                                "recaptions": stats["recaptions"],
                                "per_split": stats["per_split"], "resumed": resumed},
                       metrics=held_out_metrics(stats["held_out"]))


def curate(cfg: Profile) -> StageOutput:
    """Run the curation stage for ``cfg`` (see the module docstring for the rules)."""
    paths = Paths.of(cfg)
    check_patterns(list(cfg.curate.boilerplate_patterns))
    manifest = read_manifest(paths.manifest)
    fingerprint = _fingerprint(paths.manifest, cfg)
    done = _finished(paths, fingerprint)
    if done is not None:
        return _result(paths, done, resumed=True)

    rows = (manifest.filter(pl.col("status") == "kept")
                    .with_columns(caption=normalise_expr(pl.col("caption")),
                                  **{c: normalise_expr(pl.col(c)) for c in RECAPTIONS})
                    .with_columns(pl.when(pl.col(c).str.len_chars() > 0).then(pl.col(c)).alias(c)
                                  for c in RECAPTIONS))
    rows = _first_reason(rows, cfg.curate)
    dropped = [rows.filter(pl.col("reason").is_not_null()).select("_row", "key", "reason", "detail")]
    rows = rows.filter(pl.col("reason").is_null()).drop("reason", "detail")

    con = duckdb.connect(config={"threads": 1})
    try:
        rows = assign_splits(con, rows, cfg.curate.test_fraction, cfg.curate.val_fraction).sort("_row")
        rows, exact = _drop(rows, exact_duplicates(rows), "duplicate")
        rows, near = _drop(rows, near_duplicates(con, rows, cfg.curate.near_dup_threshold), "near_duplicate")
    finally:
        con.close()
    dropped += [exact, near]

    tokenizer = load_tokenizer(cfg.embed)
    tokens = _token_table(tokenizer, pl.concat([rows["caption"], rows["long_caption"]]))
    kept = (rows.join(tokens.rename({"text": "caption", "n": "n_tokens"}), on="caption", how="left")
                .join(tokens.rename({"text": "long_caption", "n": "n_tokens_long"}), on="long_caption",
                      how="left")
                .with_columns(is_long=(pl.col("n_tokens_long") > cfg.curate.long_tokens).fill_null(False),
                              dup_group=pl.col("key").first().over(["split", "sha256"], order_by="_row"))
                .sort("_row"))
    dropped_table = (pl.concat(dropped).sort("_row")
                       .select("key", stage=pl.lit(STAGE), reason="reason", detail="detail"))
    n_in = int((manifest["status"] == "kept").sum())
    if len(kept) + len(dropped_table) != n_in:  # every kept manifest row is accounted for
        raise AssertionError(f"curate lost rows: {len(kept)} kept + {len(dropped_table)} dropped != {n_in}")

    write_parquet(paths.captions, kept.select(CAPTION_COLUMNS))
    write_parquet(paths.dropped, dropped_table)
    write_train_shards(paths, manifest, kept)
    _plot(_outputs(paths)["histogram"], kept, cfg.curate.long_tokens)
    stats = _stats(manifest, kept, dropped_table, cfg)
    stats["fingerprint"] = fingerprint
    stats["outputs"] = {name: sha256_file(path) for name, path in _outputs(paths).items()}
    write_json(paths.curate_stats, stats)  # last: its presence marks a finished run
    return _result(paths, stats, resumed=False)
