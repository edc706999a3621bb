"""The evaluation's view of the curated data: rows with their image hash, labels and image bytes."""
from __future__ import annotations

import json
from typing import Iterable

import polars as pl

from flame_pipeline.paths import Paths
from flame_pipeline.shards import iter_shards

HARD_NEGATIVE = "hard_negative_of"   # label naming the scene a hard negative was made from


def load_rows(paths: Paths, splits: Iterable[str] = ("test",)) -> pl.DataFrame:
    """Curated rows of ``splits`` (manifest order) with ``sha256`` from the download manifest
    and ``hard_negative`` (the row is a scene's hard negative)."""
    for path in (paths.captions, paths.manifest):
        if not path.exists():
            raise FileNotFoundError(f"evaluation needs {path}; run the earlier stages first")
    rows = pl.read_parquet(paths.captions).filter(pl.col("split").is_in(list(splits)))
    sha = pl.read_parquet(paths.manifest, columns=["key", "sha256"])
    rows = rows.join(sha, on="key", how="left", maintain_order="left")
    missing = rows.filter(pl.col("sha256").is_null())
    if missing.height:
        raise ValueError(f"{missing.height} curated rows have no image hash in {paths.manifest} "
                         f"(first: {missing['key'][0]!r})")
    return rows.with_columns(hard_negative=pl.Series(
        [HARD_NEGATIVE in d for d in label_dicts(rows)], dtype=pl.Boolean))


def label_dicts(rows: pl.DataFrame) -> list[dict[str, str]]:
    """Each row's ``labels`` JSON (task -> class) as a dict; null or empty is ``{}``."""
    return [json.loads(s) if s else {} for s in rows["labels"].to_list()]


def load_images(paths: Paths, keys: Iterable[str]) -> dict[str, bytes]:
    """Image bytes of ``keys`` from the raw shards; a key the shards lack is an error."""
    wanted = set(keys)
    found = {}
    for sample in iter_shards(paths.raw_shards):
        if sample["key"] in wanted:
            found[sample["key"]] = sample["image"]
    missing = wanted - set(found)
    if missing:
        raise KeyError(f"{len(missing)} images missing from {paths.raw_shards} "
                       f"(first: {sorted(missing)[0]!r})")
    return found
