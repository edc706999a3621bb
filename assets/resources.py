"""Dagster resources: the params profile (per-run overrides from the launchpad), the frozen
LLM's spec, the DuckDB results store, and how many torchrun processes the distributed stages
run on. They only *read* configuration; the stages themselves live in the library.

Relative paths (``params_path``, the profile's ``data_dir``) are relative to the working
directory of the Dagster process, which ``scripts/dagster_dev.sh`` sets to the project root,
exactly as for the ``flame`` CLI and ``dvc repro``: the same params give the same files.
"""

import json
import sys
from typing import Optional

from dagster import ConfigurableResource, ResourceDependency
from pydantic import Field

from flame_pipeline.config import Profile, load_profile
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

    def settings(self) -> list[str]:
        """Every override, the LLM's last, as ``key=value`` (the value as YAML reads it)."""
        return self.overrides + [f"{k}={json.dumps(v)}" for k, v in self.llm.overrides().items()]

    def load(self) -> Profile:
        return load_profile(self.profile, self.params_path, self.settings())

    def cli_args(self) -> list[str]:
        """The ``flame`` options that load the same profile as ``load``."""
        return ["--profile", self.profile, "--params", self.params_path] + \
            [arg for item in self.settings() for arg in ("--set", item)]


class ResultsStoreResource(ConfigurableResource):
    """The profile's DuckDB results store (runs, artifacts and their hashes, metrics)."""

    params: ResourceDependency[FlameParams]

    def store(self) -> ResultsStore:
        return ResultsStore(Paths.of(self.params.load()).results_db)


class Torchrun(ConfigurableResource):
    """How many processes the stages that use torch.distributed (``Stage.distributed``: embed,
    train, train_baseline) run on. One process in all (the default): in the Dagster process, as
    every other stage. More: the asset launches ``torchrun ... -m flame_pipeline.cli <stage>``
    with the run's profile and overrides, and its rank 0 reports back through Dagster Pipes."""

    nproc_per_node: int = Field(1, ge=1, description="processes on this node (one per GPU)")
    nnodes: int = Field(1, ge=1, description="nodes; the others start the torchrun command "
                                             "that the run's log shows (docs/SCALE.md)")
    rdzv_endpoint: str = Field("", description="host:port of the rendezvous every node joins; "
                                               "empty = a standalone one on this node (nnodes 1)")
    rdzv_backend: str = Field("c10d", description="torchrun's rendezvous backend: c10d, or "
                                                  "static (this node is node rank 0)")
    rdzv_id: str = Field("flame", description="the job id every node passes as --rdzv-id")

    def launches(self) -> bool:
        return self.nproc_per_node * self.nnodes > 1

    def argv(self, cli_args: list[str]) -> list[str]:
        """The command line running ``flame <cli_args>`` under torchrun (the module of this
        interpreter's torch, so the processes run in Dagster's environment)."""
        if self.rdzv_endpoint:
            rendezvous = ["--rdzv-backend", self.rdzv_backend, "--rdzv-endpoint",
                          self.rdzv_endpoint, "--rdzv-id", self.rdzv_id]
        elif self.nnodes == 1:
            rendezvous = ["--standalone"]
        else:
            raise ValueError(f"torchrun: nnodes {self.nnodes} needs rdzv_endpoint (host:port), "
                             "the rendezvous every node joins")
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(self.nnodes),
                "--nproc-per-node", str(self.nproc_per_node), *rendezvous,
                "-m", "flame_pipeline.cli", *cli_args]
