"""The stage graph, declared once: each stage's function, the files it reads and writes, and
what it does. The ``flame`` CLI, the Dagster assets and the stage table of docs/DESIGN.md are
derived from ``STAGES``, and tests check ``dvc.yaml`` against it; ``run_stage`` and
``run_chain`` run stages recorded in the results store.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flame_pipeline.config import Profile
from flame_pipeline.paths import Paths
from flame_pipeline.stage import StageOutput, record


@dataclass(frozen=True)
class Stage:
    name: str
    function: str              # "module:function", imported only when the stage runs
    reads: tuple[str, ...]     # Paths attributes: the files and dirs of earlier stages it reads
    writes: tuple[str, ...]    # Paths attributes: what it writes (its DVC outs)
    description: str
    distributed: bool = False  # splits its work over torchrun's processes (torch.distributed)

    @property
    def command(self) -> str:
        """The ``flame`` sub-command (and ``dvc.yaml`` cmd) that runs the stage."""
        return self.name.replace("_", "-")

    def load(self) -> Callable[[Profile], StageOutput]:
        module, func = self.function.split(":")
        return getattr(importlib.import_module(module), func)


# The order is the chain's order: a stage reads only what stages before it write.
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("download", "flame_pipeline.data.download:download", (), ("raw_shards", "manifest"),
          "fetch or generate image-text samples into shards plus a manifest that keeps or "
          "rejects (with the reason) every input row"),
    Stage("curate", "flame_pipeline.data.curate:curate", ("manifest", "raw_shards"), ("curated",),
          "normalise, filter, deduplicate and split the captions; pack the train split's shards"),
    Stage("embed", "flame_pipeline.text.embed:embed", ("curated",), ("embed",),
          "precompute the frozen LLM's facet embeddings of the captions (cached by content)",
          distributed=True),
    Stage("train", "flame_pipeline.train.flame:train", ("raw_shards", "manifest", "curated", "embed"),
          ("flame_model",), "train FLAME's vision tower on the stored embeddings", distributed=True),
    Stage("train_baseline", "flame_pipeline.train.clip:train_baseline", ("raw_shards", "manifest", "curated"),
          ("clip_model",), "train the CLIP baseline (text tower from scratch) on the same data",
          distributed=True),
    Stage("evaluate", "flame_pipeline.eval.evaluate:evaluate",
          ("raw_shards", "manifest", "curated", "embed", "flame_model", "clip_model"),
          ("metrics", "plots"), "run the benchmarks on both models; metrics into the results store"),
    # metrics.json stands for the evaluate run's metric rows, which the report reads from DuckDB
    Stage("report", "flame_pipeline.eval.report:report", ("metrics", "plots"), ("report",),
          "write the Markdown report of the latest evaluation from the results store"),
)}


def location(attr: str, root: Path = Path()) -> Path:
    """Where a ``reads``/``writes`` entry lives, under ``root`` (default: relative)."""
    return getattr(Paths(root), attr)


def _inside(path: Path, outer: Path) -> bool:
    return path == outer or outer in path.parents


def upstream(name: str) -> list[str]:
    """The earlier stages that write something stage ``name`` reads, in chain order."""
    reads = [location(r) for r in STAGES[name].reads]
    return [s.name for s in STAGES.values()
            if s.name != name and any(_inside(r, location(w)) for w in s.writes for r in reads)]


def stage_table() -> str:
    """The stage graph as a Markdown table (docs/DESIGN.md holds it verbatim; ``flame stages``)."""
    def files(attrs: tuple[str, ...]) -> str:
        return ", ".join(f"`{location(a).as_posix()}`" for a in attrs) or "-"
    rows = ["| stage | after | reads | writes | function | what it does |",
            "| --- | --- | --- | --- | --- | --- |"]
    rows += [f"| {s.name} | {', '.join(upstream(s.name)) or '-'} | {files(s.reads)} | "
             f"{files(s.writes)} | `{s.function.replace(':', '.')}` | {s.description} |"
             for s in STAGES.values()]
    return "\n".join(rows) + "\n"


def stage_function(name: str) -> Callable[[Profile], StageOutput]:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages are {list(STAGES)}")
    return STAGES[name].load()


def run_stage(cfg: Profile, name: str) -> StageOutput:
    """Run one stage recorded in the results store."""
    return record(cfg, name, stage_function(name))


def run_chain(cfg: Profile, start: str | None = None, stop: str | None = None,
              on_stage: Callable[[str, StageOutput], None] | None = None) -> dict[str, StageOutput]:
    names = list(STAGES)
    lo = names.index(start) if start else 0
    hi = names.index(stop) + 1 if stop else len(names)
    results = {}
    for name in names[lo:hi]:
        results[name] = run_stage(cfg, name)
        if on_stage:
            on_stage(name, results[name])
    return results
