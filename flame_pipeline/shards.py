"""Writing and reading MDS shards (mosaicml-streaming) for the stages' sample files.

Several MDS datasets written side by side as ``<dir>/<part>/`` (download chunks, embed ranks)
are joined by one ``<dir>/index.json`` (``join_parts``) and then read as one dataset.

Reading here goes through streaming's own shard readers: random access by global row index,
with no shared memory and no background threads. Only training streams, through a
``StreamingDataset`` (``train/data.py``): its shuffle, resume state and worker partition.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import polars as pl

from flame_pipeline.files import write_json
from flame_pipeline.streaming_compat import MDSWriter, merge_index, reader_from_json


def write_shards(out_dir: str | Path, columns: dict[str, str], rows: Iterable[dict],
                 size_limit: int = 1 << 26) -> int:
    """Write ``rows`` as an MDS dataset at ``out_dir`` (uncompressed, deterministic bytes)."""
    n = 0
    with MDSWriter(out=str(out_dir), columns=columns, size_limit=size_limit) as writer:
        for row in rows:
            writer.write(row)
            n += 1
    return n


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """merge_index logs a warning per call about its temporary folder; not news to our users."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(before)


def join_parts(out_dir: str | Path, parts: list[str]) -> None:
    """Write ``out_dir/index.json`` over the MDS datasets ``out_dir/<part>``, in the order of
    ``parts``: streaming's ``merge_index``, which names each shard ``<part>/<shard file>``. The
    whole then reads as one dataset, its rows part after part."""
    out_dir = Path(out_dir)
    if not parts:
        write_json(out_dir / "index.json", {"shards": [], "version": 2})
        return
    with _quiet_logging():
        merge_index([str(out_dir / part / "index.json") for part in parts], str(out_dir))


class LocalShards:
    """A local MDS directory (``index.json`` + shard files) read row by row."""

    def __init__(self, local_dir: str | Path):
        local_dir = Path(local_dir)
        index = json.loads((local_dir / "index.json").read_text())
        self.readers = [reader_from_json(str(local_dir), None, shard) for shard in index["shards"]]
        self.offsets = np.cumsum([0] + [r.samples for r in self.readers])
        self.num_samples = int(self.offsets[-1])

    def __len__(self) -> int:
        return self.num_samples

    def get_item(self, i: int) -> dict:
        if not 0 <= i < self.num_samples:
            raise IndexError(f"row {i} of {self.num_samples}")
        s = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.readers[s].get_item(i - int(self.offsets[s]))


def shard_problems(shards_dir: str | Path) -> list[str]:
    """What is wrong with the shard files ``index.json`` names: each one missing, or of another
    size than recorded (checked from the file system alone, nothing is read)."""
    shards_dir = Path(shards_dir)
    problems = []
    for shard in json.loads((shards_dir / "index.json").read_text())["shards"]:
        raw, n = shard["raw_data"], shard["samples"]
        path = shards_dir / raw["basename"]
        zipped = shard.get("zip_data") and (shards_dir / shard["zip_data"]["basename"]).is_file()
        if not path.is_file() and not zipped:
            problems.append(f"{raw['basename']} is missing ({n} rows)")
        elif path.is_file() and path.stat().st_size != raw["bytes"]:
            problems.append(f"{raw['basename']} has {path.stat().st_size} bytes, index.json says "
                            f"{raw['bytes']} ({n} rows)")
    return problems


def raw_rows(manifest: pl.DataFrame) -> pl.DataFrame:
    """``key``, ``raw``: each kept manifest row's row in the raw shards (the download stage
    writes the kept rows there in manifest order)."""
    return manifest.filter(pl.col("status") == "kept").select("key").with_row_index("raw")


def sample_at(shards: LocalShards, row: int | None, key: str) -> dict | None:
    """Row ``row`` of ``shards`` when it holds ``key`` (the raw shards' row of a kept manifest
    row, ``raw_rows``), else None: the shards and the manifest are out of step."""
    if row is None or not 0 <= row < len(shards):
        return None
    sample = shards.get_item(row)
    return sample if sample["key"] == key else None


def open_shards(local_dir: str | Path) -> LocalShards:
    return LocalShards(local_dir)


def iter_shards(local_dir: str | Path) -> Iterator[dict]:
    ds = LocalShards(local_dir)
    for i in range(ds.num_samples):
        yield ds.get_item(i)
