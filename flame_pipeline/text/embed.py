"""The embed stage: frozen-LLM facet embeddings for every curated caption of the stored splits.

Every (prompt set, normalised caption) is one unit of work computed through ``TextEncoder``
(``encoder.py``) into the content-addressed cache (``cache.py``), so an unchanged caption is
never computed again and a stage killed half-way resumes from its last finished batch. The
stage then fits ``embed.postprocess``'s statistics on the train split (``postprocess.py``)
and writes the post-processed vectors as float16 shards.

The curated table is read ``ROW_CHUNK`` rows at a time, in four passes: every text checked
and counted (an empty one stops the stage before anything is computed), the missing units
computed, the train rows' sums for the post-processing, the output rows. Memory holds one
chunk's texts and vectors (and the shard being filled), never the whole table's texts or
vectors: the rows of ``embed/index.parquet`` are written a chunk at a time as well.

Under torchrun every rank reads the whole table for the first two passes and computes the
missing units it owns (by key: none twice, the work spread evenly however much of the
table a killed run left cached). Then each rank takes a contiguous slice of the rows, sums
its train rows (the sums are added over the ranks, so every rank fits the same
post-processing) and writes its own MDS part, ``embed/shards/part-<rank>/``, and the rows of
its part of the index table; nothing travels between ranks but sums. Rank 0 joins the parts
with one ``embed/shards/index.json`` (rows in table order), the index parts into
``embed/index.parquet``, and writes the small files. One process writes ``part-00000`` alone: the same
layout. The ranks share one file system (the cache and the shards directory).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from flame_pipeline import distributed
from flame_pipeline.config import EmbedConfig, Profile
from flame_pipeline.files import write_json, write_parquet
from flame_pipeline.llm_files import llm_identity
from flame_pipeline.paths import Paths
from flame_pipeline.shards import join_parts, write_shards
from flame_pipeline.stage import StageOutput
from flame_pipeline.text.cache import content_hash
from flame_pipeline.text.cosine import CosineMeter
from flame_pipeline.text.encoder import TextEncoder, owner
from flame_pipeline.text.llm import device_and_dtype
from flame_pipeline.text.postprocess import Postprocess, TrainSums
from flame_pipeline.text.prompts import EmptyCaptionError, prepare_caption

COLUMNS = {"key": "str", "emb": "ndarray:float16", "valid": "ndarray:uint8"}
# valid: which of the E stored embeddings the row has (training checks train.pool against it)
INDEX = {"key": pl.String, "split": pl.String, "truncated": pl.Boolean, "content_hash": pl.String,
         "valid": pl.List(pl.UInt8)}
ROW_CHUNK = 4096   # curated rows read, embedded and written at a time

Unit = tuple[str, str]          # (prompt set, normalised text)
RowUnits = list[Unit | None]    # per plan entry; None where the row has no such text


def plan_fields(entry: tuple) -> tuple[str, ...]:
    """The caption fields a plan entry embeds, in the order tried: (field,) or (field, fallback)."""
    return (entry[0],) + tuple(entry[2:])


def embedding_names(embed_cfg: EmbedConfig) -> list[str]:
    """Names of the E stored embeddings, in order: ``set`` for a one-facet set, else ``set/k``."""
    sets = [entry[1] for entry in embed_cfg.plan]
    if len(set(sets)) != len(sets):
        raise ValueError(f"embed.plan uses a prompt set twice: {sets}")
    names = []
    for ps in sets:
        if ps not in embed_cfg.prompt_sets:
            raise ValueError(f"embed.plan names prompt set {ps!r}, not in embed.prompt_sets "
                             f"{sorted(embed_cfg.prompt_sets)}")
        k = len(embed_cfg.prompt_sets[ps].facets)
        names += [ps] if k == 1 else [f"{ps}/{i}" for i in range(k)]
    return names


def _caption_columns(path: Path, embed_cfg: EmbedConfig) -> list[str]:
    """The curated table's key, split and the caption fields ``embed.plan`` reads."""
    if not path.is_file():
        raise FileNotFoundError(f"curated captions not found: {path} (run the curate stage)")
    fields = sorted({f for entry in embed_cfg.plan for f in plan_fields(entry)})
    present = pq.read_schema(path).names
    missing = [c for c in ("key", "split", *fields) if c not in present]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return ["key", "split", *fields]


