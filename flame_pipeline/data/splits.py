"""Splits: deterministic assignment from stable ids (no RNG state, no dependence on row order),
split units that keep related rows together, and the held-out check.

A source that dictates its splits uses ``hash_split`` on an id of its own. Curation assigns
the other rows by *split unit* (``split_units``): rows that share an image (sha256), a caption
(``caption_key``) or a ``group`` are linked, and a connected component of those links is one
unit, named by its smallest key. ``assign_splits`` sends a whole unit to one split.
``held_out_overlap`` counts the test and validation rows that share a caption or an image with
a training row.
"""
from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

HELD_OUT = ("test", "val")
SPLITS = ("train",) + HELD_OUT
ORIGINS = ("curate", "source")   # who set a row's split: curation, or the row's source


def hash_split(stable_id: str, test_fraction: float) -> str | None:
    """"test" for about ``test_fraction`` of ids, else "train"; None when the fraction is 0
    (the source does not dictate a split and curation assigns one)."""
    if test_fraction <= 0.0:
        return None
    u = int.from_bytes(hashlib.sha256(stable_id.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "test" if u < test_fraction else "train"


def caption_key(caption: pl.Expr) -> pl.Expr:
    """A caption as split units and the held-out check compare captions: lowercase letters and
    digits, one space between words ("A red cube!" and "a red cube." are one caption); null
    when nothing is left."""
    key = caption.str.to_lowercase().str.replace_all(r"[^\p{L}\p{N}]+", " ").str.strip_chars(" ")
    return pl.when(key.str.len_chars() > 0).then(key)


def split_units(frame: pl.DataFrame) -> pl.Series:
    """Each row's split unit, named by the smallest ``key`` in it: the connected component of
    the row in the graph that links rows sharing a ``sha256``, a ``caption_key`` or a ``group``.

    The graph is bipartite (rows, and one node per distinct value of the three columns), so
    each row has at most three edges; SciPy labels its components in linear time."""
    n = frame.height
    values = frame.select("sha256", caption_key(pl.col("caption")), "group")
    rows, nodes, offset = [], [], n
    for column in values.columns:
        ids = values[column].rank("dense")            # 1..distinct values, null stays null
        present = ids.is_not_null().to_numpy()
        rows.append(np.flatnonzero(present))
        nodes.append(offset + ids.to_numpy()[present].astype(np.int64) - 1)
        offset += int(ids.max() or 0)
    rows, nodes = np.concatenate(rows), np.concatenate(nodes)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, nodes)), shape=(offset, offset))
    _, component = connected_components(graph, directed=False)
    return (frame.select("key", component=pl.Series(component[:n]))
                 .select(unit=pl.col("key").min().over("component"))["unit"])


def assign_splits(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, test_fraction: float,
                  val_fraction: float) -> pl.DataFrame:
    """``frame`` with every ``split`` filled and ``assigned`` (curation chose the split).

    A row whose source set its split keeps it. The other rows of a unit follow the split the
    unit's source-split rows agree on, or go to train when those disagree (so no row of theirs
    is held out beside a training row); a unit without such rows is drawn from the first 8
    bytes of sha256(unit name), as an integer over 2**64: test below ``test_fraction``, val
    below ``test_fraction + val_fraction``, else train (``hash_split``'s rule for test)."""
    frame = frame.with_columns(assigned=pl.col("split").is_null())
    if frame.is_empty():
        return frame
    con.register("rows", frame.select("_row", "split", unit=split_units(frame)))
    drawn = con.sql(f"""
        WITH units AS (
            SELECT unit,
                   CASE count(DISTINCT split) WHEN 0 THEN NULL WHEN 1 THEN min(split) ELSE 'train' END
                       AS given,
                   ('0x' || left(sha256(unit), 16))::UBIGINT / 18446744073709551616.0 AS u
            FROM rows GROUP BY unit)
        SELECT r._row, coalesce(r.split, g.given, CASE
            WHEN g.u < {float(test_fraction)!r} THEN 'test'
            WHEN g.u < {float(test_fraction + val_fraction)!r} THEN 'val' ELSE 'train' END) AS split
        FROM rows r JOIN units g USING (unit)""").pl()
    con.unregister("rows")
    return frame.drop("split").join(drawn, on="_row", how="left")


def held_out_overlap(rows: pl.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """``{origin: {split: {"rows", "caption_in_train", "image_in_train"}}}`` for the held-out
    splits (test, val) of ``rows`` (``split``, ``caption``, ``sha256``, ``assigned``): how many
    rows share a caption (``caption_key``) or an image with some train row, counted apart for
    the rows whose split curation chose (origin "curate") and those whose source set it."""
    rows = rows.with_columns(text=caption_key(pl.col("caption")))
    train = rows.filter(pl.col("split") == "train")
    flags = rows.select(
        "split", origin=pl.when("assigned").then(pl.lit(ORIGINS[0])).otherwise(pl.lit(ORIGINS[1])),
        caption_in_train=pl.col("text").is_in(train["text"].drop_nulls().implode()).fill_null(False),
        image_in_train=pl.col("sha256").is_in(train["sha256"].implode()))
    out: dict[str, dict[str, dict[str, int]]] = {}
    for origin in ORIGINS:
        out[origin] = {}
        for split in HELD_OUT:
            part = flags.filter((pl.col("origin") == origin) & (pl.col("split") == split))
            out[origin][split] = {"rows": part.height,
                                  "caption_in_train": int(part["caption_in_train"].sum()),
                                  "image_in_train": int(part["image_in_train"].sum())}
    return out
