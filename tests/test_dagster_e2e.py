"""End-to-end (slow): the tiny profile's chain materialized by Dagster into a real instance,
its checks, a check failing on corrupted files, and parity with `dvc repro` of the same
profile (same files, same DVC md5s), plus DVC's metrics, plots and remote push/pull."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml

from assets.checks import CHECKS, embeddings_finite_unit_norm, every_row_accounted_for
from assets.definitions import flame_resources
from assets.metadata import data_version, dvc_md5, dvc_outs
from assets.stages import STAGE_ASSETS
from dvc_tool import REPO, run_dvc
from flame_pipeline.config import load_profile
from flame_pipeline.files import sha256_tree
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import STAGES
from flame_pipeline.shards import iter_shards, write_shards

pytestmark = pytest.mark.slow
PARAMS = REPO / "params.yaml"


class chdir:
    def __init__(self, path: Path):
        self.path, self.old = path, None

    def __enter__(self):
        self.old = os.getcwd()
        os.chdir(self.path)

    def __exit__(self, *exc):
        os.chdir(self.old)


def materialize_checks(checks, project: Path, instance) -> dict[str, dg.AssetCheckEvaluation]:
    with chdir(project):
        result = dg.materialize(STAGE_ASSETS + CHECKS, selection=dg.AssetSelection.checks(*checks),
                                resources=flame_resources("tiny", str(PARAMS)), instance=instance,
                                raise_on_error=False)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def dagster_run(tmp_path_factory):
    """The tiny chain and all its checks, materialized in-process into a real instance."""
    project = tmp_path_factory.mktemp("dagster_project")
    shutil.copy2(REPO / "dvc.yaml", project / "dvc.yaml")  # Dagster reports its outputs' md5s
    home = project / ".dagster_home"  # a DAGSTER_HOME with the project's dagster.yaml
    home.mkdir()
    shutil.copy2(REPO / "dagster.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    assert instance.telemetry_enabled is False
    with chdir(project):
        result = dg.materialize(STAGE_ASSETS + CHECKS, instance=instance,
                                resources=flame_resources("tiny", str(PARAMS)), raise_on_error=False)
    yield result, instance, project
    instance.dispose()


def test_tiny_chain_materializes_and_checks_pass(dagster_run):
    result, instance, project = dagster_run
    assert result.success, [str(e.event_specific_data)[:2000] for e in result.all_events
                            if e.event_type_value == "STEP_FAILURE"]
    mats = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    assert set(mats) == set(STAGES)
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(CHECKS)
    failed = [(e.asset_key.to_user_string(), e.check_name, e.metadata.get("problems"))
              for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    assert not failed
    # the instance on disk remembers every stage, with its data version
    for stage in STAGES:
        event = instance.get_latest_materialization_event(dg.AssetKey(stage))
        assert event is not None
        tags = event.asset_materialization.tags
        assert tags["dagster/data_version"] == mats[stage].materialization.tags["dagster/data_version"]


def test_materialization_metadata_and_data_versions(dagster_run):
    result, _, project = dagster_run
    paths = Paths.of(load_profile("tiny", PARAMS))
    mats = {e.asset_key.to_user_string(): e.materialization
            for e in result.get_asset_materialization_events()}
    manifest = pl.read_parquet(project / paths.manifest)
    download = mats["download"].metadata
    assert download["rows/manifest"].value == manifest.height
    assert download["profile"].value == "tiny"
    # the data version is the DVC md5s of the stage's DVC outputs, recomputed here from the files
    for stage in STAGES:
        outs = dvc_outs(stage, "tiny", "data/tiny", project / "dvc.yaml")
        expected = data_version({p.as_posix(): dvc_md5(project / p) for p in outs})
        assert mats[stage].tags["dagster/data_version"] == expected.value
        assert all(dvc_md5(project / p) in mats[stage].metadata["dvc_outs"].value for p in outs)
    artifacts = {k.removeprefix("path/"): project / v.value for k, v in download.items()
                 if k.startswith("path/")}
    assert set(artifacts) >= {"manifest", "shards"}
    for name, path in artifacts.items():
        assert dvc_md5(path) in download["hashes"].value
    # evaluation shows both models' metrics and its plots inline
    evaluate = mats["evaluate"].metadata
    header = evaluate["metrics"].value.splitlines()[0]
    assert header == "| benchmark | metric | clip | flame |"
    assert any(k.startswith("plot/") and v.value.startswith("![") for k, v in evaluate.items())
    assert any(k.startswith("plot/") for k in mats["train"].metadata)  # the loss curve


def test_checks_fail_on_corrupted_files(dagster_run, tmp_path):
    _, instance, project = dagster_run
    shutil.copytree(project / "data", tmp_path / "data")
    paths = Paths.of(load_profile("tiny", PARAMS))
    manifest = pl.read_parquet(tmp_path / paths.manifest)
    kept = manifest.filter(pl.col("status") == "kept")["key"][0]
    manifest.filter(pl.col("key") != kept).write_parquet(tmp_path / paths.manifest)

    rows = list(iter_shards(tmp_path / paths.embed_shards))
    rows[3]["emb"] = rows[3]["emb"].copy()
    rows[3]["emb"][0, 0] = np.nan
    shutil.rmtree(tmp_path / paths.embed_shards)
    write_shards(tmp_path / paths.embed_shards,
                 {"key": "str", "emb": "ndarray:float16", "valid": "ndarray:uint8"}, rows)

    ev = materialize_checks([every_row_accounted_for, embeddings_finite_unit_norm], tmp_path, instance)
    assert not ev["every_row_accounted_for"].passed
    n_kept = manifest.filter(pl.col("status") == "kept").height
    assert (f"shards hold {n_kept} samples but the manifest keeps {n_kept - 1}"
            in ev["every_row_accounted_for"].metadata["problems"].value)
    assert not ev["embeddings_finite_unit_norm"].passed
    assert f"{rows[3]['key']}: non-finite values" in ev["embeddings_finite_unit_norm"].metadata["problems"].value
    # the same checks on the untouched files pass
    ev = materialize_checks([every_row_accounted_for, embeddings_finite_unit_norm], project, instance)
    assert ev["every_row_accounted_for"].passed and ev["embeddings_finite_unit_norm"].passed


def _repo_copy(dest: Path) -> Path:
    """The files `dvc repro` needs, in a fresh git repository (the code runs from the venv)."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy2(REPO / name, dest / name)
    # the stages' other inputs in the repository (pinned lists, benchmark data)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()
    for dep in {d for stage in stages for d in stage["do"]["deps"]
                if not d.startswith(("flame_pipeline/", "data/"))}:
        if (REPO / dep).is_dir():
            shutil.copytree(REPO / dep, dest / dep)
        else:
            shutil.copy2(REPO / dep, dest / dep)
    (dest / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy2(REPO / ".dvc" / name, dest / ".dvc" / name)
    shutil.copytree(REPO / "flame_pipeline", dest / "flame_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def _lock_outs(repo: Path, profile: str) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for name, stage in lock["stages"].items()
            if name.endswith(f"@{profile}") for o in stage.get("outs", [])}


# Files that differ between two runs by design: the report states its run's provenance
# (run id, time, code version); the training stage stores the wall-clock throughput it
# measured (images_per_s) with its curve and state, so the model directories' hashes differ,
# and so does the evaluation's fingerprint of its inputs, which names those hashes.
# Everything else must be byte-identical, and these must be identical without the timing.
PER_RUN = {"data/tiny/eval/report.md"}
WALL_CLOCK = "images_per_s"
TIMED = {"data/tiny/models/flame", "data/tiny/models/clip", "data/tiny/eval/metrics.json"}


def _without_wall_clock(value):
    if isinstance(value, dict):
        return {k: _without_wall_clock(v) for k, v in value.items() if k != WALL_CLOCK}
    if isinstance(value, list):
        return [_without_wall_clock(v) for v in value]
    return value


def _content(path: Path, project: Path):
    """A file's content, less the wall-clock throughput and the hashes that include it."""
    if path.name == "curve.csv":
        return pl.read_csv(path).drop(WALL_CLOCK, strict=False).rows()
    if path.name == "metrics.json":
        doc = json.loads(path.read_text())
        inputs = doc["fingerprint"]["inputs"]
        for model in ("flame", "clip"):  # the hash of the model directory evaluation read
            assert inputs.pop(model) == sha256_tree(project / "data/tiny/models" / model)
        return doc
    if path.suffix == ".json":
        return _without_wall_clock(json.loads(path.read_text()))
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(path, "np") as f:
            meta = {k: _without_wall_clock(json.loads(v)) if v.startswith(("{", "["))
                    else v for k, v in (f.metadata() or {}).items()}
            return meta, {k: f.get_tensor(k).tobytes() for k in f.keys()}
    return path.read_bytes()


def _files(out: Path) -> list[Path]:
    """The files of an output, relative to it (a file output: itself)."""
    if out.is_file():
        return [Path()]
    return sorted(f.relative_to(out) for f in out.rglob("*") if f.is_file())


def test_dvc_repro_gives_the_same_files_as_dagster(dagster_run, tmp_path):
    result, _, project = dagster_run
    assert result.success
    repo = _repo_copy(tmp_path)
    run_dvc("repro", "report@tiny", cwd=repo, timeout=900)
    outs = _lock_outs(repo, "tiny")
    assert len(outs) >= 8 and all(p.startswith("data/tiny/") for p in outs)
    assert not [p for p in outs if not (project / p).exists()]
    same = {p for p, md5 in outs.items() if dvc_md5(project / p) == md5}
    assert set(outs) - same <= PER_RUN | TIMED, sorted(set(outs) - same)
    for out in TIMED - same:  # same files, same weights, same losses; only the timing differs
        assert _files(repo / out) == _files(project / out)
        for f in _files(repo / out):
            assert _content(repo / out / f, repo) == _content(project / out / f, project), f"{out}/{f}"
    # the md5s Dagster recorded in its materializations are DVC's
    recorded = {}
    for event in result.get_asset_materialization_events():
        table = event.materialization.metadata["dvc_outs"].value.splitlines()[2:]
        recorded.update(tuple(c.strip() for c in row.strip("|").split("|")) for row in table)
    assert set(recorded) == set(outs)
    assert {p: outs[p] for p in same} == {p: recorded[p] for p in same}

    # DVC's own views work on the result, and the local remote round-trips the outputs
    metrics = json.loads(run_dvc("metrics", "show", "--json", cwd=repo).stdout)
    shown = metrics[""]["data"]["data/tiny/eval/metrics.json"]["data"]["models"]
    assert set(shown) == {"flame", "clip"}
    assert shown == json.loads((project / "data/tiny/eval/metrics.json").read_text())["models"]
    plots = json.loads(run_dvc("plots", "show", "--json", cwd=repo).stdout)["data"]
    points = plots["loss_tiny"][0]["content"]["data"]["values"]  # FLAME and CLIP on one plot
    for model in ("flame", "clip"):
        curve = pl.read_csv(project / f"data/tiny/models/{model}/curve.csv")
        assert [float(p["loss"]) for p in points if p["filename"] == f"{model}/curve.csv"] == \
            curve["loss"].to_list()
    assert any(k.startswith("data/tiny/eval/plots/") and v for k, v in plots.items())
    run_dvc("push", "--with-deps", "report@tiny", cwd=repo)
    assert any((repo / ".dvc" / "remote").rglob("*"))
    shutil.rmtree(repo / "data" / "tiny" / "models")
    shutil.rmtree(repo / ".dvc" / "cache")
    run_dvc("pull", "--with-deps", "report@tiny", cwd=repo)
    assert dvc_md5(repo / "data/tiny/models/flame") == outs["data/tiny/models/flame"]
    status = run_dvc("status", "--json", cwd=repo).stdout
    assert not {k: v for k, v in json.loads(status).items() if k.endswith("@tiny")}
