"""The distributed stages from Dagster on several processes (docs/SCALE.md): the torchrun
command line of the ``torchrun`` resource, the profile the launched stage loads, what a stage
launched through Dagster Pipes reports (and where), and (slow) the tiny train stage
materialized on 2 gloo processes, equal to 1 process and reported once, and a failing rank."""
from __future__ import annotations

import shutil
import sys

import dagster as dg
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from assets.definitions import flame_resources
from assets.resources import FlameParams, LLMSpec, Torchrun
from assets.stages import STAGE_ASSETS, launch
from flame_pipeline import cli
from flame_pipeline.config import load_profile
from flame_pipeline.paths import Paths
from profiles import PARAMS, REPO

RUN = [sys.executable, "-m", "torch.distributed.run"]
FLAME = ["-m", "flame_pipeline.cli", "train", "--profile", "tiny"]


def test_one_node_runs_a_standalone_rendezvous():
    assert not Torchrun().launches()
    assert Torchrun(nproc_per_node=2).argv(FLAME[2:]) == RUN + [
        "--nnodes", "1", "--nproc-per-node", "2", "--standalone"] + FLAME


def test_several_nodes_join_the_configured_rendezvous():
    torchrun = Torchrun(nproc_per_node=8, nnodes=2, rdzv_endpoint="node0:29400",
                        rdzv_id="flame-train")
    assert torchrun.launches()
    assert torchrun.argv(FLAME[2:]) == RUN + [
        "--nnodes", "2", "--nproc-per-node", "8", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "node0:29400", "--rdzv-id", "flame-train"] + FLAME
    static = Torchrun(nnodes=2, rdzv_endpoint="node0:29400", rdzv_backend="static")
    assert static.argv(FLAME[2:]) == RUN + [
        "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "static",
        "--rdzv-endpoint", "node0:29400", "--rdzv-id", "flame"] + FLAME
    with pytest.raises(ValueError, match="nnodes 2 needs rdzv_endpoint"):
        Torchrun(nnodes=2).argv(["train"])


def test_the_launched_stage_loads_the_runs_profile():
    """`flame` with the resource's options loads what the asset loads in process."""
    flame = FlameParams(profile="tiny", params_path=str(PARAMS), llm=LLMSpec(llm="smollm2-135m", layer=-3),
                        overrides=["train.steps=3", "train.lr=0.0002", "data_dir=some dir"])
    args = cli._parser().parse_args(["train"] + flame.cli_args())
    launched = load_profile(args.profile, args.params, args.overrides)
    assert launched == flame.load()
    assert (launched.train.steps, launched.embed.llm, launched.embed.layer) == (3, "smollm2-135m", -3)


def _dagster_home(tmp_path, monkeypatch) -> dg.DagsterInstance:
    """An instance at ``$DAGSTER_HOME``, where the CLI would report a runless event."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy2(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.from_config(str(home))


def test_a_launched_stage_reports_to_the_run_that_launched_it_alone(tmp_path, monkeypatch):
    """`flame download` launched through Pipes (here without torchrun: the cheap stage) reports
    what the in-process asset reports, to the launching run only."""
    instance = _dagster_home(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    resources = flame_resources("tiny", str(PARAMS), [f"data_dir={tmp_path / 'data'}"])

    @dg.asset(name="download")
    def launched(context, flame: FlameParams) -> dg.MaterializeResult:
        return launch(context, [sys.executable, "-m", "flame_pipeline.cli", "download"] + flame.cli_args())

    runs = [dg.materialize([launched], instance=instance, resources=resources),
            dg.materialize(STAGE_ASSETS, selection=["download"], instance=instance, resources=resources)]
    events = instance.fetch_materializations(dg.AssetKey("download"), limit=10).records
    assert [e.event_log_entry.run_id for e in reversed(events)] == [r.run_id for r in runs]
    via_pipes, in_process = (e.event_log_entry.asset_materialization for e in reversed(events))
    assert via_pipes.tags["dagster/data_version"] == in_process.tags["dagster/data_version"]
    same = ("run_id", "summary/resumed")       # each run's own
    assert {k: v for k, v in via_pipes.metadata.items() if k not in same} == \
           {k: v for k, v in in_process.metadata.items() if k not in same}


def _materialize_train(root, nproc: int, instance=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        STAGE_ASSETS, selection=["train"], instance=instance, raise_on_error=False,
        resources=flame_resources("tiny", str(PARAMS), [f"data_dir={root}"]),
        run_config={"resources": {"torchrun": {"config": {"nproc_per_node": nproc}}}})


@pytest.mark.slow
def test_a_failing_rank_fails_the_asset_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = _materialize_train(tmp_path / "no_data", 2)    # every rank: no embeddings there
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "torchrun exited with code 1\nflame: error: " in message
    assert "the end of its stderr:" in message and "ChildFailedError" in message  # torchrun's account


@pytest.mark.slow
def test_train_on_two_processes_materializes_as_on_one(tmp_path, monkeypatch, make_data, one_thread):
    """Same global batch: the same weights and loss curve within float tolerance (only the
    order of reductions differs); the 2-process run reported once, by rank 0, to its run."""
    instance = _dagster_home(tmp_path, monkeypatch)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    runs, models = {}, {}
    for n in (1, 2):
        make_data(tmp_path / f"n{n}")
        result = _materialize_train(tmp_path / f"n{n}", n, instance)
        assert result.success, [e.event_specific_data for e in result.all_events if e.is_failure]
        (event,) = result.get_asset_materialization_events()
        runs[n] = result.run_id, event.materialization
        models[n] = Paths(tmp_path / f"n{n}").flame_model
    events = instance.fetch_materializations(dg.AssetKey("train"), limit=10).records
    assert sorted(e.event_log_entry.run_id for e in events) == sorted(r for r, _ in runs.values())
    one, two = runs[1][1], runs[2][1]
    assert (one.metadata["summary/world_size"].value, two.metadata["summary/world_size"].value) == (1, 2)
    assert {k: type(v) for k, v in two.metadata.items()} == {k: type(v) for k, v in one.metadata.items()}
    assert two.tags["dagster/data_version"] and two.metadata["run_id"].value

    weights = {n: load_file(models[n] / "model.safetensors") for n in (1, 2)}
    assert weights[1].keys() == weights[2].keys()
    diff = max((weights[1][k].float() - weights[2][k].float()).abs().max().item() for k in weights[1])
    curves = {n: pl.read_csv(models[n] / "curve.csv")["loss"].to_list() for n in (1, 2)}
    rel = max(abs(a - b) / abs(a) for a, b in zip(curves[1], curves[2]))
    print(f"max weight difference {diff:.3g}, max relative loss difference {rel:.3g}")
    assert all(torch.allclose(weights[1][k], weights[2][k], atol=1e-5) for k in weights[1])
    assert len(curves[1]) == 6 and curves[2] == pytest.approx(curves[1], rel=1e-5)
