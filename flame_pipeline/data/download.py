"""The download stage: every configured source's rows, validated, into MDS shards + a manifest.

Each source is read in chunks of ``download.chunk_size`` input rows. A finished chunk is one
directory under ``raw/work/sources/<source fingerprint>/`` (its MDS shards of kept images and
its manifest rows), renamed into place atomically; a rerun skips finished chunks and asks the
source to start after them. At the end the chunks are merged into ``raw/shards/`` (hard links
plus the merged MDS ``index.json``) and ``raw/manifest.parquet``, both atomically. The output
is a pure function of the params and the inputs, so a run killed half-way and rerun ends with
byte-identical files.

Every input row lands in the manifest as ``kept`` or ``rejected`` with a reason. Its
``n_bytes`` is the size of the image bytes as the source gave them (null when it had none);
``width``, ``height`` and ``sha256`` describe the stored PNG. One download runs per data dir
at a time (a lock file in ``raw/work/``); the run that takes the lock marks earlier download
runs still 'running' in the results store as 'abandoned' (killed).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl
from tqdm import tqdm

from flame_pipeline.config import Profile, Source
from flame_pipeline.data.images import PreparedImage, prepare_image
from flame_pipeline.data.sample import RawSample
from flame_pipeline.data.sources import source_kind
from flame_pipeline.files import atomic_path, write_json, write_parquet
from flame_pipeline.paths import Paths
from flame_pipeline.progress import progress
from flame_pipeline.shards import join_parts, write_shards
from flame_pipeline.stage import StageOutput, stage_lock

# Bump when validation or encoding changes what a chunk holds: finished chunks are then redone.
WORK_FORMAT = 8

SHARD_COLUMNS = {"key": "str", "image": "bytes"}
MANIFEST_SCHEMA = {
    "key": pl.String, "source": pl.String, "source_ref": pl.String, "split": pl.String,
    "caption": pl.String, "short_caption": pl.String, "long_caption": pl.String,
    "language": pl.String, "labels": pl.String,
    "group": pl.String, "status": pl.String, "reason": pl.String, "n_bytes": pl.Int64,
    "width": pl.Int32, "height": pl.Int32, "sha256": pl.String,
}


class DuplicateKeyError(ValueError):
    """Two input rows share a key (within or across sources)."""


@dataclass(frozen=True)
class Limits:
    max_side: int
    max_pixels: int
    min_side: int
    image_format: str
    image_quality: int | str


# ---------------------------------------------------------------- sources
def open_source(cfg: Profile, src: Source, start: int = 0) -> Iterator[RawSample]:
    """The source's RawSamples from row ``start`` on (rows before it are not produced), read by
    its kind's reader (``data/sources.py``). A generator, so closing it closes the source (and
    stops a URL fetcher's threads)."""
    yield from source_kind(src.kind).read(cfg, src, start)


def source_limits(cfg: Profile, src: Source) -> Limits:
    d = cfg.download
    side = min(d.max_side, getattr(src, "image_size", d.max_side))
    return Limits(max_side=side, max_pixels=d.max_pixels, min_side=d.min_side,
                  image_format=d.image_format, image_quality=d.image_quality)


