"""One Dagster asset per pipeline stage. Each runs ``flame_pipeline.pipeline.run_stage`` (the
same call as the ``flame`` CLI that ``dvc repro`` runs) and reports what it wrote."""

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from assets.metadata import data_version, dvc_md5, dvc_outs, stage_metadata
from assets.resources import FlameParams

GROUP = "flame"

# stage -> (the stages whose files it reads, what it does); order = the chain's order
CHAIN: dict[str, tuple[list[str], str]] = {
    "download": ([], "Fetch or generate image-text samples into MDS shards plus a manifest that "
                     "accounts for every input row (kept or rejected, with the reason)."),
    "curate": (["download"], "Normalise, filter, deduplicate and split the captions."),
    "embed": (["curate"], "Frozen-LLM facet embeddings of every caption, cached by content."),
    "train": (["download", "curate", "embed"],
              "Train the FLAME vision tower on the stored embeddings."),
    "train_baseline": (["download", "curate"],
                       "Train the CLIP baseline (text tower from scratch) on the same data."),
    "evaluate": (["download", "curate", "embed", "train", "train_baseline"],
                 "Benchmarks for both models; metrics in DuckDB, plots and the report."),
}


def stage_key(name: str) -> AssetKey:
    return AssetKey(name)


def _stage_asset(name: str, deps: list[str], description: str) -> AssetsDefinition:
    @asset(name=name, group_name=GROUP, deps=[stage_key(d) for d in deps],
           description=description, kinds={"python"})
    def _materialize(context: AssetExecutionContext, flame: FlameParams) -> MaterializeResult:
        from flame_pipeline.pipeline import run_stage  # the stages load torch etc.: only when run

        cfg = flame.load()
        context.log.info(f"stage {name}: profile {cfg.name} (params {cfg.params_hash()}), "
                         f"data under {cfg.data_dir}")
        out = run_stage(cfg, name)
        md5s = {n: dvc_md5(p) for n, p in out.artifacts.items()}
        dvc = {p.as_posix(): dvc_md5(p) for p in dvc_outs(name, cfg.name, cfg.data_dir) if p.exists()}
        return MaterializeResult(
            metadata=stage_metadata(cfg.name, cfg.params_hash(), out, md5s, dvc),
            data_version=data_version(dvc or md5s))

    return _materialize


STAGE_ASSETS: list[AssetsDefinition] = [_stage_asset(n, d, text) for n, (d, text) in CHAIN.items()]
