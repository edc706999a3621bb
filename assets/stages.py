"""One Dagster asset per pipeline stage, derived from the stage spec (``flame_pipeline.pipeline
.STAGES``: name, description, and the upstream stages whose files it reads). Each runs
``flame_pipeline.pipeline.run_stage`` (the same call as the ``flame`` CLI that ``dvc repro``
runs) and reports what it wrote: ``materialization``, which ``assets/history.py`` also reports
for the runs made outside Dagster."""

from dagster import (AssetExecutionContext, AssetKey, AssetsDefinition, DataVersion,
                     MaterializeResult, MetadataValue, asset)

from assets.metadata import data_version, dvc_md5, dvc_outs, stage_metadata
from assets.resources import FlameParams
from flame_pipeline.config import Profile
from flame_pipeline.pipeline import STAGES, Stage, run_stage, upstream
from flame_pipeline.stage import StageOutput

GROUP = "flame"


def stage_key(name: str) -> AssetKey:
    return AssetKey(name)


def materialization(cfg: Profile, name: str,
                    out: StageOutput) -> tuple[dict[str, MetadataValue], DataVersion]:
    """What the UI shows of a finished stage run (``metadata.stage_metadata``) and its data
    version, from the DVC md5s of its outputs."""
    md5s = {n: dvc_md5(p) for n, p in out.artifacts.items()}
    dvc = {p.as_posix(): dvc_md5(p) for p in dvc_outs(name, cfg.name, cfg.data_dir) if p.exists()}
    return stage_metadata(cfg.name, cfg.params_hash(), out, md5s, dvc), data_version(dvc or md5s)


def _stage_asset(stage: Stage) -> AssetsDefinition:
    name = stage.name

    @asset(name=name, group_name=GROUP, deps=[stage_key(d) for d in upstream(name)],
           description=stage.description[0].upper() + stage.description[1:] + ".",
           kinds={"python"})
    def _materialize(context: AssetExecutionContext, flame: FlameParams) -> MaterializeResult:
        cfg = flame.load()
        context.log.info(f"stage {name}: profile {cfg.name} (params {cfg.params_hash()}), "
                         f"data under {cfg.data_dir}")
        metadata, version = materialization(cfg, name, run_stage(cfg, name))
        return MaterializeResult(metadata=metadata, data_version=version)

    return _materialize


STAGE_ASSETS: list[AssetsDefinition] = [_stage_asset(s) for s in STAGES.values()]
