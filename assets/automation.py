"""The job that materializes the whole chain, a weekly retraining schedule, and a sensor that
starts the chain when new raw data lands."""

import hashlib
import json
from pathlib import Path

from dagster import (AssetSelection, DefaultScheduleStatus, DefaultSensorStatus, RunRequest,
                     ScheduleDefinition, SensorEvaluationContext, SensorResult, SkipReason,
                     define_asset_job, sensor)

from assets.resources import FlameParams
from assets.stages import GROUP
from flame_pipeline.config import Profile
from flame_pipeline.data.sources import source_kind
from flame_pipeline.pipeline import STAGES

# A drop folder for new raw data (point a `folder` source at it to have the chain read it).
INCOMING = Path("data/incoming")

flame_chain = define_asset_job(
    "flame_chain", selection=AssetSelection.groups(GROUP),
    description=f"Every stage ({', '.join(STAGES)}) in dependency order, with its checks.")

weekly_retrain = ScheduleDefinition(
    name="weekly_retrain", job=flame_chain, cron_schedule="0 3 * * 1",
    execution_timezone="UTC", default_status=DefaultScheduleStatus.STOPPED,
    description="Retrain and re-evaluate every Monday at 03:00 UTC.")


def watched_paths(cfg: Profile) -> list[Path]:
    """Where raw data comes from: the drop folder and the paths each download source reads
    (its kind's ``watch`` in the source registry)."""
    found = [INCOMING] + [p for src in cfg.download.sources for p in source_kind(src.kind).watch(src)]
    return sorted(set(found))


def fingerprint(paths: list[Path]) -> dict[str, list[int]]:
    """file -> [size, mtime_ns] for every file under the watched paths (absent paths: none)."""
    files: dict[str, list[int]] = {}
    for root in paths:
        for f in ([root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []):
            if f.is_file():
                st = f.stat()
                files[f.as_posix()] = [st.st_size, st.st_mtime_ns]
    return files


@sensor(job=flame_chain, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED,
        description="Starts the chain when a file under data/incoming/ or under a download "
                    "source's path (URL list, folder, WebDataset tars, packaged data root) is "
                    "new or changed since the previous tick (the first tick records a baseline).")
def new_raw_data(context: SensorEvaluationContext, flame: FlameParams):
    cfg = flame.load()
    now = fingerprint(watched_paths(cfg))
    cursor = json.dumps(now, sort_keys=True)
    if context.cursor is None:  # first tick: what is there now is the baseline, not news
        return SensorResult(skip_reason=SkipReason(f"baseline: {len(now)} raw files"), cursor=cursor)
    before = json.loads(context.cursor)
    changed = sorted(f for f in now if before.get(f) != now[f])
    if not changed:
        return SensorResult(skip_reason=SkipReason("no new or changed raw data"), cursor=cursor)
    run_key = hashlib.sha256(cursor.encode()).hexdigest()[:16]
    context.log.info(f"{len(changed)} new or changed raw files, e.g. {changed[:3]}")
    return SensorResult(
        run_requests=[RunRequest(run_key=run_key, tags={"flame/profile": cfg.name,
                                                         "flame/trigger": "new_raw_data"})],
        cursor=cursor)
