"""A CC3M-style URL list (TSV / CSV / Parquet of url + caption) fetched into RawSamples.

Fetching is concurrent (a thread pool over one ``httpx.Client``), bounded by a total
per-URL time limit and ``max_bytes``; 5xx answers, timeouts and connection errors are
retried with exponential back-off, 4xx answers are not. Only http and https URLs are
fetched. Bodies (and 4xx answers, which a retry would not change) are cached per URL under
the cache directory, so a second run fetches only what is still missing.

TSV/CSV files are parsed as bytes-preserving text, one physical line per row: a caption or URL
that is not UTF-8 reaches validation as bytes and is rejected for that row alone, and a line
that does not parse (an unclosed quote) is rejected as "malformed row".

``group_column`` names a column whose value becomes the row's ``group`` (rows sharing it go to
one side of the split: the same product, the same concept); an empty cell is no group.
``short_caption_column`` and ``long_caption_column`` name the columns of the row's recaptions
(an empty cell: none), ``key_column`` the column of its sample key, which a recaption table
joins on (without it, the row number as the row's key writes it: ``00000042``).
"""
from __future__ import annotations

import collections
import csv
import hashlib
import json
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import httpx
import polars as pl

from flame_pipeline.config import UrlListSource
from flame_pipeline.data.sample import RawSample
from flame_pipeline.files import atomic_path

USER_AGENT = "flame-pipeline/0.1 (image-text dataset download)"
SCHEMES = ("http", "https")

Cell = str | bytes | None


def _undecoded(text: str | None) -> Cell:
    """Undo ``surrogateescape``: the str when it was valid UTF-8, else the original bytes."""
    if text is None:
        return None
    raw = text.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _group(value) -> str | None:
    """A ``group_column`` cell as a group: text (undecodable bytes escaped), None when empty."""
    if value is None or value == "" or value == b"":
        return None
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _cells(line: str, suffix: str) -> list[str] | None:
    """One physical line's cells, or None when it does not parse (a quote it never closes, text
    after a closing quote): a quoted cell may not span lines, so a stray quote costs its line
    only, never the lines after it."""
    if suffix == ".tsv":
        reader = csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader([line], strict=True)
    try:
        return next(reader, [])
    except csv.Error:
        return None


class UrlRow(NamedTuple):
    url: Cell
    caption: Cell
    group: str | None       # the group_column's cell (None without one, or empty)
    problem: str | None     # "malformed row" for a TSV/CSV line that does not parse
    short_caption: Cell = None
    long_caption: Cell = None
    sample_key: str | None = None   # the key_column's cell (None without one, or empty)


def _optional_columns(src: UrlListSource) -> list[str | None]:
    """The optional columns a row's fields come from, in UrlRow order after ``problem``."""
    return [src.short_caption_column, src.long_caption_column, src.key_column]


def _blank(value: Cell) -> Cell:
    """An empty cell is no value."""
    return None if value in ("", b"") else value


