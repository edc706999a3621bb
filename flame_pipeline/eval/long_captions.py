"""Long-caption sets: an image and its long text, in the layouts the public sets ship.

- a folder with ``image/`` and ``caption/`` (Urban-1k): ``caption/<stem>.txt`` describes the
  image ``image/<stem>.*``;
- a ``.json`` list of ``{"image", "conversations": [..., {"from": "gpt", "value"}]}``
  (ShareGPT4V): the first ``gpt`` turn is the text;
- JSON lines of ``{"image_file" | "image", "description" | "caption" | "text", "split"?}``
  (DOCCI, and DCI or any set converted to image + text).

Image paths are inside the benchmark's folder, under its ``image_dir``; with the benchmark's
``split`` set, records of other splits are excluded (DOCCI's ``test``). Scored: retrieval both
ways, duplicate-aware, with the long prompt set (``prompt_sets.query_set(long=True)``), as
``long_retrieval``.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from flame_pipeline.config import LongCaptionsBenchmark, Profile
from flame_pipeline.eval.benchmark_files import Folder, Loaded, Row
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.manifest import json_lines
from flame_pipeline.eval.prompt_sets import query_set
from flame_pipeline.eval.scoring import row_retrieval

IMAGE_KEYS, TEXT_KEYS = ("image_file", "image"), ("description", "caption", "text")
JSONL = (".jsonl", ".jsonlines", ".ndjson")


def _json_list(path: Path) -> list | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, list) else None


def detect(path: Path) -> bool:
    if path.is_dir():
        return (path / "image").is_dir() and (path / "caption").is_dir()
    suffix = path.suffix.lower()
    if suffix == ".json":
        records = _json_list(path)
        return bool(records) and isinstance(records[0], dict) and "conversations" in records[0]
    if suffix in JSONL:
        first = next((r for r in json_lines(path) if r), None)
        return first is not None and any(k in first for k in IMAGE_KEYS) \
            and any(k in first for k in ("description", "caption"))
    return False


def _gpt_text(record: dict):
    turns = record.get("conversations")
    return next((t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "gpt"),
                None) if isinstance(turns, list) else None


class Outside(str):
    """A caption file that leads out of the benchmark's folder (its relative path)."""


def _caption_file(folder: Folder, relative: str) -> str:
    target = folder.inside(relative)
    return Outside(relative) if target is None else target.read_text(encoding="utf-8", errors="replace")


def _records(path: Path) -> list[tuple[object, object, object] | None]:
    """(image path, text, split) of each record, None for one that does not parse."""
    if path.is_dir():
        folder = Folder(path)
        images = {p.stem: f"image/{p.name}" for p in (path / "image").iterdir()}
        texts = {p.stem: f"caption/{p.name}" for p in (path / "caption").iterdir() if p.suffix == ".txt"}
        return [(images.get(s), _caption_file(folder, texts[s]) if s in texts else None, None)
                for s in sorted(set(images) | set(texts))]
    if path.suffix.lower() == ".json":
        records = _json_list(path)
        if records is None:
            raise ValueError(f"{path}: not a JSON list of ShareGPT4V-style records")
        return [(r.get("image"), _gpt_text(r), r.get("split")) if isinstance(r, dict) else None
                for r in records]
    if path.suffix.lower() in JSONL:
        return [(next((r[k] for k in IMAGE_KEYS if k in r), None),
                 next((r[k] for k in TEXT_KEYS if k in r), None), r.get("split")) if r else None
                for r in json_lines(path)]
    raise ValueError(f"{path}: not a long-caption layout (image/ + caption/, .json, .jsonl)")


def load(path: Path, spec: LongCaptionsBenchmark) -> Loaded:
    folder, out = Folder(path if path.is_dir() else path.parent), Loaded(path, "long_captions")
    for number, record in enumerate(_records(path), start=1):
        if record is None:
            out.reject(number, "unreadable_row", "the record does not parse")
            continue
        image, text, split = record
        if spec.split is not None and split != spec.split:
            out.excluded += 1
            continue
        if isinstance(text, Outside):
            out.reject(number, "outside_folder", text)
            continue
        if not isinstance(text, str) or not text.strip():
            out.reject(number, "missing_text", repr(text) if not isinstance(text, str) else "empty")
            continue
        if isinstance(image, str) and image.strip():
            image = str(PurePosixPath(spec.image_dir, image))
        if (found := folder.image(out, number, image)) is not None:
            out.rows.append(Row(number, *found, text=" ".join(text.split())))
    return out.usable()


def score(cfg: Profile, spec: LongCaptionsBenchmark, model: EvalModel, loaded: Loaded) -> dict:
    ev = cfg.eval
    return {"long_retrieval": row_retrieval(
        model, loaded.rows, query_set(spec.prompt_set, ev.prompt_mode, long=True), ev.recall_ks)}
