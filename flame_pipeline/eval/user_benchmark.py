"""``flame benchmark PATH``: a user's benchmark in a format they already have, scored on both
trained models side by side (or one), and recorded.

The format is detected (``registry.detect_format``) or given: ``manifest`` (CSV / Parquet /
JSONL rows), ``class_folders``, ``karpathy``, ``long_captions``, ``xm3600``; each loader
keeps every file inside the benchmark's folder and rejects bad rows with a reason
(``benchmark_files``). The scores come from the same code as the evaluate stage's
(``registry.run_suite``), under the same names, ``manifest/<name>/...``. The run is recorded in
the results store as a run of ``benchmark`` with its metric rows, its artifact being the result
document ``eval/benchmarks/<name>.json`` (``Paths.benchmark_result``), so ``flame report``
shows it. ``comparison`` gives the FLAME | CLIP | difference | chance table.
"""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from pydantic import TypeAdapter, ValidationError

from flame_pipeline.config import Benchmark, DataBenchmark, Profile
from flame_pipeline.eval.encoders import MODELS, load_eval_model
from flame_pipeline.eval.registry import FORMATS, Suite, detect_format, run_suite, warnings
from flame_pipeline.eval.report import comparison_table
from flame_pipeline.files import sha256_tree, write_json
from flame_pipeline.paths import Paths
from flame_pipeline.stage import StageOutput, record


def spec_for(path: str | Path, fmt: str | None = None, name: str | None = None,
             **settings) -> DataBenchmark:
    """The benchmark entry for the file or folder at ``path`` (format detected when not given),
    validated as an ``eval.benchmarks`` entry would be; ``settings`` are the format's."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown benchmark format {fmt!r}; formats: {sorted(FORMATS)}")
    entry = {"kind": fmt, "path": path.resolve().name, "name": name,
             **{k: v for k, v in settings.items() if v is not None}}
    try:
        return TypeAdapter(Benchmark).validate_python(entry)
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"{fmt} benchmark {path}: {first['loc'][-1]}: {first['msg']}") from None


def evaluate_manifest(cfg: Profile, manifest_path: str | Path, model: str | None = None,
                      fmt: str | None = None, name: str | None = None, **settings) -> dict:
    """Score the benchmark at ``manifest_path`` on the trained models (``model``: one of
    them; default both) and record the run; returns the result document with its ``run_id``."""
    path = Path(manifest_path)
    spec = spec_for(path, fmt, name, **settings)
    models = MODELS if model is None else (model,)
    out_path = Paths.of(cfg).benchmark_result(spec.title)

    def run(cfg: Profile) -> StageOutput:
        suite = Suite(cfg)
        loaded = suite.load(spec, path)        # bad data fails before any model loads
        results = {m: run_suite(suite, load_eval_model(cfg, m), [spec]) for m in models}
        doc = {"benchmark": spec.title, **loaded.accounting(), "data_sha256": sha256_tree(path),
               "spec": spec.model_dump(mode="json"), "models": results,
               "warnings": warnings(results[models[0]])}
        write_json(out_path, doc)
        rows = [(m, b, k, float(v)) for m, r in results.items() for b, ms in sorted(r.items())
                for k, v in sorted(ms.items())]
        return StageOutput(artifacts={"result": out_path}, rows={"result": len(rows)},
                           summary={"benchmark": spec.title, "used": loaded.accounting()["used"]},
                           metrics=rows)

    out = record(cfg, "benchmark", run)
    return dict(json.loads(out_path.read_text()), run_id=out.run_id)


def comparison(doc: dict) -> str:
    """The result document's scores as a FLAME | CLIP | FLAME − CLIP | chance table."""
    rows = [(m, b, k, v) for m, r in doc["models"].items() for b, ms in r.items() for k, v in ms.items()]
    frame = pl.DataFrame(rows, schema=["model", "benchmark", "metric", "value"], orient="row")
    return comparison_table(frame, prefix=f"manifest/{doc['benchmark']}/") or "(no scores)"
