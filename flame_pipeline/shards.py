"""Writing and reading MDS shards (mosaicml-streaming) for the stages' sample files."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from flame_pipeline.streaming_compat import MDSWriter, StreamingDataset


def write_shards(out_dir: str | Path, columns: dict[str, str], rows: Iterable[dict],
                 size_limit: int = 1 << 26) -> int:
    """Write ``rows`` as an MDS dataset at ``out_dir`` (uncompressed, deterministic bytes)."""
    n = 0
    with MDSWriter(out=str(out_dir), columns=columns, size_limit=size_limit) as writer:
        for row in rows:
            writer.write(row)
            n += 1
    return n


def open_shards(local_dir: str | Path, shuffle: bool = False, seed: int = 0,
                batch_size: int | None = None) -> StreamingDataset:
    """A StreamingDataset over a local MDS directory (no remote; nothing is copied)."""
    return StreamingDataset(local=str(local_dir), shuffle=shuffle, shuffle_seed=seed,
                            batch_size=batch_size)


def iter_shards(local_dir: str | Path) -> Iterator[dict]:
    ds = open_shards(local_dir)
    for i in range(ds.num_samples):
        yield ds.get_item(i)
