"""The Karpathy JSON format of COCO and Flickr30k: ``{"images": [{"filename", "filepath"?,
"split", "sentences": [{"raw"}, ...]}, ...]}``, about 5 captions per image.

The entries of the benchmark's ``split`` (default ``test``: COCO's 5k, Flickr30k's 1k) are
kept, the others counted as excluded. An image is ``<image_dir>/<filepath>/<filename>`` inside
the JSON file's folder. A row is one caption, numbered by its entry; an entry whose image
cannot be used rejects each of its captions with the image's reason.

Scored as CLIP_benchmark counts retrieval: every caption is its own text query (repeated
captions too), every entry its own gallery image, and an image query is a hit at K when any of
its captions ranks within K (``scoring.row_retrieval(per_entry=True)``), as ``retrieval``.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from flame_pipeline.config import KarpathyBenchmark, Profile
from flame_pipeline.eval.benchmark_files import Folder, Loaded, Row
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.prompt_sets import query_set
from flame_pipeline.eval.scoring import row_retrieval


def _entries(path: Path) -> list | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    images = doc.get("images") if isinstance(doc, dict) else None
    return images if isinstance(images, list) else None


def detect(path: Path) -> bool:
    """A ``.json`` file with an ``images`` list whose entries carry ``sentences``."""
    if not path.is_file() or path.suffix.lower() != ".json":
        return False
    entries = _entries(path)
    return bool(entries) and isinstance(entries[0], dict) and "sentences" in entries[0]


def load(path: Path, spec: KarpathyBenchmark) -> Loaded:
    entries = _entries(path)
    if entries is None:
        raise ValueError(f"{path}: not a Karpathy JSON file (an object with an 'images' list)")
    folder, out = Folder(path.parent), Loaded(path, "karpathy")
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            out.reject(number, "unreadable_row", "the entry is not an object")
            continue
        if entry.get("split", spec.split) != spec.split:
            out.excluded += 1
            continue
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            out.reject(number, "missing_text", "no sentences")
            continue
        name = entry.get("filename")
        where = str(PurePosixPath(spec.image_dir, str(entry.get("filepath") or ""), name)) \
            if isinstance(name, str) and name.strip() else name
        data, sha = folder.read_image(where)
        for s in sentences:
            text = s.get("raw") if isinstance(s, dict) else None
            if data is None:
                out.reject(number, *sha)
            elif not isinstance(text, str) or not text.strip():
                out.reject(number, "missing_text", repr(text))
            else:
                out.rows.append(Row(number, data, sha, text=text.strip(), entry=number))
    return out.usable()


def score(cfg: Profile, spec: KarpathyBenchmark, model: EvalModel, loaded: Loaded) -> dict:
    ev = cfg.eval
    return {"retrieval": row_retrieval(model, loaded.rows, query_set(spec.prompt_set, ev.prompt_mode),
                                       ev.recall_ks, per_entry=True)}
