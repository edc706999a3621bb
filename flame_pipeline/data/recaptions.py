"""Recaptions: a sample's short and long caption beside its alt-text (``caption``).

A user's source gives them in the sample itself (a WebDataset sample's ``.json`` or a folder
image's sidecar ``<stem>.json``: keys ``short_caption`` and ``long_caption``; a URL list's
``short_caption_column`` and ``long_caption_column``) or in a sidecar table (``recaptions:
<path>``) joined on the sample key the source gives each sample (``RawSample.sample_key``),
the layout of FLAME's public recaption releases for CC3M and YFCC15M:

- ``.json``: an object mapping each sample key to ``{"short": text, "long": text}``;
- ``.jsonl``: one object a line, ``{"key": ..., "short": ..., "long": ...}``;
- ``.parquet``: columns ``key``, ``short``, ``long``.

``__key__`` may name the key field (a WebDataset's own name for it); either text may be absent
or null. Where the table has a text for a sample it replaces the sample's own. A table that
cannot be read whole (a line that does not parse, a key twice, a text that is not a string)
stops the download with one line naming the file and the place; a sample the table lacks
simply has no recaption, which the download summary and the curate stats count per source.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl

from flame_pipeline.data.sample import RawSample

TEXTS = {"short": "short_caption", "long": "long_caption"}   # table field -> sample field
KEYS = ("key", "__key__")

Recaptions = dict[str, tuple[str | None, str | None]]   # sample key -> (short, long)


class RecaptionTableError(ValueError):
    """A recaption table that cannot be read; the message names the file and the place."""


def json_recaptions(meta: dict) -> tuple[dict[str, str | None], str | None]:
    """The ``short_caption`` / ``long_caption`` of a sample's JSON object, and the reject reason
    when one is there but is not a string (``bad recaption``)."""
    out = {}
    for field in TEXTS.values():
        value = meta.get(field)
        if value is not None and not isinstance(value, str):
            return {}, "bad recaption"
        out[field] = value
    return out, None


def _records(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.read_parquet(path).to_dicts()
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecaptionTableError(f"{path}: line {number} does not parse ({err.msg})") from None
            if not isinstance(obj, dict):
                raise RecaptionTableError(f"{path}: line {number} is not a JSON object")
            records.append(obj)
        return records
    if suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise RecaptionTableError(f"{path}: line {err.lineno}, column {err.colno}: {err.msg}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise RecaptionTableError(f"{path}: expected an object mapping each sample key to "
                                      '{"short": ..., "long": ...}')
        return [{"key": k, **v} for k, v in doc.items()]
    raise RecaptionTableError(f"{path}: a recaption table must be .json, .jsonl or .parquet")


def read_recaptions(path: str | Path) -> Recaptions:
    """sample key -> (short, long) of the table at ``path`` (module docstring: formats, errors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recaption table {path} not found")
    table: Recaptions = {}
    for i, record in enumerate(_records(path), start=1):
        key = next((record[k] for k in KEYS if record.get(k) is not None), None)
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise RecaptionTableError(f"{path}: record {i} has no key (a string under "
                                      f"{' or '.join(map(repr, KEYS))})")
        key = str(key)
        if key in table:
            raise RecaptionTableError(f"{path}: key {key!r} appears twice")
        texts = [record.get(name) for name in TEXTS]
        bad = [name for name, t in zip(TEXTS, texts) if t is not None and not isinstance(t, str)]
        if bad:
            raise RecaptionTableError(f"{path}: key {key!r}: {bad[0]!r} is not a string")
        table[key] = (texts[0], texts[1])
    return table


def with_recaptions(samples: Iterable[RawSample], path: str | Path | None) -> Iterator[RawSample]:
    """``samples`` with the texts of the recaption table at ``path`` (none: as they are)."""
    if path is None:
        yield from samples
        return
    table = read_recaptions(path)
    for sample in samples:
        short, long = table.get(sample.sample_key, (None, None)) if sample.sample_key else (None, None)
        if short is not None:
            sample.short_caption = short
        if long is not None:
            sample.long_caption = long
        yield sample