def read_url_list(src: UrlListSource) -> list[UrlRow]:
    """One row per data row, in file order; missing cells are None; a TSV/CSV line that does
    not parse is (the line, None, None, "malformed row")."""
    path = Path(src.path)
    if not path.is_file():
        raise FileNotFoundError(f"url list {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pl.read_parquet(path)
        for col in (src.url_column, src.caption_column, src.group_column, *_optional_columns(src)):
            if col is not None and col not in frame.columns:
                raise ValueError(f"{path}: no column {col!r} (columns: {frame.columns})")

        def column(name: str | None) -> list:
            return frame[name].to_list() if name else [None] * frame.height
        short, long, key = (column(c) for c in _optional_columns(src))
        return [UrlRow(u, c, _group(g), None, _blank(s), _blank(lc), _group(k)) for u, c, g, s, lc, k in
                zip(column(src.url_column), column(src.caption_column), column(src.group_column),
                    short, long, key)]
    if suffix not in (".tsv", ".csv"):
        raise ValueError(f"{path}: url list must be .tsv, .csv or .parquet")
    # utf-8-sig: spreadsheet programs start a CSV with a byte order mark
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        lines = list(f)
    if src.header:
        if not lines:
            raise ValueError(f"{path}: empty url list (no header row)")
        names, lines = _cells(lines[0], suffix), lines[1:]
        if names is None:
            raise ValueError(f"{path}: the header line does not parse")
    cells = [_cells(line, suffix) for line in lines]
    if not src.header:
        names = [f"column_{i + 1}" for i in range(max((len(r) for r in cells if r), default=0))]
    wanted = [src.url_column, src.caption_column, src.group_column, *_optional_columns(src)]
    missing = [c for c in wanted if c is not None and c not in names]
    if missing:
        raise ValueError(f"{path}: needs column(s) {', '.join(map(repr, missing))}; found {names}")
    at = [names.index(c) if c is not None else None for c in wanted]

    def cell(r: list[str], i: int | None) -> Cell:
        return _undecoded(r[i]) if i is not None and i < len(r) else None
    return [UrlRow(_undecoded(line.rstrip("\r\n")), None, None, "malformed row") if r is None else
            UrlRow(cell(r, at[0]), cell(r, at[1]), _group(cell(r, at[2])), None,
                   _blank(cell(r, at[3])), _blank(cell(r, at[4])), _group(cell(r, at[5])))
            for line, r in zip(lines, cells)]


@dataclass(frozen=True)
class Fetched:
    data: bytes | None
    reason: str | None       # None when data holds the body


class Fetcher:
    """Fetch URL bodies with retries and a per-URL cache; thread-safe."""

    def __init__(self, src: UrlListSource, cache_dir: str | Path):
        self.src = src
        self.cache_dir = Path(cache_dir)
        self.client = httpx.Client(
            timeout=httpx.Timeout(src.timeout_s), follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=src.workers, max_keepalive_connections=src.workers))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _cache_paths(self, url: str) -> tuple[Path, Path]:
        h = hashlib.sha256(url.encode("utf-8")).hexdigest()
        d = self.cache_dir / h[:2]
        return d / f"{h}.bin", d / f"{h}.json"

    def fetch(self, url: Cell) -> Fetched:
        if not url:
            return Fetched(None, "missing url")
        if isinstance(url, bytes):
            return Fetched(None, "invalid url")
        url = url.strip()
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:           # e.g. a broken IPv6 host
            return Fetched(None, "invalid url")
        if parts.scheme.lower() not in SCHEMES:
            return Fetched(None, "unsupported url scheme")
        if not parts.netloc:
            return Fetched(None, "invalid url")
        body_path, fail_path = self._cache_paths(url)
        if body_path.exists():
            data = body_path.read_bytes()
            return Fetched(None, "too large") if len(data) > self.src.max_bytes else Fetched(data, None)
        if fail_path.exists():
            return Fetched(None, json.loads(fail_path.read_text())["reason"])
        result, permanent = self._fetch_with_retries(url)
        if result.data is not None:
            with atomic_path(body_path) as tmp:
                tmp.write_bytes(result.data)
        elif permanent:
            with atomic_path(fail_path) as tmp:
                tmp.write_text(json.dumps({"url": url, "reason": result.reason}))
        return result

    def _fetch_with_retries(self, url: str) -> tuple[Fetched, bool]:
        """(result, whether a failure is permanent and may be cached)."""
        reason = "timeout"
        for attempt in range(self.src.retries + 1):
            if attempt:
                time.sleep(self.src.backoff_s * 2 ** (attempt - 1))
            try:
                return self._get(url)
            except httpx.TimeoutException:
                reason = "timeout"
            except _ServerError as err:
                reason = str(err)
            except httpx.TooManyRedirects:
                return Fetched(None, "too many redirects"), False
            except httpx.UnsupportedProtocol:        # a redirect to ftp:, file:, ...
                return Fetched(None, "unsupported url scheme"), True
            except httpx.InvalidURL:
                return Fetched(None, "invalid url"), True
            except httpx.DecodingError:              # e.g. a body that is not the gzip it claims
                return Fetched(None, "corrupt response"), False
            except httpx.TransportError:
                reason = "connection error"
        return Fetched(None, reason), False

    def _get(self, url: str) -> tuple[Fetched, bool]:
        deadline = time.monotonic() + self.src.timeout_s
        with self.client.stream("GET", url) as r:
            if r.status_code >= 500:
                raise _ServerError(f"http {r.status_code}")
            if r.status_code >= 400:
                return Fetched(None, f"http {r.status_code}"), True
            if r.status_code != 200:
                return Fetched(None, f"http {r.status_code}"), False
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.src.max_bytes:
                return Fetched(None, "too large"), False
            body = bytearray()
            for block in r.iter_bytes():
                body += block
                if len(body) > self.src.max_bytes:
                    return Fetched(None, "too large"), False
                if time.monotonic() > deadline:   # a slow trickle: the limit is per URL, not per read
                    raise httpx.ReadTimeout("total time limit", request=r.request)
            return Fetched(bytes(body), None), False


class _ServerError(Exception):
    """A 5xx answer: worth a retry."""


def _text_ref(value: Cell) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def iter_url_list(src: UrlListSource, cache_dir: str | Path, start: int = 0) -> Iterator[RawSample]:
    """RawSamples of the list's rows from ``start`` on, fetched ``src.workers`` at a time, in order."""
    rows = read_url_list(src)
    stem = Path(src.path).stem
    todo = iter(enumerate(rows[start:], start))
    window: collections.deque[tuple[int, UrlRow, Future]] = collections.deque()
    with Fetcher(src, cache_dir) as fetcher:
        pool = ThreadPoolExecutor(max_workers=src.workers, thread_name_prefix="fetch")
        try:
            def submit() -> None:
                for i, row in todo:   # a malformed row is not fetched
                    window.append((i, row, pool.submit(fetcher.fetch, None if row.problem else row.url)))
                    return

            for _ in range(2 * src.workers):
                submit()
            while window:
                i, row, fut = window.popleft()
                submit()
                got = fut.result()
                key = f"url_list/{stem}/{i:08d}"
                yield RawSample(key=key, source="url_list", source_ref=_text_ref(row.url),
                                image=got.data, caption=row.caption, group=row.group,
                                short_caption=row.short_caption, long_caption=row.long_caption,
                                sample_key=row.sample_key or f"{i:08d}",
                                reject_reason=row.problem or got.reason)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
