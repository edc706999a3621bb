"""A user's own benchmark: a manifest of (image path, text, language?, label?) rows.

Formats: ``.csv`` (header row), ``.parquet``, ``.jsonl`` / ``.ndjson`` (one JSON object a
line). Columns: ``image`` (a path relative to the manifest's folder), ``text``, optional
``language`` (default ``en``) and ``label``; any other column is an error naming it. Row
problems are counted and reported with their row numbers, never fatal: a path outside the
manifest's folder (``..``, absolute, or a symlink leading out), a missing file, an image that
does not decode, an empty text, a language that is not a string, a line that does not parse.
A manifest without a usable row is an error. The remaining rows get retrieval per language
(duplicate-aware: images grouped by sha256, texts by content), each text embedded through the
prompt set ``--prompt-set`` names, or by ``auto``'s rule (``prompt_sets.py``: long texts
``long``, labels and non-English texts ``single``, other texts ``short``; the sets used are
counted in the result), and, where labels exist, zero-shot classification with the labels as
class names (through ``single``, as the evaluate stage's), through the same code as the
evaluate stage; a language whose gallery holds fewer than ``MIN_GALLERY`` images gets a
warning (one image scores R@1 = 100 by chance).
"""
from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from flame_pipeline.config import Profile
from flame_pipeline.eval.encoders import EvalModel, load_eval_model
from flame_pipeline.eval.prompt_sets import PROMPT_SETS, auto_set, encode_by_set
from flame_pipeline.eval.retrieval import retrieval
from flame_pipeline.eval.zeroshot import class_embeddings, zeroshot_accuracy
from flame_pipeline.llm_files import load_tokenizer
from flame_pipeline.vision.preprocess import decode

COLUMNS = ("image", "text", "language", "label")
MAX_LISTED = 50   # problem rows listed by number in the result (all are counted)
MIN_GALLERY = 10  # fewer images in a language's gallery: its recall gets a warning


@dataclass
class Manifest:
    path: Path
    rows: list[dict] = field(default_factory=list)          # usable rows, with image bytes and sha256
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # (row number, reason, detail)
    n_rows: int = 0


def _raw_rows(path: Path) -> list[dict | None]:
    """The manifest's rows as dicts (None for a row that does not parse)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.read_parquet(path).to_dicts()
    if suffix in (".jsonl", ".ndjson"):
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
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:  # BOM or not
            reader = csv.DictReader(f)
            # a row with more fields than the header (key None) or fewer (value None) is unreadable
            return [None if None in r or None in r.values() else r for r in reader]
    raise ValueError(f"{path}: unknown manifest format {suffix!r}; use .csv, .parquet or .jsonl")


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate a manifest; every row is either usable or a counted problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    folder = path.parent.resolve()
    raw = _raw_rows(path)
    present = set().union(*(r.keys() for r in raw if r)) if any(raw) else set()
    missing = {"image", "text"} - present
    if raw and missing:
        raise ValueError(f"{path}: required column(s) {sorted(missing)} missing; "
                         f"found {sorted(present)} (columns: {', '.join(COLUMNS)})")
    if unknown := present - set(COLUMNS):
        raise ValueError(f"{path}: unknown column(s) {sorted(unknown)}; expected {', '.join(COLUMNS)}")
    out = Manifest(path, n_rows=len(raw))
    for number, row in enumerate(raw, start=1):
        if row is None:
            out.problems.append((number, "unreadable_row", "the row does not parse"))
            continue
        text, image = row.get("text"), row.get("image")
        if not isinstance(text, str) or not text.strip():
            out.problems.append((number, "missing_text", repr(text)))
            continue
        if not isinstance(image, str) or not image.strip():
            out.problems.append((number, "missing_image", repr(image)))
            continue
        language = row.get("language")
        if language is not None and not isinstance(language, str):
            out.problems.append((number, "bad_language", repr(language)))
            continue
        target = (folder / image).resolve()
        if not target.is_relative_to(folder):
            out.problems.append((number, "outside_folder", image))
            continue
        if not target.is_file():
            out.problems.append((number, "missing_image", image))
            continue
        data = target.read_bytes()
        try:
            decode(data)
        except ValueError as err:
            out.problems.append((number, "unreadable_image", f"{image}: {err}"))
            continue
        label = row.get("label")
        out.rows.append({"row": number, "image": data, "sha256": hashlib.sha256(data).hexdigest(),
                         "text": text.strip(), "language": (language or "").strip() or "en",
                         "label": None if label is None or str(label).strip() == "" else str(label).strip()})
    if not out.rows:
        counts = Counter(r for _, r, _ in out.problems)
        raise ValueError(f"{path}: no usable rows ({out.n_rows} read"
                         + "".join(f", {r}: {n}" for r, n in sorted(counts.items())) + ")")
    return out


def query_sets(cfg: Profile, rows: list[dict], prompt_set: str) -> dict[str, str]:
    """text -> the prompt set that embeds it: ``prompt_set``, or ``auto``'s choice."""
    if prompt_set not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {prompt_set!r}; choose one of {PROMPT_SETS}")
    if prompt_set != "auto":
        return {r["text"]: prompt_set for r in rows}
    texts = sorted({(r["text"], r["language"]) for r in rows})
    counts = load_tokenizer(cfg.embed)([t for t, _ in texts], add_special_tokens=False)["input_ids"]
    return {t: auto_set(t, lang, len(ids), cfg.curate.long_tokens, cfg.eval.prompt_mode)
            for (t, lang), ids in zip(texts, counts)}