def _chunks(path: Path, embed_cfg: EmbedConfig, start: int = 0,
            stop: int | None = None) -> Iterator[pl.DataFrame]:
    """The curated rows of the splits ``embed.splits`` names, positions ``start`` to ``stop``
    among them, in table order, at most ``ROW_CHUNK`` at a time (``_caption_columns``).
    Training reads only the train split; evaluation embeds its own test queries through
    TextEncoder (same cache), so ``embed.splits: [train]`` skips what it would not read."""
    columns = _caption_columns(path, embed_cfg)
    seen = 0
    with pq.ParquetFile(path) as table:
        for batch in table.iter_batches(batch_size=ROW_CHUNK, columns=columns):
            if stop is not None and seen >= stop:
                return
            frame = pl.from_arrow(batch).filter(pl.col("split").is_in(embed_cfg.splits))
            lo = max(start - seen, 0)
            hi = frame.height if stop is None else min(stop - seen, frame.height)
            seen += frame.height
            if lo < hi:
                yield frame[lo:hi]


def _row_units(frame: pl.DataFrame, embed_cfg: EmbedConfig) -> tuple[list[RowUnits], list[str]]:
    """Per row, per plan entry: (prompt set, normalised text) of the entry's field, or of its
    fallback where the field is null; None where both are null (a recaption the sample lacks;
    the caption is never null). Also the empty texts, as "key (field)"."""
    out, bad = [], []
    for row in frame.iter_rows(named=True):
        units: RowUnits = []
        for entry in embed_cfg.plan:
            field = next((f for f in plan_fields(entry) if row[f] is not None), None)
            if field is None and "caption" not in plan_fields(entry):
                units.append(None)
                continue
            try:
                units.append((entry[1], prepare_caption(row[field or "caption"] or "")))
            except EmptyCaptionError:
                units.append(None)
                bad.append(f"{row['key']} ({field or 'caption'})")
        out.append(units)
    return out, bad


def _unit_chunks(path: Path, embed_cfg: EmbedConfig, start: int = 0,
                 stop: int | None = None) -> Iterator[tuple[pl.DataFrame, list[RowUnits]]]:
    """``_chunks`` with each row's units (the survey has found no empty text)."""
    for frame in _chunks(path, embed_cfg, start, stop):
        units, bad = _row_units(frame, embed_cfg)
        if bad:
            raise EmptyCaptionError(f"empty caption(s) {bad[:10]}: the curated table changed "
                                    "while the embed stage read it")
        yield frame, units


def _texts(units: list[RowUnits]) -> list[Unit]:
    return [u for r in units for u in r if u is not None]


@dataclass(frozen=True)
class Survey:
    """The first pass's figures: rows, texts and distinct texts of the embedded rows, the
    distinct texts this rank is to compute, the prompt sets that embed any text and the
    key of the first text (its vector gives the width)."""
    rows: int
    texts: int
    unique_texts: int
    to_compute: int
    used: frozenset[str]
    first: str | None


def _survey(path: Path, enc: TextEncoder, rank: int, world: int) -> Survey:
    """Read every embedded row once before anything is computed: every empty text is
    reported at once, naming its key; the distinct texts are counted from their keys."""
    rows, texts, bad, used, first = 0, 0, [], set(), None
    keys, missing = [pl.Series(dtype=pl.Binary)], [pl.Series(dtype=pl.Binary)]
    for frame in _chunks(path, enc.cfg):
        units, chunk_bad = _row_units(frame, enc.cfg)
        rows, bad = rows + frame.height, bad + chunk_bad
        chunk = [(ps, enc.key(ps, text)) for ps, text in _texts(units)]
        texts += len(chunk)
        used |= {ps for ps, _ in chunk}
        first = first or next((k for _, k in chunk), None)
        keys.append(pl.Series([k for _, k in chunk], dtype=pl.String).str.decode("hex").unique())
        todo = [k for _, k in chunk if k not in enc.cache and owner(k, world) == rank]
        missing.append(pl.Series(todo, dtype=pl.String).str.decode("hex").unique())
    if bad:
        raise EmptyCaptionError(f"{len(bad)} empty caption(s) in the curated table, e.g. "
                                f"{bad[:10]}; nothing was embedded")
    return Survey(rows, texts, pl.concat(keys).n_unique(), pl.concat(missing).n_unique(),
                  frozenset(used), first)


