"""What a stage function returns, and the wrapper that records it in the results store."""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from flame_pipeline.config import Profile
from flame_pipeline.files import exclusive, sha256_tree
from flame_pipeline.paths import Paths
from flame_pipeline.store import ResultsStore, recorded_run


@dataclass
class StageOutput:
    artifacts: dict[str, Path]                      # name -> file or directory written
    rows: dict[str, int] = field(default_factory=dict)       # name -> row count
    summary: dict[str, Any] = field(default_factory=dict)    # shown in logs / Dagster metadata
    metrics: list[tuple[str, str, str, float]] = field(default_factory=list)  # model, bench, metric, value
    hashes: dict[str, str] = field(default_factory=dict)     # filled by record()
    run_id: str | None = None                                # the results store's run: record()


# the recorded run in progress in this process: (its store, stage name, run id)
_RUN: ContextVar[tuple[ResultsStore, str, str] | None] = ContextVar("recorded_run", default=None)


def record(cfg: Profile, stage: str, fn, *args, **kwargs) -> StageOutput:
    """Run ``fn(cfg, *args)`` as one recorded run: status, artifact hashes and metrics in DuckDB.
    Under torchrun only rank 0 records; the other ranks just run their share."""
    from flame_pipeline.distributed import launched_rank  # torch: loaded when a stage runs

    if launched_rank() != 0:
        return fn(cfg, *args, **kwargs)
    store = ResultsStore(Paths.of(cfg).results_db)
    with recorded_run(store, cfg.name, stage, cfg.params_hash()) as run_id:
        token = _RUN.set((store, stage, run_id))
        try:
            out: StageOutput = fn(cfg, *args, **kwargs)
        finally:
            _RUN.reset(token)
        for name, path in out.artifacts.items():
            out.hashes[name] = sha256_tree(path)
            store.add_artifact(run_id, stage, name, path, out.hashes[name], out.rows.get(name))
        if out.metrics:
            inputs = ",".join(f"{k}={v[:12]}" for k, v in sorted(out.hashes.items()))
            store.add_metrics(run_id, cfg.name, cfg.params_hash(), out.metrics, inputs)
    out.run_id = run_id
    return out


@contextlib.contextmanager
def stage_lock(lock_path: str | Path, busy: str) -> Iterator[None]:
    """``files.exclusive`` for a stage's work: once it is held, the stage's other runs still
    'running' in the results store lost their process (the kernel drops a dead process's lock)
    and are marked 'abandoned'."""
    with exclusive(lock_path, busy):
        if run := _RUN.get():
            store, stage, run_id = run
            store.abandon_runs(stage, by=run_id)
        yield