def benchmark(cfg: Profile, model: EvalModel, manifest: Manifest, prompt_set: str = "auto") -> dict:
    """Retrieval per language and, with labels, zero-shot classification on the usable rows."""
    result = {"manifest": str(manifest.path), "model": model.name, "rows": manifest.n_rows,
              "used": len(manifest.rows), "problems": dict(Counter(r for _, r, _ in manifest.problems)),
              "problem_rows": [{"row": n, "reason": r, "detail": d}
                               for n, r, d in manifest.problems[:MAX_LISTED]], "warnings": []}
    rows = manifest.rows
    firsts: dict[str, bytes] = {}
    for r in rows:
        firsts.setdefault(r["sha256"], r["image"])
    unique = {sha: i for i, sha in enumerate(firsts)}
    emb = model.image_embeddings(list(firsts.values()))
    result["retrieval"], result["prompt_sets"] = {}, {}
    for lang in sorted({r["language"] for r in rows}):
        part = [r for r in rows if r["language"] == lang]
        sets = query_sets(cfg, part, prompt_set)
        result["prompt_sets"][lang] = dict(sorted(Counter(sets[r["text"]] for r in part).items()))
        result["retrieval"][lang] = retrieval(
            emb[[unique[r["sha256"]] for r in part]], [r["sha256"] for r in part],
            [r["text"] for r in part],
            lambda t: encode_by_set(model.text_embeddings, t, [sets[x] for x in t]),
            cfg.eval.recall_ks)
        n = int(result["retrieval"][lang]["n_images"])
        if n < MIN_GALLERY:
            result["warnings"].append(f"{lang}: a gallery of {n} image{'s' * (n > 1)} (under "
                                      f"{MIN_GALLERY}): recall is not meaningful (R@1 by chance: "
                                      f"{100 / n:.0f}%)")
    labelled = {}
    for r in rows:
        if r["label"] is not None:
            labelled.setdefault(r["sha256"], r["label"])
    classes = sorted(set(labelled.values()))
    if len(classes) >= 2:
        cls = class_embeddings(lambda t: model.text_embeddings(t, "single"), classes,
                               cfg.eval.zeroshot_templates)
        shas = list(labelled)
        result["zeroshot"] = dict(zeroshot_accuracy(
            emb[[unique[s] for s in shas]], cls, [classes.index(labelled[s]) for s in shas]),
            n_images=len(shas), n_classes=len(classes))
    return result


def evaluate_manifest(cfg: Profile, manifest_path: str | Path, model: str = "flame",
                      prompt_set: str = "auto") -> dict:
    """``flame benchmark PATH``: evaluate a trained model (``flame`` or ``clip``) on a manifest,
    its texts through ``prompt_set`` (``auto``: by the rule of ``prompt_sets.py``)."""
    manifest = read_manifest(manifest_path)
    return benchmark(cfg, load_eval_model(cfg, model), manifest, prompt_set)

