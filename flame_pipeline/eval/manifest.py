"""The manifest format: a table of (image path, text, language?, label?) rows.

Files: ``.csv`` (header row), ``.parquet``, ``.jsonl`` / ``.ndjson`` (one JSON object a
line). Columns: ``image`` (a path relative to the manifest's folder), ``text``, optional
``language`` (default ``en``) and ``label``; any other column is an error naming it. Rows that
cannot be used are rejected with their row number (``benchmark_files``): besides the image
problems, an empty text (``missing_text``), a language that is not a string
(``bad_language``), a line that does not parse (``unreadable_row``).

Scored: retrieval per language (duplicate-aware: images grouped by sha256, texts by content;
each text through ``spec.prompt_set``, or with ``auto`` by its look, ``prompt_sets.auto_set``) as ``retrieval/<language>`` and, where two or
more labels exist, zero-shot classification with the labels as class names and
``eval.zeroshot_templates`` as ``zeroshot``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl

from flame_pipeline.config import DataBenchmark, Profile
from flame_pipeline.eval.benchmark_files import Folder, Loaded, Row
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.prompt_sets import auto_set, single_set
from flame_pipeline.eval.scoring import row_retrieval, row_zeroshot
from flame_pipeline.llm_files import load_tokenizer

COLUMNS = ("image", "text", "language", "label")
SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")


def json_lines(path: Path) -> list[dict | None]:
    """A JSON-lines file's objects, None for a line that does not parse to an object."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        out.append(obj if isinstance(obj, dict) else None)
    return out


def _raw_rows(path: Path) -> list[dict | None]:
    """The manifest's rows as dicts (None for a row that does not parse)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.read_parquet(path).to_dicts()
    if suffix in (".jsonl", ".ndjson"):
        return json_lines(path)
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:  # BOM or not
            reader = csv.DictReader(f)
            # a row with more fields than the header (key None) or fewer (value None) is unreadable
            return [None if None in r or None in r.values() else r for r in reader]
    raise ValueError(f"{path}: unknown manifest format {suffix!r}; use .csv, .parquet or .jsonl")


def detect(path: Path) -> bool:
    """A CSV or Parquet file, or JSON lines whose first object has ``image`` and ``text``."""
    if not path.is_file() or path.suffix.lower() not in SUFFIXES:
        return False
    if path.suffix.lower() in (".csv", ".parquet"):
        return True
    first = next((r for r in json_lines(path) if r), None)
    return first is not None and {"image", "text"} <= set(first)


def read_manifest(path: str | Path) -> Loaded:
    """Parse and validate a manifest; every row is either usable or a counted problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    folder = Folder(path.parent)
    raw = _raw_rows(path)
    present = set().union(*(r.keys() for r in raw if r)) if any(raw) else set()
    missing = {"image", "text"} - present
    if raw and missing:
        raise ValueError(f"{path}: required column(s) {sorted(missing)} missing; "
                         f"found {sorted(present)} (columns: {', '.join(COLUMNS)})")
    if unknown := present - set(COLUMNS):
        raise ValueError(f"{path}: unknown column(s) {sorted(unknown)}; expected {', '.join(COLUMNS)}")
    out = Loaded(path, "manifest")
    for number, row in enumerate(raw, start=1):
        if row is None:
            out.reject(number, "unreadable_row", "the row does not parse")
            continue
        text, language = row.get("text"), row.get("language")
        if not isinstance(text, str) or not text.strip():
            out.reject(number, "missing_text", repr(text))
            continue
        if language is not None and not isinstance(language, str):
            out.reject(number, "bad_language", repr(language))
            continue
        if (image := folder.image(out, number, row.get("image"))) is None:
            continue
        label = row.get("label")
        out.rows.append(Row(number, *image, text=text.strip(), language=(language or "").strip() or "en",
                            label=None if label is None or str(label).strip() == "" else str(label).strip()))
    return out.usable()


def load(path: Path, spec: DataBenchmark) -> Loaded:
    return read_manifest(path)


def query_sets(cfg: Profile, rows: list[Row], choice: str) -> dict[tuple[str, str], str]:
    """(text, language) -> the prompt set that embeds it: ``choice``, or (``auto``) the set
    ``prompt_sets.auto_set`` gives by the text's look (the kind of a manifest's text is unknown)."""
    texts = sorted({(r.text, r.language) for r in rows})
    if choice != "auto":
        return dict.fromkeys(texts, choice)
    counts = load_tokenizer(cfg.embed)([t for t, _ in texts], add_special_tokens=False)["input_ids"]
    return {(t, lang): auto_set(t, lang, len(ids), cfg.curate.long_tokens, cfg.eval.prompt_mode)
            for (t, lang), ids in zip(texts, counts)}


def score(cfg: Profile, spec: DataBenchmark, model: EvalModel, loaded: Loaded) -> dict:
    ev = cfg.eval
    out = {}
    sets = query_sets(cfg, loaded.rows, spec.prompt_set)   # one tokenizer pass for every language
    for lang in sorted({r.language for r in loaded.rows}):
        part = [r for r in loaded.rows if r.language == lang]
        out[f"retrieval/{lang}"] = row_retrieval(model, part, {r.text: sets[r.text, lang] for r in part},
                                                 ev.recall_ks)
    classes = sorted({r.label for r in loaded.rows if r.label is not None})
    if len(classes) >= 2:
        out["zeroshot"] = row_zeroshot(model, loaded.rows, classes, ev.zeroshot_templates,
                                       single_set(spec.prompt_set))
    return out
