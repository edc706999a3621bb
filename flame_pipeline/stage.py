"""What a stage function returns, and the wrapper that records it in the results store."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flame_pipeline.config import Profile
from flame_pipeline.files import sha256_tree
from flame_pipeline.paths import Paths
from flame_pipeline.store import ResultsStore, recorded_run


@dataclass
class StageOutput:
    artifacts: dict[str, Path]                      # name -> file or directory written
    rows: dict[str, int] = field(default_factory=dict)       # name -> row count
    summary: dict[str, Any] = field(default_factory=dict)    # shown in logs / Dagster metadata
    metrics: list[tuple[str, str, str, float]] = field(default_factory=list)  # model, bench, metric, value
    hashes: dict[str, str] = field(default_factory=dict)     # filled by record()


def record(cfg: Profile, stage: str, fn, *args, **kwargs) -> StageOutput:
    """Run ``fn(cfg, *args)`` as one recorded run: status, artifact hashes and metrics in DuckDB.
    Under torchrun only rank 0 records; the other ranks just run their share."""
    from flame_pipeline.distributed import launched_rank  # torch: loaded when a stage runs

    if launched_rank() != 0:
        return fn(cfg, *args, **kwargs)
    store = ResultsStore(Paths.of(cfg).results_db)
    with recorded_run(store, cfg.name, stage, cfg.params_hash()) as run_id:
        out: StageOutput = fn(cfg, *args, **kwargs)
        for name, path in out.artifacts.items():
            out.hashes[name] = sha256_tree(path)
            store.add_artifact(run_id, stage, name, path, out.hashes[name], out.rows.get(name))
        if out.metrics:
            inputs = ",".join(f"{k}={v[:12]}" for k, v in sorted(out.hashes.items()))
            store.add_metrics(run_id, cfg.name, cfg.params_hash(), out.metrics, inputs)
    return out