def fit_postprocess(enc: TextEncoder, path: Path, start: int, stop: int, dim: int,
                    used: frozenset[str]) -> Postprocess:
    """``embed.postprocess``'s statistics from the train split: this rank's sums over the
    train rows of its slice ``start:stop``, added over the ranks, then fitted."""
    if enc.cfg.postprocess == "none":
        return Postprocess("none", enc.fingerprint, {})
    facets = {entry[1]: len(enc.cfg.prompt_sets[entry[1]].facets) for entry in enc.cfg.plan}
    sums = TrainSums(enc.cfg.postprocess, facets, dim)
    for frame, units in _unit_chunks(path, enc.cfg, start, stop):
        train = [r for r, split in zip(units, frame["split"]) if split == "train"]
        for j, entry in enumerate(enc.cfg.plan):
            keys = [enc.key(*r[j]) for r in train if r[j] is not None]
            if keys:
                sums.add(entry[1], np.stack(enc.cache.get(keys)[0]))
    sums.arrays = distributed.all_sum(sums.arrays)
    return sums.fit(enc.fingerprint, enc.cfg.whiten_floor, used)


def _assemble(enc: TextEncoder, units: list[RowUnits], post: Postprocess, n_names: int,
              dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """A chunk's rows: raw and post-processed vectors [n, E, d], valid [n, E] (uint8),
    truncated [n] and each row's content hash (of its units' keys)."""
    keys = [[enc.key(*u) if u else None for u in r] for r in units]
    raw = np.zeros((len(units), n_names, dim), np.float32)
    done = np.zeros_like(raw)
    valid = np.zeros((len(units), n_names), np.uint8)
    truncated = np.zeros(len(units), bool)
    at = 0
    for j, entry in enumerate(enc.cfg.plan):
        k = len(enc.cfg.prompt_sets[entry[1]].facets)
        rows = [i for i, r in enumerate(keys) if r[j] is not None]
        if rows:
            emb, trunc = enc.cache.get([keys[i][j] for i in rows])
            x = np.stack(emb)
            raw[rows, at:at + k] = x
            done[rows, at:at + k] = post.apply(entry[1], x)
            valid[rows, at:at + k] = 1
            truncated[rows] |= trunc
        at += k
    return raw, done, valid, truncated, [content_hash(r) for r in keys]


def _write_part(out: Path, index_out: Path, enc: TextEncoder, path: Path, start: int,
                stop: int, post: Postprocess, meters: dict[str, CosineMeter]) -> None:
    """Write rows ``start:stop`` as the MDS dataset ``out`` (key, emb [E, d] fp16, valid [E])
    and their index columns (``INDEX``) as the table ``index_out``, a chunk at a time; add
    their raw and post-processed vectors to ``meters`` ``before`` and ``after``."""
    names = meters["before"].names
    dim = meters["before"].sum.shape[-1]
    schema = pl.DataFrame(schema=INDEX).to_arrow().schema

    def rows(index: pq.ParquetWriter) -> Iterator[dict]:
        for frame, units in _unit_chunks(path, enc.cfg, start, stop):
            raw, done, valid, truncated, hashes = _assemble(enc, units, post, len(names), dim)
            meters["before"].add(raw, valid)
            meters["after"].add(done, valid)
            index.write_table(pl.DataFrame({"key": frame["key"], "split": frame["split"],
                                            "truncated": truncated, "content_hash": hashes,
                                            "valid": valid.tolist()}, schema=INDEX).to_arrow())
            for key, emb, v in zip(frame["key"], done.astype(np.float16), valid):
                yield {"key": key, "emb": emb, "valid": v}

    with pq.ParquetWriter(index_out, schema) as index:
        write_shards(out, COLUMNS, rows(index))


def _join_index(parts: list[Path], target: Path) -> dict[str, float]:
    """The index parts as one table at ``target`` (streamed; the same bytes for any number of
    parts) and its figures: truncated rows and the valid embeddings per row."""
    write_parquet(target, pl.scan_parquet(parts))
    valid = pl.col("valid").list.sum()      # an Int64 per row
    return pl.scan_parquet(target).select(truncated=pl.col("truncated").sum(),
                                          valid_min=valid.min(), valid_mean=valid.mean()
                                          ).collect().row(0, named=True)


def embed(cfg: Profile) -> StageOutput:
    """Curated captions -> ``embed/shards`` (key, emb [E, d] fp16, valid [E]),
    ``embed/index.parquet``, ``embed/meta.json`` and ``embed/postprocess.npz``."""
    paths = Paths.of(cfg)
    ecfg = cfg.embed
    names = embedding_names(ecfg)
    enc = TextEncoder(ecfg, paths.embed_cache, paths.embed_postprocess)
    distributed.join()
    rank, world = distributed.world()
    survey = _survey(paths.captions, enc, rank, world)
    enc.ensure((u for _, units in _unit_chunks(paths.captions, ecfg) for u in _texts(units)),
               rank, world, total=survey.to_compute)
    if world > 1:
        distributed.barrier()
        enc.cache.refresh()      # the units the other ranks computed
    dim = enc.cache.get([survey.first])[0][0].shape[-1] if survey.first else 0
    start, stop = survey.rows * rank // world, survey.rows * (rank + 1) // world
    post = fit_postprocess(enc, paths.captions, start, stop, dim, survey.used)
    meters = {"before": CosineMeter(names, dim), "after": CosineMeter(names, dim)}
    with distributed.shared_atomic_dir(paths.embed_shards) as tmp:
        _write_part(tmp / f"part-{rank:05d}", tmp / f"index-{rank:05d}.parquet", enc,
                    paths.captions, start, stop, post, meters)
        distributed.barrier()           # every part written
        if rank == 0:
            join_parts(tmp, [f"part-{r:05d}" for r in range(world)])
            index_parts = [tmp / f"index-{r:05d}.parquet" for r in range(world)]
            figures = _join_index(index_parts, paths.embed_index)
            for part in index_parts:
                part.unlink()
    arrays = {"computed": enc.computed, "forward_passes": enc.forward_passes}
    for when, meter in meters.items():
        arrays.update({f"{when}/sum": meter.sum, f"{when}/n": meter.n})
    total = distributed.all_sum(arrays)       # every rank's work and vectors
    for when, meter in meters.items():
        meter.sum, meter.n = total[f"{when}/sum"], total[f"{when}/n"].astype(np.int64)
    summary = {"rows": survey.rows, "texts": survey.texts, "unique_texts": survey.unique_texts,
               "computed": int(total["computed"]), "forward_passes": int(total["forward_passes"])}
    if rank != 0:
        return StageOutput(artifacts={}, summary=summary)

    post.save(paths.embed_postprocess)
    aniso = {when: meter.result() for when, meter in meters.items()}
    for when in ("before", "after"):
        vals = [v for v in aniso[when].values() if v is not None]
        aniso[f"mean_{when}"] = round(float(np.mean(vals)), 4) if vals else None
    truncated = int(figures["truncated"])
    meta = {"model": ecfg.llm, "identity": llm_identity(ecfg), "fingerprint": enc.fingerprint,
            "layer": ecfg.layer, "dim": int(dim), "dtype": str(device_and_dtype(ecfg)[1]),
            "names": names, "plan": [list(p) for p in ecfg.plan], "positions": ecfg.positions,
            "prompt_sets": {p[1]: ecfg.prompt_sets[p[1]].model_dump() for p in ecfg.plan},
            "max_tokens": ecfg.max_tokens, "postprocess": ecfg.postprocess,
            "mean_cosine": aniso, "rows": survey.rows, "truncated": truncated,
            "valid_per_name": dict(zip(names, meters["before"].n.tolist()))}
    write_json(paths.embed_meta, meta)
    summary["truncated"] = truncated
    metrics = [(ecfg.llm, "embed", f"mean_cosine_{w}", float(aniso[f"mean_{w}"]))
               for w in ("before", "after") if aniso.get(f"mean_{w}") is not None]
    if survey.rows:   # valid embeddings per stored row, of len(names) (a sample lacking a recaption has fewer)
        valid = {"valid_min": float(figures["valid_min"]),
                 "valid_mean": round(float(figures["valid_mean"]), 4)}
        summary.update(valid)
        metrics += [(ecfg.llm, "embed", name, value) for name, value in valid.items()]
    return StageOutput(
        artifacts={"embed_shards": paths.embed_shards, "embed_index": paths.embed_index,
                   "embed_meta": paths.embed_meta, "embed_postprocess": paths.embed_postprocess},
        rows={"embed_shards": survey.rows, "embed_index": survey.rows},
        summary=summary, metrics=metrics)
