"""The XM3600 format (Crossmodal-3600): JSON lines, one image each, its captions per language.

A line names its image by ``image/key`` (the file ``<image_dir>/<key>.jpg``, as the release's
``captions.jsonl`` and ``images/`` folder go together: set ``image_dir: images``) or by an
``image`` path, and holds its captions either as XM3600 does, one object per language code
with a ``caption`` list (``"de": {"caption": [...], ...}``), or as ``"captions": {"de": [...]}``.
Each caption is a row, numbered by its line; ``languages`` keeps some of them.

Scored: retrieval per language (duplicate-aware), every language with the single prompt as the
multilingual protocol does (non-English text in the English template), as
``multilingual/<language>``.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from flame_pipeline.config import Profile, Xm3600Benchmark
from flame_pipeline.eval.benchmark_files import Folder, Loaded, Row
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.manifest import json_lines
from flame_pipeline.eval.prompt_sets import single_set
from flame_pipeline.eval.scoring import row_retrieval

JSONL = (".jsonl", ".jsonlines", ".ndjson")


def detect(path: Path) -> bool:
    if not path.is_file() or path.suffix.lower() not in JSONL:
        return False
    first = next((r for r in json_lines(path) if r), None)
    return first is not None and ("image/key" in first or "captions" in first)


def captions_of(record: dict) -> dict[str, object]:
    """language -> its captions (as found: checked by the caller)."""
    if "captions" in record:
        return record["captions"] if isinstance(record["captions"], dict) else {}
    return {k: v.get("caption") for k, v in record.items() if isinstance(v, dict) and "caption" in v}


def load(path: Path, spec: Xm3600Benchmark) -> Loaded:
    folder, out = Folder(path.parent), Loaded(path, "xm3600")
    for number, record in enumerate(json_lines(path), start=1):
        if record is None:
            out.reject(number, "unreadable_row", "the line does not parse")
            continue
        key = record.get("image/key")
        image = f"{key}.jpg" if isinstance(key, str) and key.strip() else record.get("image")
        if isinstance(image, str) and image.strip():
            image = str(PurePosixPath(spec.image_dir, image))
        found = captions_of(record)
        per_language = {lang: caps for lang, caps in found.items()
                        if not spec.languages or lang in spec.languages}
        texts = [(lang, c) for lang, caps in sorted(per_language.items())
                 for c in (caps if isinstance(caps, list) else [caps])]
        if found and not per_language:     # captions in other languages only
            out.excluded += 1
            continue
        if not texts:
            out.reject(number, "missing_text", "no captions")
            continue
        data, sha = folder.read_image(image)
        for lang, text in texts:
            if data is None:
                out.reject(number, *sha)
            elif not isinstance(text, str) or not text.strip():
                out.reject(number, "missing_text", f"{lang}: {text!r}")
            else:
                out.rows.append(Row(number, data, sha, text=text.strip(), language=lang))
    return out.usable()


def score(cfg: Profile, spec: Xm3600Benchmark, model: EvalModel, loaded: Loaded) -> dict:
    ev = cfg.eval
    return {f"multilingual/{lang}": row_retrieval(
        model, [r for r in loaded.rows if r.language == lang], single_set(spec.prompt_set), ev.recall_ks)
        for lang in sorted({r.language for r in loaded.rows})}
