"""One run history: stage runs of the `flame` CLI (and so of `dvc repro`) are reported to the
project's Dagster instance as materializations of the stages' assets, with the metadata and
data version a Dagster run records and the results store's run id; Dagster's own runs once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import flame_resources
from assets.stages import STAGE_ASSETS
from flame_pipeline import cli
from flame_pipeline.config import load_profile
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import STAGES
from flame_pipeline.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


def _events(instance: dg.DagsterInstance, stage: str) -> list[dg.EventLogRecord]:
    """The stage asset's materializations, oldest first."""
    return list(reversed(instance.fetch_materializations(dg.AssetKey(stage), limit=100).records))


def _run_ids(data: Path, stage: str) -> list[str]:
    runs = ResultsStore(Paths(data).results_db).query(
        "SELECT run_id FROM runs WHERE stage = ? AND status = 'succeeded' ORDER BY started_at", [stage])
    return runs["run_id"].to_list()


def test_cli_runs_are_materializations_with_dagsters_metadata_and_data_version(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.chdir(REPO)     # the project root, where the CLI runs (dvc.yaml, dagster.yaml)
    data = tmp_path / "data"
    assert cli.main(["--profile", "tiny", "--set", f"data_dir={data}", "run", "--to", "curate"]) == 0
    assert (home / "dagster.yaml").read_text() == (REPO / "dagster.yaml").read_text()  # set up as the UI script does
    instance = dg.DagsterInstance.from_config(str(home))
    cli_runs = {s: _events(instance, s) for s in ("download", "curate")}
    assert [len(e) for e in cli_runs.values()] == [1, 1]
    for stage, (event,) in cli_runs.items():
        mat = event.event_log_entry.asset_materialization
        assert event.event_log_entry.run_id == ""                          # a runless event
        assert mat.metadata["run_id"].value == _run_ids(data, stage)[-1]   # the DuckDB run
    download, curate = cli_runs["download"][0], cli_runs["curate"][0]
    # lineage: curate's event names the download materialization it read, and its data version
    tags = curate.event_log_entry.asset_materialization.tags
    assert tags["dagster/input_event_pointer/download"] == str(download.storage_id)
    assert tags["dagster/input_data_version/download"] == \
        download.event_log_entry.asset_materialization.tags["dagster/data_version"]

    # Dagster materializes the same assets on the same data: the same data versions and the same
    # metadata keys (the CLI's run is there once, Dagster's is reported by Dagster alone)
    result = dg.materialize(STAGE_ASSETS, selection=["download", "curate"], instance=instance,
                            resources=flame_resources("tiny", str(PARAMS), [f"data_dir={data}"]))
    assert result.success
    for stage in ("download", "curate"):
        cli_event, dagster_event = _events(instance, stage)
        a = cli_event.event_log_entry.asset_materialization
        b = dagster_event.event_log_entry.asset_materialization
        assert dagster_event.event_log_entry.run_id == result.run_id
        assert a.tags["dagster/data_version"] == b.tags["dagster/data_version"]
        assert a.metadata.keys() == b.metadata.keys()
        assert b.metadata["run_id"].value == _run_ids(data, stage)[-1] != a.metadata["run_id"].value
        assert {k: v for k, v in a.metadata.items() if k not in ("run_id", "summary/resumed")} == \
               {k: v for k, v in b.metadata.items() if k not in ("run_id", "summary/resumed")}


def test_an_instance_that_cannot_take_the_report_is_a_warning(tmp_path, monkeypatch, capsys):
    (tmp_path / "not_a_dir").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "not_a_dir"))
    monkeypatch.chdir(REPO)
    assert cli.main(["--profile", "tiny", "--set", f"data_dir={tmp_path / 'data'}", "download"]) == 0
    err = capsys.readouterr().err
    assert "flame: warning: stage download not reported to Dagster: FileExistsError" in err
    assert _run_ids(tmp_path / "data", "download")      # the stage itself ran and was recorded


@pytest.mark.slow
def test_flame_run_shows_progress_writes_tensorboard_and_reports_every_asset(tmp_path):
    """`flame --profile tiny run 2>&1 | cat`, as a new user would run it (data elsewhere)."""
    home, data = tmp_path / "home", tmp_path / "data"
    env = dict(os.environ, DAGSTER_HOME=str(home))
    proc = subprocess.run([str(Path(sys.executable).parent / "flame"), "--profile", "tiny", "--set",
                           f"data_dir={data}", "run"], cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = proc.stdout.splitlines()
    assert "\r" not in proc.stdout
    for what in ("embed tiny-random: 0/", "train flame: 0/6", "train flame: 6/6 step (100%)",
                 "train clip: 0/6", "train clip: 6/6 step (100%)", "evaluate flame: ",
                 "evaluate clip: "):
        assert any(line.startswith(what) for line in lines), what
    for kind in ("flame", "clip"):
        assert list(Paths(data).tensorboard(kind).glob("events.out.tfevents.*"))
    instance = dg.DagsterInstance.from_config(str(home))
    cfg = load_profile("tiny", PARAMS, {"data_dir": str(data)})
    for stage in STAGES:
        (event,) = _events(instance, stage)
        meta = event.event_log_entry.asset_materialization.metadata
        assert meta["run_id"].value == _run_ids(data, stage)[-1]
        assert meta["params_hash"].value == cfg.params_hash()