def source_fingerprint(cfg: Profile, src: Source) -> str:
    """What a source's finished chunks depend on; a change starts that source afresh."""
    blob = {"format": WORK_FORMAT, "source": src.model_dump(mode="json"), "seed": cfg.seed,
            "limits": source_limits(cfg, src).__dict__, "chunk_size": cfg.download.chunk_size,
            "inputs": source_kind(src.kind).state(src)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- validation
def check_text(value: str | bytes | None) -> tuple[str | None, str | None]:
    """(text, None), or (None, "empty") / (printable text, "not utf-8")."""
    if value is None:
        return None, "empty"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("utf-8", "backslashreplace"), "not utf-8"
    if not value.strip():
        return None, "empty"
    return value, None


@functools.lru_cache(maxsize=2)  # consecutive rows share; large inputs must not pile up
def _prepare(data: bytes | None, limits: Limits) -> PreparedImage:
    """Consecutive rows sharing an image (one emoji or scene in several languages) decode it once."""
    return prepare_image(data, max_side=limits.max_side, max_pixels=limits.max_pixels,
                         min_side=limits.min_side, image_format=limits.image_format,
                         quality=limits.image_quality)


def validate(sample: RawSample, limits: Limits) -> tuple[dict, bytes | None]:
    """The sample's manifest row, and its stored image bytes when kept."""
    caption, caption_bad = check_text(sample.caption)
    recaptions, recaption_bad = {}, None
    for field in ("short_caption", "long_caption"):   # optional: empty is none
        text, bad = check_text(getattr(sample, field))
        recaptions[field] = text if bad != "empty" else None
        if bad not in (None, "empty"):
            recaption_bad = recaption_bad or f"{field.replace('_', ' ')} {bad}"
    row = {
        "key": sample.key, "source": sample.source, "source_ref": sample.source_ref,
        "split": sample.split, "caption": caption, **recaptions,
        "language": sample.language, "labels": json.dumps(sample.labels, sort_keys=True, ensure_ascii=False),
        "group": sample.group, "status": "rejected", "reason": None,
        "n_bytes": None if sample.image is None else len(sample.image),
        "width": None, "height": None, "sha256": None,
    }
    if sample.reject_reason:
        row["reason"] = sample.reject_reason
    elif caption_bad:
        row["reason"] = f"{caption_bad} caption" if caption_bad == "empty" else f"caption {caption_bad}"
    elif recaption_bad:
        row["reason"] = recaption_bad
    else:
        img = _prepare(sample.image, limits)
        if img.reason:
            row["reason"] = img.reason
        else:
            row.update(status="kept", width=img.width, height=img.height,
                       sha256=hashlib.sha256(img.data).hexdigest())
            return row, img.data
    return row, None


# ---------------------------------------------------------------- chunks
class _Keys:
    """Every key seen so far in this run, with its source: duplicates are an error."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    def add(self, key: str, where: str) -> None:
        if key in self.owner:
            raise DuplicateKeyError(f"duplicate sample key {key!r}: in {self.owner[key]} and {where}")
        self.owner[key] = where


def _write_chunk(chunk_dir: Path, samples: Iterable[RawSample], limits: Limits, keys: _Keys,
                 label: str, bar: tqdm) -> int:
    """Validate ``samples`` into ``chunk_dir`` (shards/ + manifest.parquet), atomically."""
    rows: list[dict] = []

    def kept() -> Iterator[dict]:
        for sample in samples:
            keys.add(sample.key, label)
            row, image = validate(sample, limits)
            rows.append(row)
            bar.update(1)
            if image is not None:
                yield {"key": sample.key, "image": image}

    with atomic_path(chunk_dir) as tmp:
        tmp.mkdir()
        write_shards(tmp / "shards", SHARD_COLUMNS, kept())
        write_parquet(tmp / "manifest.parquet", pl.DataFrame(rows, schema=MANIFEST_SCHEMA, orient="row"))
    return len(rows)


def _chunk_name(i: int) -> str:
    return f"chunk-{i:06d}"


def _download_source(cfg: Profile, src: Source, index: int, work: Path, keys: _Keys) -> list[Path]:
    """Finish every chunk of one source; return its chunk directories in order."""
    label = f"source #{index} ({src.kind})"
    fp_dir = work / "sources" / f"{src.kind}-{source_fingerprint(cfg, src)}"
    fp_dir.mkdir(parents=True, exist_ok=True)
    complete = fp_dir / "complete.json"
    size = cfg.download.chunk_size
    done = 0
    while (fp_dir / _chunk_name(done)).is_dir():
        done += 1
    for i in range(done):
        for key in pl.read_parquet(fp_dir / _chunk_name(i) / "manifest.parquet", columns=["key"])["key"]:
            keys.add(key, label)
    if complete.exists() and json.loads(complete.read_text())["chunks"] == done:
        return [fp_dir / _chunk_name(i) for i in range(done)]
    limits = source_limits(cfg, src)
    samples = open_source(cfg, src, start=done * size)
    n_rows = done * size
    with contextlib.closing(samples), progress(None, f"download {src.kind}", "row", initial=n_rows) as bar:
        while (first := next(samples, None)) is not None:
            n_rows += _write_chunk(fp_dir / _chunk_name(done),
                                   itertools.chain([first], itertools.islice(samples, size - 1)),
                                   limits, keys, label, bar)
            done += 1
    write_json(complete, {"rows": n_rows, "chunks": done})
    return [fp_dir / _chunk_name(i) for i in range(done)]


# ---------------------------------------------------------------- merge
def _link_tree(src: Path, dst: Path) -> None:
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:             # another file system: copy
            shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link)


def _merge(chunks: list[Path], paths: Paths, input_rows: int) -> pl.DataFrame:
    """Publish the chunks as ``raw/shards/`` and ``raw/manifest.parquet`` (rows checked first)."""
    manifest = pl.concat([pl.read_parquet(c / "manifest.parquet") for c in chunks]) if chunks \
        else pl.DataFrame(schema=MANIFEST_SCHEMA)
    if manifest.height != input_rows:
        raise RuntimeError(f"the chunks hold {manifest.height} manifest rows for {input_rows} input rows")
    with atomic_path(paths.raw_shards) as tmp:
        tmp.mkdir()
        for i, chunk in enumerate(chunks):
            _link_tree(chunk / "shards", tmp / f"{i:06d}")
        join_parts(tmp, [f"{i:06d}" for i in range(len(chunks))])
    write_parquet(paths.manifest, manifest)
    return manifest


def missing_recaptions(manifest: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per source, how many kept rows have no short and no long caption (``no_short_caption``,
    ``no_long_caption``): a source without recaptions says so, never silently."""
    kept = manifest.filter(pl.col("status") == "kept")
    table = kept.group_by("source").agg(no_short_caption=pl.col("short_caption").null_count(),
                                         no_long_caption=pl.col("long_caption").null_count())
    return {row.pop("source"): row for row in table.sort("source").to_dicts()}


def download(cfg: Profile) -> StageOutput:
    """Run every configured source; write ``raw/shards/`` and ``raw/manifest.parquet``."""
    paths = Paths.of(cfg)
    with stage_lock(paths.download_lock, f"another download is running on {paths.raw}"):
        keys = _Keys()
        chunks: list[Path] = []
        for i, src in enumerate(cfg.download.sources):
            chunks += _download_source(cfg, src, i, paths.download_work, keys)
        manifest = _merge(chunks, paths, input_rows=len(keys.owner))
    kept = int((manifest["status"] == "kept").sum())
    rejected = manifest.height - kept
    reasons = collections.Counter(manifest.filter(pl.col("status") == "rejected")["reason"].to_list())
    per_source: dict[str, dict[str, int]] = {}
    for source, status, n in manifest.group_by("source", "status").len().sort("source", "status").iter_rows():
        per_source.setdefault(source, {})[status] = n
    for source, counts in missing_recaptions(manifest).items():
        per_source[source].update(counts)
    return StageOutput(
        artifacts={"shards": paths.raw_shards, "manifest": paths.manifest},
        rows={"manifest": manifest.height, "shards": kept},
        summary={"rows": manifest.height, "kept": kept, "rejected": rejected,
                 "reasons": dict(sorted(reasons.items())), "per_source": per_source})
