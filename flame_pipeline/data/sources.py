"""The source registry: for every ``download.sources[].kind``, the reader that yields its rows,
the user's files it reads, what of them its finished download chunks depend on, and one line
on what it is. The download stage and the Dagster sensor both read this one table.

A new kind: its settings class in ``config.py`` (added to ``Source``), a reader module in
``data/`` yielding ``RawSample`` rows from a given row on, and one entry in ``SOURCES``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from flame_pipeline.config import Profile, Source
from flame_pipeline.data.emoji_art import iter_emoji_art
from flame_pipeline.data.local import iter_folder, iter_webdataset
from flame_pipeline.data.packaged import iter_emoji, iter_fashion_mnist, iter_openclipart
from flame_pipeline.data.recaptions import with_recaptions
from flame_pipeline.data.sample import RawSample
from flame_pipeline.data.scenes import generate_scenes
from flame_pipeline.data.urls import iter_url_list
from flame_pipeline.files import sha256_file
from flame_pipeline.paths import Paths


def _none(src: Source) -> list:
    return []


@dataclass(frozen=True)
class SourceKind:
    description: str
    read: Callable[[Profile, Source, int], Iterator[RawSample]]  # the rows from row ``start`` on
    watch: Callable[[Source], list[Path]] = _none   # the user's files/dirs it reads (the sensor's)
    # the state of those files that a finished chunk depends on: a change starts the source afresh
    state: Callable[[Source], list] = _none


def _stat(path: Path) -> list:
    st = path.stat()
    return [path.as_posix(), st.st_size, st.st_mtime_ns]


def _table(src: Source) -> list[Path]:
    """The source's recaption table, if it names one (``data/recaptions.py``)."""
    return [Path(src.recaptions)] if src.recaptions else []


def _table_state(src: Source) -> list:
    # by content, as a URL list: an edited table starts the source afresh
    return [sha256_file(p) for p in _table(src) if p.is_file()]


def _url_list_state(src: Source) -> list:
    # by content: an edited list starts afresh, a touched one does not (bytes come from the URL cache)
    return ([sha256_file(src.path)] if Path(src.path).is_file() else []) + _table_state(src)


def _webdataset_state(src: Source) -> list:
    return [_stat(Path(p)) for p in src.paths if Path(p).is_file()] + _table_state(src)


def _folder_state(src: Source) -> list:
    root = Path(src.path)
    files = [_stat(p) for p in sorted(root.rglob("*")) if p.is_file()] if root.is_dir() else []
    return files + _table_state(src)


# Packaged data (Debian files, the generator) is taken as fixed, except whether OpenClipart's
# SVG metadata, where its captions come from, is installed. Missing paths are the reader's to report.
SOURCES: dict[str, SourceKind] = {
    "scenes": SourceKind(
        "generated shapes on a canvas, captioned by rule in several languages, with hard negatives",
        read=lambda cfg, src, start: itertools.islice(generate_scenes(src, cfg.seed), start, None)),
    "fashion_mnist": SourceKind(
        "Fashion-MNIST from its Debian package, captioned by class",
        read=lambda cfg, src, start: iter_fashion_mnist(src, start),
        watch=lambda src: [Path(src.root)]),
    "emoji": SourceKind(
        "emoji drawn with the Noto Color Emoji font, named in several languages",
        read=lambda cfg, src, start: iter_emoji(src, start)),
    "emoji_art": SourceKind(
        "emoji drawn by five designers (npm packages), named by people in 27 locales (CLDR)",
        read=lambda cfg, src, start: iter_emoji_art(src, start),
        watch=lambda src: [Path(src.root)],
        state=lambda src: sorted(p.name for p in Path(src.root).glob("*@*"))),   # package versions
    "openclipart": SourceKind(
        "OpenClipart's PNGs from its Debian package, captioned from their SVG metadata",
        read=lambda cfg, src, start: iter_openclipart(src, start),
        watch=lambda src: [Path(src.root)],
        state=lambda src: [(Path(src.root) / "svg").is_dir()]),
    "url_list": SourceKind(
        "a CSV/TSV/Parquet list of image URLs and captions, fetched once into a cache",
        read=lambda cfg, src, start: with_recaptions(
            iter_url_list(src, Paths.of(cfg).url_cache, start), src.recaptions),
        watch=lambda src: [Path(src.path), *_table(src)], state=_url_list_state),
    "webdataset": SourceKind(
        "WebDataset tar shards (image + caption members per sample)",
        read=lambda cfg, src, start: with_recaptions(iter_webdataset(src, start), src.recaptions),
        watch=lambda src: [*map(Path, src.paths), *_table(src)], state=_webdataset_state),
    "folder": SourceKind(
        "a folder of images, each with a caption file beside it",
        read=lambda cfg, src, start: with_recaptions(iter_folder(src, start), src.recaptions),
        watch=lambda src: [Path(src.path), *_table(src)], state=_folder_state),
}


def source_kind(kind: str) -> SourceKind:
    if kind not in SOURCES:
        raise ValueError(f"unknown source kind {kind!r}; kinds are {sorted(SOURCES)}")
    return SOURCES[kind]
