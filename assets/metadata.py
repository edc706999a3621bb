"""What the Dagster UI shows for a stage: row counts, summary, content hashes (sha256 and DVC's
md5, per artifact and per DVC output), metric tables and plots inline, and the data version
derived from the DVC md5s."""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from dagster import DataVersion, MetadataValue

from flame_pipeline.stage import StageOutput

MAX_PLOTS = 12
MAX_PLOT_BYTES = 2_000_000


def dvc_md5(path: str | Path) -> str:
    """The md5 that DVC 3 records in dvc.lock for an output: the file's md5, or for a directory
    the md5 of its sorted ``[{"md5", "relpath"}]`` listing with a ``.dir`` suffix."""
    path = Path(path)
    if path.is_file():
        return _md5_file(path)
    listing = [{"md5": _md5_file(f), "relpath": f.relative_to(path).as_posix()}
               for f in path.rglob("*") if f.is_file()]
    listing.sort(key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def dvc_outs(stage: str, profile: str, data_dir: str, dvc_yaml: Path = Path("dvc.yaml")) -> list[Path]:
    """The outputs (outs, metrics, plots) that dvc.yaml declares for ``stage@profile``, when
    dvc.yaml runs that profile into this data directory; otherwise none."""
    if not dvc_yaml.exists() or data_dir != f"data/{profile}":
        return []
    doc = yaml.safe_load(dvc_yaml.read_text())
    if profile not in doc["vars"][0]["flame_profiles"] or stage not in doc["stages"]:
        return []
    body = doc["stages"][stage]["do"]
    return [Path(o.replace("${item}", profile))
            for key in ("outs", "metrics", "plots") for o in body.get(key, [])]


def data_version(md5s: dict[str, str]) -> DataVersion:
    """One version for a stage from DVC md5s (of its DVC outputs, else of its artifacts)."""
    blob = "\n".join(f"{name}={md5s[name]}" for name in sorted(md5s))
    return DataVersion(hashlib.sha256(blob.encode()).hexdigest()[:16])


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def metrics_table(metrics: list[tuple[str, str, str, float]]) -> str:
    """benchmark/metric rows, one column per model."""
    models = sorted({m for m, _, _, _ in metrics})
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for model, bench, metric, value in metrics:
        cells.setdefault((bench, metric), {})[model] = value
    rows = [[b, k] + [cells[(b, k)].get(m, "") for m in models] for b, k in sorted(cells)]
    return md_table(["benchmark", "metric"] + models, rows)


def png_markdown(path: Path) -> MetadataValue:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return MetadataValue.md(f"![{path.stem}](data:image/png;base64,{data})")


def plots_of(artifacts: dict[str, Path]) -> list[Path]:
    found: list[Path] = []
    for path in artifacts.values():
        path = Path(path)
        pngs = [path] if path.suffix == ".png" else sorted(path.rglob("*.png")) if path.is_dir() else []
        found += [p for p in pngs if p.stat().st_size <= MAX_PLOT_BYTES]
    return found[:MAX_PLOTS]


def _summary_value(value: Any) -> MetadataValue:
    if isinstance(value, bool):
        return MetadataValue.bool(value)
    if isinstance(value, int):
        return MetadataValue.int(value)
    if isinstance(value, float):
        return MetadataValue.float(value)
    if isinstance(value, dict) and value and all(
            isinstance(v, (str, int, float, bool)) or v is None for v in value.values()):
        return MetadataValue.md(md_table(["key", "value"], [[k, v] for k, v in value.items()]))
    if isinstance(value, (dict, list)):
        return MetadataValue.json(json.loads(json.dumps(value, default=str)))
    return MetadataValue.text(str(value))


def stage_metadata(profile: str, params_hash: str, out: StageOutput, md5s: dict[str, str],
                   dvc: dict[str, str]) -> dict[str, MetadataValue]:
    """``md5s``: artifact name -> DVC md5; ``dvc``: DVC output path -> md5 (as in dvc.lock)."""
    meta: dict[str, MetadataValue] = {
        "profile": MetadataValue.text(profile),
        "params_hash": MetadataValue.text(params_hash),
    }
    if out.run_id:
        meta["run_id"] = MetadataValue.text(out.run_id)    # the run in the results store (DuckDB)
    for name, count in out.rows.items():
        meta[f"rows/{name}"] = MetadataValue.int(int(count))
    for name, path in out.artifacts.items():
        meta[f"path/{name}"] = MetadataValue.path(str(path))
    meta["hashes"] = MetadataValue.md(md_table(
        ["artifact", "sha256", "dvc md5"],
        [[n, out.hashes.get(n, ""), md5s[n]] for n in sorted(md5s)]))
    if dvc:
        meta["dvc_outs"] = MetadataValue.md(md_table(["DVC output", "md5 (as in dvc.lock)"],
                                                     [[p, dvc[p]] for p in sorted(dvc)]))
    for key, value in out.summary.items():
        meta[f"summary/{key}"] = _summary_value(value)
    if out.metrics:
        meta["metrics"] = MetadataValue.md(metrics_table(out.metrics))
    for png in plots_of(out.artifacts):
        meta[f"plot/{png.parent.name}/{png.stem}"] = png_markdown(png)
    return meta
