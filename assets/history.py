"""One run history: a stage run made outside Dagster (the ``flame`` CLI, which ``dvc repro``
runs too) reported to the project's Dagster instance as a runless asset materialization, with
the metadata and data version a Dagster run of the asset records (``stages.materialization``),
so the UI's catalog and lineage show it.

The instance is ``$DAGSTER_HOME``, else the project's ``.dagster_home/`` (the one
``scripts/dagster_dev.sh`` starts the UI on), set up as that script does when it is not there
yet. The event carries Dagster's data-provenance tags: the data version, the code version (here
the results store's run id, as a Dagster run puts its own run id where an asset declares no code
version) and the data version and event of each upstream asset's latest materialization, so the
UI judges staleness as for its own runs. Dagster runs call ``run_stage`` directly, never the CLI,
so they are not reported twice; a run that a Dagster asset launched under torchrun
(``stages.launch``) reports to that run through Dagster Pipes instead, and only there.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from dagster import (AssetMaterialization, BoolMetadataValue, DagsterInstance,
                     FloatMetadataValue, IntMetadataValue, JsonMetadataValue,
                     MarkdownMetadataValue, MetadataValue, PathMetadataValue, TextMetadataValue)
# Dagster's names for its provenance tags (the strings its own runs write; dagster is pinned)
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG, DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG, DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER, get_input_data_version_tag, get_input_event_pointer_tag)
from dagster_pipes import PipesEnvVarParamsLoader, PipesMetadataValue, open_dagster_pipes

from assets.stages import materialization, stage_key
from flame_pipeline.config import Profile
from flame_pipeline.pipeline import upstream
from flame_pipeline.stage import StageOutput

# Pipes' name of each kind of metadata value that stages.materialization makes
PIPES_TYPES = {TextMetadataValue: "text", IntMetadataValue: "int", FloatMetadataValue: "float",
               BoolMetadataValue: "bool", PathMetadataValue: "path", MarkdownMetadataValue: "md",
               JsonMetadataValue: "json"}
HOME = Path(".dagster_home")       # the project-local instance, relative to the project root
TEMPLATE = Path("dagster.yaml")    # the project's instance settings (telemetry off)


def project_instance() -> DagsterInstance:
    """``$DAGSTER_HOME``'s instance, else the project's ``.dagster_home/``, created with the
    project's ``dagster.yaml`` as ``scripts/dagster_dev.sh`` does."""
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")   # offline, as the UI script sets
    home = Path(os.environ.get("DAGSTER_HOME") or HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if TEMPLATE.is_file() and not (home / "dagster.yaml").exists():
        shutil.copyfile(TEMPLATE, home / "dagster.yaml")
    return DagsterInstance.from_config(str(home))


def _provenance(instance: DagsterInstance, name: str, code_version: str) -> dict[str, str]:
    tags = {CODE_VERSION_TAG: code_version}
    for parent in map(stage_key, upstream(name)):
        latest = instance.fetch_materializations(parent, limit=1).records
        version = latest[0].event_log_entry.tags.get(DATA_VERSION_TAG) if latest else None
        tags[get_input_data_version_tag(parent)] = version or DEFAULT_DATA_VERSION.value
        tags[get_input_event_pointer_tag(parent)] = str(latest[0].storage_id) if latest \
            else NULL_EVENT_POINTER
    return tags


def report_run(cfg: Profile, name: str, out: StageOutput, instance: DagsterInstance) -> None:
    """Record stage ``name``'s finished run ``out`` (recorded in the results store: its run id
    is in the metadata) as a materialization of the stage's asset."""
    if out.run_id is None:
        raise ValueError(f"stage {name}: a run not recorded in the results store is not reported")
    metadata, version = materialization(cfg, name, out)
    tags = _provenance(instance, name, out.run_id)
    tags.update({DATA_VERSION_TAG: version.value, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"})
    instance.report_runless_asset_event(
        AssetMaterialization(asset_key=stage_key(name), metadata=metadata, tags=tags))


def launched_by_dagster() -> bool:
    """Whether a Dagster run launched this process through Pipes (``stages.launch``)."""
    return PipesEnvVarParamsLoader().is_dagster_pipes_process()


def _pipes_value(value: MetadataValue) -> PipesMetadataValue:
    return {"raw_value": value.value, "type": PIPES_TYPES[type(value)]}


def report_to_launcher(cfg: Profile, name: str, out: StageOutput) -> None:
    """Report stage ``name``'s finished run ``out`` to the Dagster run that launched this
    process, as that run's materialization of the stage's asset."""
    metadata, version = materialization(cfg, name, out)
    with open_dagster_pipes() as pipes:
        pipes.report_asset_materialization(
            metadata={k: _pipes_value(v) for k, v in metadata.items()},
            data_version=version.value, asset_key=stage_key(name).to_user_string())
