"""The Definitions object that workspace.yaml loads.

The profile is params.yaml's ``default`` unless the environment says otherwise
(``FLAME_PROFILE``, ``FLAME_PARAMS``, as for the ``flame`` CLI); any run can override it,
and any parameter, in the launchpad's resource config.
"""
from __future__ import annotations

import os

from dagster import Definitions, in_process_executor

from assets.automation import flame_chain, new_raw_data, weekly_retrain
from assets.checks import CHECKS
from assets.resources import FlameParams, LLMSpec, ResultsStoreResource, Torchrun
from assets.stages import STAGE_ASSETS


def flame_resources(profile: str | None = None, params_path: str | None = None,
                    overrides: list[str] | None = None) -> dict:
    """The resources every asset, check and sensor uses, for one profile."""
    # configured at launch: a run's config for "flame", "llm" or "torchrun" (the launchpad)
    # reaches every resource that depends on them, with these values as the defaults
    llm = LLMSpec.configure_at_launch()
    flame = FlameParams.configure_at_launch(
        profile=profile or os.environ.get("FLAME_PROFILE", "default"),
        params_path=params_path or os.environ.get("FLAME_PARAMS", "params.yaml"),
        overrides=overrides or [], llm=llm)
    return {"flame": flame, "llm": llm, "results": ResultsStoreResource(params=flame),
            "torchrun": Torchrun.configure_at_launch()}


def build_definitions(profile: str | None = None, params_path: str | None = None) -> Definitions:
    # Steps run one after another in the run's process: on a CPU machine a process per step
    # would re-import torch for every stage and check, and the chain is nearly sequential.
    return Definitions(assets=STAGE_ASSETS, asset_checks=CHECKS, jobs=[flame_chain],
                       schedules=[weekly_retrain], sensors=[new_raw_data],
                       resources=flame_resources(profile, params_path), executor=in_process_executor)


defs = build_definitions()
