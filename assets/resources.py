"""Dagster resources: the params profile (per-run overrides from the launchpad), the frozen
LLM's spec, and the DuckDB results store. All three only *read* configuration; the stages
themselves live in the library.

Relative paths (``params_path``, the profile's ``data_dir``) are relative to the working
directory of the Dagster process, which ``scripts/dagster_dev.sh`` sets to the project root,
exactly as for the ``flame`` CLI and ``dvc repro``: the same params give the same files.
"""

from typing import Optional

from dagster import ConfigurableResource, ResourceDependency
from pydantic import Field

from flame_pipeline.config import Profile, load_profile, parse_override
from flame_pipeline.paths import Paths
from flame_pipeline.store import ResultsStore


class LLMSpec(ConfigurableResource):
    """The frozen LLM that embeds captions (embed stage) and text queries (evaluate stage).

    Empty values keep the profile's choice from params.yaml."""

    llm: str = Field("", description="packaged name, hub id, local dir or .gguf file; "
                                      "empty = params.yaml's embed.llm")
    layer: Optional[int] = Field(None, description="hidden_states index; null = params.yaml's embed.layer")
    # Dagster's config has no int-or-list type: several layers come in a field of their own
    layers: list[int] = Field([], description="hidden_states indices whose mean embeds (instead of "
                                               "layer); empty = layer")

    def overrides(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.llm:
            out["embed.llm"] = self.llm
        if self.layer is not None and self.layers:
            raise ValueError(f"the llm resource sets both layer ({self.layer}) and layers "
                             f"({self.layers}): set one")
        if self.layer is not None or self.layers:
            out["embed.layer"] = self.layers or self.layer
        return out


class FlameParams(ConfigurableResource):
    """Which params.yaml profile a run uses, with ``key.sub=value`` overrides (as ``flame --set``)."""

    profile: str = Field("default", description="params.yaml profile: tiny, default or paper")
    params_path: str = Field("params.yaml", description="params file, relative to the project root")
    overrides: list[str] = Field([], description="overrides like 'train.steps=200' (as `flame --set`)")
    llm: ResourceDependency[LLMSpec]

    def load(self) -> Profile:
        over = dict(parse_override(item) for item in self.overrides)
        over.update(self.llm.overrides())
        return load_profile(self.profile, self.params_path, over)


class ResultsStoreResource(ConfigurableResource):
    """The profile's DuckDB results store (runs, artifacts and their hashes, metrics)."""

    params: ResourceDependency[FlameParams]

    def store(self) -> ResultsStore:
        return ResultsStore(Paths.of(self.params.load()).results_db)
