"""One Dagster asset per pipeline stage, derived from the stage spec (``flame_pipeline.pipeline
.STAGES``: name, description, and the upstream stages whose files it reads). Each runs
``flame_pipeline.pipeline.run_stage`` (the same call as the ``flame`` CLI that ``dvc repro``
runs) and reports what it wrote: ``materialization``, which ``assets/history.py`` also reports
for the runs made outside Dagster.

A distributed stage on more than one process (the ``torchrun`` resource) runs as ``flame
<stage>`` under torchrun instead, launched through Dagster Pipes: its rank 0 reports the same
``materialization`` back to the run (``history.report_to_launcher``)."""

import collections
import os
import shlex
import subprocess
import sys

from dagster import (AssetExecutionContext, AssetKey, AssetsDefinition, DataVersion, Failure,
                     MaterializeResult, MetadataValue, PipesTempFileContextInjector,
                     PipesTempFileMessageReader, asset, open_pipes_session)

from assets.metadata import data_version, dvc_md5, dvc_outs, stage_metadata
from assets.resources import FlameParams, Torchrun
from flame_pipeline.config import Profile
from flame_pipeline.pipeline import STAGES, Stage, run_stage, upstream
from flame_pipeline.stage import StageOutput

GROUP = "flame"
STDERR_TAIL = 40   # lines of a failed launch's stderr in its failure


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
    def _materialize(context: AssetExecutionContext, flame: FlameParams,
                     torchrun: Torchrun) -> MaterializeResult:
        cfg = flame.load()
        context.log.info(f"stage {name}: profile {cfg.name} (params {cfg.params_hash()}), "
                         f"data under {cfg.data_dir}")
        if stage.distributed and torchrun.launches():
            return launch(context, torchrun.argv([stage.command] + flame.cli_args()))
        metadata, version = materialization(cfg, name, run_stage(cfg, name))
        return MaterializeResult(metadata=metadata, data_version=version)

    return _materialize


def launch(context: AssetExecutionContext, argv: list[str]) -> MaterializeResult:
    """Run ``argv`` (a ``flame`` stage under torchrun) in a Pipes session; the materialization
    its rank 0 reported. Its output goes to the run's logs; a failure names the stage's error
    lines and the end of stderr."""
    context.log.info(f"launching: {shlex.join(argv)}")
    with open_pipes_session(context=context, context_injector=PipesTempFileContextInjector(),
                            message_reader=PipesTempFileMessageReader()) as session:
        proc = subprocess.Popen(argv, env={**os.environ, **session.get_bootstrap_env_vars()},
                                stderr=subprocess.PIPE, text=True, errors="replace")
        reasons: dict[str, None] = {}   # the CLI's one-line reasons ("flame: error: ..."), once
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        try:
            for line in proc.stderr:
                sys.stderr.write(line)
                tail.append(line)
                if line.startswith("flame: "):
                    reasons[line] = None
            proc.wait()
        finally:
            if proc.poll() is None:   # the run was interrupted: torchrun stops its processes
                proc.terminate()
                proc.wait()
    if proc.returncode != 0:
        raise Failure(f"torchrun exited with code {proc.returncode}\n{''.join(reasons)}\n"
                      f"the end of its stderr:\n{''.join(tail)}")
    results = session.get_results()
    if len(results) != 1:
        raise Failure("torchrun succeeded, but its rank 0 reported no materialization to this "
                      "run (with nnodes > 1 rank 0 must run on this node: docs/SCALE.md)\n"
                      + "".join(reasons))
    return results[0]


STAGE_ASSETS: list[AssetsDefinition] = [_stage_asset(s) for s in STAGES.values()]
