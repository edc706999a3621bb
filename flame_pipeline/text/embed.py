"""The embed stage: frozen-LLM facet embeddings for every curated caption of the stored splits.

Every (prompt set, normalised caption) is one unit of work computed through ``TextEncoder``
(``encoder.py``) into the content-addressed cache (``cache.py``), so an unchanged caption is
never computed again and a stage killed half-way resumes from its last finished batch. The
stage then fits ``embed.postprocess``'s statistics on the train split (``postprocess.py``)
and writes the post-processed vectors as float16 shards.

Under torchrun each rank computes its share of the missing units; rank 0 writes the outputs.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

from flame_pipeline import distributed
from flame_pipeline.config import EmbedConfig, Profile
from flame_pipeline.files import atomic_path, write_json, write_parquet
from flame_pipeline.llm_files import llm_identity
from flame_pipeline.paths import Paths
from flame_pipeline.shards import write_shards
from flame_pipeline.stage import StageOutput
from flame_pipeline.text.cache import content_hash
from flame_pipeline.text.cosine import CosineMeter
from flame_pipeline.text.encoder import TextEncoder
from flame_pipeline.text.llm import device_and_dtype
from flame_pipeline.text.postprocess import Postprocess, whitening_matrix
from flame_pipeline.text.prompts import EmptyCaptionError, prepare_caption

COLUMNS = {"key": "str", "emb": "ndarray:float16", "valid": "ndarray:uint8"}
ROW_CHUNK = 4096   # rows assembled at a time when writing the outputs


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


def _read_captions(path: Path, embed_cfg: EmbedConfig) -> pl.DataFrame:
    """The curated table's key, split and the caption fields ``embed.plan`` reads."""
    if not path.is_file():
        raise FileNotFoundError(f"curated captions not found: {path} (run the curate stage)")
    table = pl.read_parquet(path)
    fields = sorted({f for entry in embed_cfg.plan for f in plan_fields(entry)})
    missing = [c for c in ("key", "split", *fields) if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return table.select("key", "split", *fields)


def _row_units(table: pl.DataFrame, embed_cfg: EmbedConfig) -> list[list[tuple[str, str] | None]]:
    """Per row, per plan entry: (prompt set, normalised text) of the entry's field, or of its
    fallback where the field is null; None where both are null (a recaption the sample lacks;
    the caption is never null). Every empty text is reported at once, naming its key, before
    anything is computed."""
    out, bad = [], []
    for row in table.iter_rows(named=True):
        units = []
        for entry in embed_cfg.plan:
            field = next((f for f in plan_fields(entry) if row[f] is not None), None)
            if field is None and "caption" not in plan_fields(entry):
                units.append(None)
                continue
            try:
                units.append((entry[1], prepare_caption(row[field or "caption"] or "")))
            except EmptyCaptionError:
                bad.append(f"{row['key']} ({field or 'caption'})")
        out.append(units)
    if bad:
        raise EmptyCaptionError(f"{len(bad)} empty caption(s) in the curated table, e.g. "
                                f"{bad[:10]}; nothing was embedded")
    return out


def fit_postprocess(enc: TextEncoder, table: pl.DataFrame, rows: list) -> Postprocess:
    """``embed.postprocess``'s statistics from the train split, in one pass over its vectors:
    per (prompt set, facet) means, and for ``whiten`` each prompt set's whitening matrix of the
    centred vectors (all facets pooled: sum of x x^T minus n * sum_k mean_k mean_k^T)."""
    kind = enc.cfg.postprocess
    if kind == "none":
        return Postprocess("none", enc.fingerprint, {})
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    train = [r for r, split in zip(rows, table["split"].to_list()) if split == "train"]
    for start in range(0, len(train), ROW_CHUNK):
        units = [u for r in train[start:start + ROW_CHUNK] for u in r if u is not None]
        emb, _ = enc.raw(units)
        for (ps, _), e in zip(units, emb):
            e = e.astype(np.float64)
            sums[ps] = sums.get(ps, 0) + e
            counts[ps] += 1
            if kind == "whiten":
                squares[ps] = squares.get(ps, 0) + e.T @ e
    used = {u[0] for r in rows for u in r if u is not None}
    missing = sorted(used - set(sums))
    if missing:
        raise ValueError(f"embed.postprocess={kind}: prompt set(s) {missing} embed test texts "
                         "but no train-split text; cannot compute their statistics")
    means = {ps: s / counts[ps] for ps, s in sums.items()}
    stored = {ps: m.astype(np.float32) for ps, m in means.items()}
    if kind == "center":
        return Postprocess("center", enc.fingerprint, stored)
    floor = enc.cfg.whiten_floor
    whiteners = {ps: whitening_matrix((squares[ps] - counts[ps] * m.T @ m) / (counts[ps] * len(m)),
                                      floor) for ps, m in means.items()}
    return Postprocess("whiten", enc.fingerprint, stored, floor, whiteners)


def _assemble(enc: TextEncoder, table: pl.DataFrame, rows: list, post: Postprocess,
              names: list[str], dim: int):
    """Yield (shard row, truncated, raw [E, d], processed [E, d]) per caption row, in order."""
    k_of = [len(enc.cfg.prompt_sets[entry[1]].facets) for entry in enc.cfg.plan]
    keys = table["key"].to_list()
    for start in range(0, len(rows), ROW_CHUNK):
        chunk = rows[start:start + ROW_CHUNK]
        units = [u for r in chunk for u in r if u is not None]
        emb, trunc = enc.raw(units)
        it = iter(zip(emb, trunc))
        for j, r in enumerate(chunk):
            raw = np.zeros((len(names), dim), np.float32)
            done = np.zeros((len(names), dim), np.float32)
            valid = np.zeros(len(names), np.uint8)
            truncated, at = False, 0
            for u, k in zip(r, k_of):
                if u is not None:
                    e, t = next(it)
                    raw[at:at + k] = e
                    done[at:at + k] = post.apply(u[0], e[None])[0]
                    valid[at:at + k] = 1
                    truncated |= t
                at += k
            yield ({"key": keys[start + j], "emb": done.astype(np.float16), "valid": valid},
                   truncated, raw, done)


def embed(cfg: Profile) -> StageOutput:
    """Curated captions -> ``embed/shards`` (key, emb [E, d] fp16, valid [E]),
    ``embed/index.parquet``, ``embed/meta.json`` and ``embed/postprocess.npz``."""
    paths = Paths.of(cfg)
    ecfg = cfg.embed
    names = embedding_names(ecfg)
    # training reads only the train split; evaluation embeds its own test queries through
    # TextEncoder (same cache), so `embed.splits: [train]` skips what it would not read
    table = _read_captions(paths.captions, ecfg).filter(pl.col("split").is_in(ecfg.splits))
    rows = _row_units(table, ecfg)
    enc = TextEncoder(ecfg, paths.embed_cache, paths.embed_postprocess)
    distributed.join()   # under torchrun each rank computes its share of the missing units
    rank, world = distributed.world()
    all_units = [u for r in rows for u in r if u is not None]
    enc.ensure(all_units, rank, world)
    summary = {"rows": table.height, "texts": len(all_units),
               "unique_texts": len({enc.key(*u) for u in all_units}),
               "computed": enc.computed, "forward_passes": enc.forward_passes}
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        enc.cache.refresh()
        if rank != 0:
            return StageOutput(artifacts={}, summary=summary)

    post = fit_postprocess(enc, table, rows)
    dim = enc.cache.get([enc.key(*all_units[0])])[0][0].shape[-1] if all_units else 0
    before, after = CosineMeter(names, dim), CosineMeter(names, dim)
    truncated: list[bool] = []
    n_valid: list[int] = []

    def shard_rows():
        for row, t, raw, done in _assemble(enc, table, rows, post, names, dim):
            truncated.append(t)
            n_valid.append(int(row["valid"].sum()))
            before.add(raw, row["valid"])
            after.add(done, row["valid"])
            yield row

    with atomic_path(paths.embed_shards) as tmp:
        write_shards(tmp, COLUMNS, shard_rows())
    index = pl.DataFrame({
        "key": table["key"], "split": table["split"],
        "truncated": pl.Series(truncated, dtype=pl.Boolean),
        "content_hash": [content_hash([enc.key(*u) if u else None for u in r]) for r in rows]})
    write_parquet(paths.embed_index, index)
    post.save(paths.embed_postprocess)
    aniso = {"before": before.result(), "after": after.result()}
    for when in ("before", "after"):
        vals = [v for v in aniso[when].values() if v is not None]
        aniso[f"mean_{when}"] = round(float(np.mean(vals)), 4) if vals else None
    meta = {"model": ecfg.llm, "identity": llm_identity(ecfg), "fingerprint": enc.fingerprint,
            "layer": ecfg.layer, "dim": int(dim), "dtype": str(device_and_dtype(ecfg)[1]),
            "names": names, "plan": [list(p) for p in ecfg.plan], "positions": ecfg.positions,
            "prompt_sets": {p[1]: ecfg.prompt_sets[p[1]].model_dump() for p in ecfg.plan},
            "max_tokens": ecfg.max_tokens, "postprocess": ecfg.postprocess,
            "mean_cosine": aniso, "rows": table.height, "truncated": int(sum(truncated)),
            "valid_per_name": dict(zip(names, before.n.tolist()))}
    write_json(paths.embed_meta, meta)
    summary["truncated"] = int(sum(truncated))
    metrics = [(ecfg.llm, "embed", f"mean_cosine_{w}", float(aniso[f"mean_{w}"]))
               for w in ("before", "after") if aniso.get(f"mean_{w}") is not None]
    if n_valid:   # valid embeddings per stored row, of len(names) (a sample lacking a recaption has fewer)
        valid = {"valid_min": float(min(n_valid)), "valid_mean": round(float(np.mean(n_valid)), 4)}
        summary.update(valid)
        metrics += [(ecfg.llm, "embed", name, value) for name, value in valid.items()]
    return StageOutput(
        artifacts={"embed_shards": paths.embed_shards, "embed_index": paths.embed_index,
                   "embed_meta": paths.embed_meta, "embed_postprocess": paths.embed_postprocess},
        rows={"embed_shards": table.height, "embed_index": table.height},
        summary=summary, metrics=metrics)
