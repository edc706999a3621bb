"""The chain of stages, in order, and how to run one or several of them recorded."""
from __future__ import annotations

import importlib
from typing import Callable

from flame_pipeline.config import Profile
from flame_pipeline.stage import StageOutput, record

# stage name -> "module:function"; the order is the chain's order
STAGES: dict[str, str] = {
    "download": "flame_pipeline.data.download:download",
    "curate": "flame_pipeline.data.curate:curate",
    "embed": "flame_pipeline.text.embed:embed",
    "train": "flame_pipeline.train.flame:train",
    "train_baseline": "flame_pipeline.train.clip:train_baseline",
    "evaluate": "flame_pipeline.eval.evaluate:evaluate",
}


def stage_function(name: str) -> Callable[[Profile], StageOutput]:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages are {list(STAGES)}")
    module, func = STAGES[name].split(":")
    return getattr(importlib.import_module(module), func)


def run_stage(cfg: Profile, name: str) -> StageOutput:
    """Run one stage recorded in the results store; evaluation also regenerates the report."""
    out = record(cfg, name, stage_function(name))
    if name == "evaluate":
        from flame_pipeline.eval.evaluate import write_report
        out.artifacts["report"] = write_report(cfg)
    return out


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
