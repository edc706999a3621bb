"""Fast Dagster tests: definitions, resources, metadata, checks on hand-made stage files,
schedule and sensor. No stage runs here (the end-to-end chain is in test_dagster_e2e.py)."""
from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml
from PIL import Image

from assets.automation import new_raw_data, weekly_retrain
from assets.checks import (CHECKS, chance_recall, embeddings_finite_unit_norm,
                           every_row_accounted_for, flame_vs_clip_recorded,
                           held_out_disjoint_from_train, kept_rows_curated_or_dropped,
                           retrieval_above_chance)
from assets.definitions import build_definitions, flame_resources
from assets.resources import FlameParams, LLMSpec, ResultsStoreResource
from assets.metadata import data_version, dvc_md5, dvc_outs, metrics_table, stage_metadata
from assets.stages import STAGE_ASSETS
from flame_pipeline.config import load_profile
from flame_pipeline.files import sha256_tree
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import STAGES, upstream
from flame_pipeline.shards import write_shards
from flame_pipeline.stage import StageOutput
from flame_pipeline.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project directory as the working directory: data/<profile>/ lands under it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_paths() -> Paths:
    return Paths.of(load_profile("tiny", PARAMS))


def run_checks(*checks) -> dict[str, dg.AssetCheckEvaluation]:
    """Execute only the given checks through Dagster (the assets are not materialized).
    A failed blocking check fails its step; a check that crashed would leave no evaluation."""
    result = dg.materialize(STAGE_ASSETS + CHECKS, selection=dg.AssetSelection.checks(*checks),
                            resources=flame_resources("tiny", str(PARAMS)), raise_on_error=False)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert len(evaluations) == len(checks), result.all_events
    return evaluations


# ------------------------------------------------------------------ definitions
def test_definitions_load_the_chain():
    defs = build_definitions(profile="tiny", params_path=str(PARAMS))
    graph = defs.get_repository_def().asset_graph
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == set(STAGES)
    for name in STAGES:
        node = graph.get(dg.AssetKey(name))
        assert {k.to_user_string() for k in node.parent_keys} == set(upstream(name))
        assert node.group_name == "flame"
    assert graph.get(dg.AssetKey("evaluate")).parent_keys >= {dg.AssetKey("train"),
                                                               dg.AssetKey("train_baseline")}
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert {a for a, _ in checks} == set(STAGES)  # every stage has at least one check
    job = defs.resolve_job_def("flame_chain")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == set(STAGES)
    assert job.executor_def.name == "in_process"
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"
    assert defs.resolve_schedule_def("weekly_retrain").cron_schedule == "0 3 * * 1"
    assert defs.resolve_sensor_def("new_raw_data").job_name == "flame_chain"


@dg.asset
def profile_probe(flame: FlameParams, results: ResultsStoreResource) -> dg.MaterializeResult:
    """What the stage assets see: the profile their resources load."""
    cfg = flame.load()
    return dg.MaterializeResult(metadata={
        "profile": cfg.name, "steps": cfg.train.steps, "seed": cfg.seed, "llm": cfg.embed.llm,
        "layer": cfg.embed.layer, "params_hash": cfg.params_hash(),
        "results_db": str(results.store().path)})


def probe(resources: dict, run_config: dict | None = None) -> dict:
    result = dg.materialize([profile_probe], resources=resources, run_config=run_config or {})
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    return {k: v.value for k, v in meta.items()}


def test_workspace_yaml_loads_the_code_location(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy2(REPO / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), DAGSTER_DISABLE_TELEMETRY="1")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "dagster"), "definitions", "validate",
                           "-w", "workspace.yaml"], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Validation successful for code location flame_pipeline" in proc.stderr + proc.stdout


def test_definitions_read_profile_from_environment(monkeypatch, project):
    monkeypatch.setenv("FLAME_PROFILE", "tiny")
    monkeypatch.setenv("FLAME_PARAMS", str(PARAMS))
    assert probe(flame_resources())["profile"] == "tiny"
    monkeypatch.delenv("FLAME_PROFILE")
    assert probe(flame_resources())["profile"] == "default"


def test_per_run_overrides_reach_every_resource(project):
    """Launchpad config for `flame` and `llm` changes the profile the stages and the store see."""
    res = flame_resources("tiny", str(PARAMS))
    base = load_profile("tiny", PARAMS)
    seen = probe(res)
    assert (seen["profile"], seen["steps"], seen["llm"]) == ("tiny", base.train.steps, "tiny-random")
    assert seen["params_hash"] == base.params_hash()
    assert seen["results_db"] == str(Paths.of(base).results_db)

    seen = probe(res, {"resources": {
        "flame": {"config": {"overrides": ["train.steps=3", "seed=7"]}},
        "llm": {"config": {"llm": "smollm2-135m", "layer": -3}}}})
    assert (seen["profile"], seen["steps"], seen["seed"]) == ("tiny", 3, 7)
    assert (seen["llm"], seen["layer"]) == ("smollm2-135m", -3)
    assert seen["params_hash"] != base.params_hash()

    seen = probe(res, {"resources": {"llm": {"config": {"layers": [-2, -4]}}}})
    assert seen["layer"] == [-2, -4]   # several layers: their mean embeds
    with pytest.raises(ValueError, match="sets both layer"):
        LLMSpec(layer=-3, layers=[-2, -4]).overrides()

    seen = probe(res, {"resources": {"flame": {"config": {"profile": "default"}}}})
    assert seen["profile"] == "default"  # params_path stays the one the definitions were built with
    assert seen["results_db"] == str(Paths.of(load_profile("default", PARAMS)).results_db)


def test_dagster_lineage_matches_dvc_deps():
    """Both doors declare the same upstream stages for each stage."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    producer = {out: name for name, s in stages.items()
                for key in ("outs", "metrics", "plots") for out in s["do"].get(key, [])}
    for name, stage in stages.items():
        after = {producer[d] for d in stage["do"]["deps"] if d in producer}
        assert after == set(upstream(name)), name


def test_profiles_data_dir_matches_dvc_layout():
    # dvc.yaml writes data/<profile>/...; the profiles it lists must put their data there
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    profiles = dvc["vars"][0]["flame_profiles"]
    assert "default" in profiles and "tiny" in profiles
    for name in profiles:
        assert load_profile(name, PARAMS).data_dir == f"data/{name}"
    for stage in STAGES:
        assert f"flame {stage.replace('_', '-')} --profile ${{item}}" == dvc["stages"][stage]["do"]["cmd"]


# ------------------------------------------------------------------ metadata
def _png(path: Path, colour=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def test_stage_metadata_shows_rows_hashes_metrics_and_plots(tmp_path):
    plots = tmp_path / "eval" / "plots"
    _png(plots / "recall.png")
    (tmp_path / "eval" / "metrics.json").write_text('{"flame": {"top1": 50.0}}')
    out = StageOutput(artifacts={"plots": plots, "metrics": tmp_path / "eval" / "metrics.json"},
                      rows={"metrics": 4}, summary={"reasons": {"too_short": 3, "duplicate": 1},
                                                    "seconds": 1.5, "nested": {"a": [1, 2]}},
                      metrics=[("flame", "zeroshot", "top1", 50.0), ("clip", "zeroshot", "top1", 12.5)])
    out.hashes = {n: sha256_tree(p) for n, p in out.artifacts.items()}
    md5s = {n: dvc_md5(p) for n, p in out.artifacts.items()}
    meta = stage_metadata("tiny", "abc", out, md5s, {"data/tiny/eval/plots": md5s["plots"]})
    assert f"| data/tiny/eval/plots | {md5s['plots']} |" in meta["dvc_outs"].value
    assert meta["rows/metrics"].value == 4
    assert meta["summary/seconds"].value == 1.5
    assert "| too_short | 3 |" in meta["summary/reasons"].value
    assert meta["summary/nested"].value == {"a": [1, 2]}
    assert out.hashes["plots"] in meta["hashes"].value and md5s["plots"] in meta["hashes"].value
    assert md5s["plots"].endswith(".dir") and not md5s["metrics"].endswith(".dir")
    assert "| zeroshot | top1 | 12.5 | 50 |" in meta["metrics"].value  # columns: clip, flame
    img = meta["plot/plots/recall"].value
    prefix = "![recall](data:image/png;base64,"
    assert img.startswith(prefix)
    decoded = Image.open(io.BytesIO(base64.b64decode(img[len(prefix):-1])))
    assert decoded.getpixel((0, 0)) == (200, 10, 10)


def test_dvc_outs_of_a_stage_follow_dvc_yaml():
    dvc_yaml = REPO / "dvc.yaml"
    assert dvc_outs("curate", "tiny", "data/tiny", dvc_yaml) == [Path("data/tiny/curated")]
    assert dvc_outs("evaluate", "default", "data/default", dvc_yaml) == [
        Path("data/default/eval/metrics.json"), Path("data/default/eval/plots")]
    assert dvc_outs("report", "default", "data/default", dvc_yaml) == [Path("data/default/eval/report.md")]
    assert dvc_outs("curate", "tiny", "/elsewhere", dvc_yaml) == []  # data_dir overridden
    assert dvc_outs("curate", "paper", "data/paper", dvc_yaml) == []  # a profile DVC does not run
    assert dvc_outs("curate", "tiny", "data/tiny", REPO / "no-such-dvc.yaml") == []


def test_data_version_follows_content(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    v1 = data_version({"a": dvc_md5(f)})
    assert v1 == data_version({"a": dvc_md5(f)})
    f.write_text("two")
    assert data_version({"a": dvc_md5(f)}) != v1


def test_metrics_table_pivots_models():
    table = metrics_table([("flame", "retrieval", "i2t_R@1", 40.0),
                           ("clip", "retrieval", "i2t_R@1", 10.0),
                           ("flame", "retrieval", "t2i_R@1", 30.0)])
    lines = table.splitlines()
    assert lines[0] == "| benchmark | metric | clip | flame |"
    assert lines[2] == "| retrieval | i2t_R@1 | 10 | 40 |"
    assert lines[3] == "| retrieval | t2i_R@1 |  | 30 |"


# ------------------------------------------------------------------ checks on hand-made files
def _manifest(rows: list[tuple[str, str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame({
        "key": [k for k, _, _ in rows], "status": [s for _, s, _ in rows],
        "reason": [r for _, _, r in rows],
        "sha256": [f"{i:064x}" if s == "kept" else None for i, (_, s, _) in enumerate(rows)]},
        schema={"key": pl.String, "status": pl.String, "reason": pl.String, "sha256": pl.String})


def _write_download(paths: Paths, rows, n_in_shards: int) -> None:
    paths.raw.mkdir(parents=True, exist_ok=True)
    _manifest(rows).write_parquet(paths.manifest)
    write_shards(paths.raw_shards, {"key": "str", "image": "bytes"},
                 ({"key": f"k{i}", "image": b"png"} for i in range(n_in_shards)))


GOOD_ROWS = [("k0", "kept", None), ("k1", "kept", None), ("k2", "rejected", "decode_error"),
             ("k3", "rejected", "too_small"), ("k4", "rejected", "decode_error")]


def test_download_check_passes_on_consistent_files(project):
    _write_download(tiny_paths(), GOOD_ROWS, n_in_shards=2)
    ev = run_checks(every_row_accounted_for)["every_row_accounted_for"]
    assert ev.passed, ev.metadata
    assert ev.metadata["input_rows"].value == 5
    assert (ev.metadata["kept"].value, ev.metadata["rejected"].value) == (2, 3)
    assert "| decode_error | 2 |" in ev.metadata["rejection_reasons"].value


@pytest.mark.parametrize("rows, in_shards, problem", [
    (GOOD_ROWS, 1, "shards hold 1 samples but the manifest keeps 2"),
    (GOOD_ROWS[:2] + [("k2", "rejected", None)], 2, "1 rejected rows without a reason"),
    (GOOD_ROWS + [("k5", "pending", None)], 2, "1 manifest rows are neither kept nor rejected"),
    (GOOD_ROWS + [("k1", "rejected", "dup")], 2, "1 duplicate keys"),
])
def test_download_check_fails_on_unaccounted_rows(project, rows, in_shards, problem):
    _write_download(tiny_paths(), rows, n_in_shards=in_shards)
    ev = run_checks(every_row_accounted_for)["every_row_accounted_for"]
    assert not ev.passed
    assert ev.severity == dg.AssetCheckSeverity.ERROR
    assert problem in ev.metadata["problems"].value


def test_download_check_fails_when_the_stage_wrote_nothing(project):
    ev = run_checks(every_row_accounted_for)["every_row_accounted_for"]
    assert not ev.passed and "missing" in ev.metadata["problems"].value


def _write_curate(paths: Paths, captions: list[tuple[str, str | None]], dropped: list[str]) -> None:
    paths.curated.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"key": [k for k, _ in captions], "split": [s for _, s in captions]},
                 schema={"key": pl.String, "split": pl.String}).write_parquet(paths.captions)
    pl.DataFrame({"key": dropped, "stage": ["curate"] * len(dropped),
                  "reason": ["too_short"] * len(dropped)},
                 schema={"key": pl.String, "stage": pl.String, "reason": pl.String}
                 ).write_parquet(paths.dropped)


def test_curate_check(project):
    paths = tiny_paths()
    _write_download(paths, GOOD_ROWS, 2)
    _write_curate(paths, [("k0", "train")], ["k1"])
    ev = run_checks(kept_rows_curated_or_dropped)["kept_rows_curated_or_dropped"]
    assert ev.passed, ev.metadata
    _write_curate(paths, [("k0", None)], [])  # k1 lost, k0 without split
    ev = run_checks(kept_rows_curated_or_dropped)["kept_rows_curated_or_dropped"]
    assert not ev.passed
    problems = ev.metadata["problems"].value
    assert "1 kept rows neither curated nor dropped, e.g. ['k1']" in problems
    assert "1 captions without a train/test/val split" in problems


def _write_split(paths: Paths, rows: list[tuple[str, str | None, str, str, int]]) -> None:
    """Manifest and curated captions of (key, split the source set, split, caption, image)."""
    for d in (paths.raw, paths.curated):
        d.mkdir(parents=True, exist_ok=True)
    keys = [r[0] for r in rows]
    pl.DataFrame({"key": keys, "split": [r[1] for r in rows],
                  "sha256": [f"{r[4]:064x}" for r in rows]},
                 schema={"key": pl.String, "split": pl.String, "sha256": pl.String}
                 ).write_parquet(paths.manifest)
    pl.DataFrame({"key": keys, "split": [r[2] for r in rows], "caption": [r[3] for r in rows]}
                 ).write_parquet(paths.captions)


def test_held_out_check_fails_on_a_contaminated_curated_table(project):
    paths = tiny_paths()
    clean = [("k0", None, "train", "a red cube.", 0), ("k1", None, "test", "a blue ball.", 1),
             ("k2", None, "val", "a green star.", 2),
             # the source's own test row with a training caption: reported, not a failure
             ("f0", "train", "train", "a photo of a sandal.", 3),
             ("f1", "test", "test", "A photo of a sandal", 4)]
    _write_split(paths, clean)
    ev = run_checks(held_out_disjoint_from_train)["held_out_disjoint_from_train"]
    assert ev.passed, ev.metadata
    assert "| curate | test | 1 | 0 | 0 |" in ev.metadata["held_out"].value
    assert "| source | test | 1 | 1 | 0 |" in ev.metadata["held_out"].value
    _write_split(paths, clean + [("k3", None, "test", "A RED CUBE!", 5), ("k4", None, "val", "a tree.", 0),
                                 ("k5", None, "test", "a blue ball", 6)])
    ev = run_checks(held_out_disjoint_from_train)["held_out_disjoint_from_train"]
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
    problems = ev.metadata["problems"].value
    assert "1 of 3 test rows share a caption with training" in problems
    assert "1 of 2 val rows share an image with training" in problems
    assert "test rows share an image" not in problems and "val rows share a caption" not in problems
    assert next(iter(held_out_disjoint_from_train.check_specs)).blocking


def _write_embed(paths: Paths, embs: dict[str, np.ndarray], names: list[str]) -> None:
    paths.embed.mkdir(parents=True, exist_ok=True)
    paths.embed_meta.write_text(json.dumps({"names": names, "dim": 4}))
    shutil.rmtree(paths.embed_shards, ignore_errors=True)
    write_shards(paths.embed_shards,
                 {"key": "str", "emb": "ndarray:float16", "valid": "ndarray:uint8"},
                 ({"key": k, "emb": e.astype(np.float16),
                   "valid": np.isfinite(e).all(axis=1).astype(np.uint8) | 1} for k, e in embs.items()))


def _unit(rng, n=2, d=4) -> np.ndarray:
    e = rng.normal(size=(n, d))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_embed_check_finite_and_unit_norm(project):
    paths, rng = tiny_paths(), np.random.default_rng(0)
    _write_curate(paths, [("k0", "train"), ("k1", "test")], [])
    _write_embed(paths, {"k0": _unit(rng), "k1": _unit(rng)}, ["single", "short/0"])
    ev = run_checks(embeddings_finite_unit_norm)["embeddings_finite_unit_norm"]
    assert ev.passed, ev.metadata
    assert ev.metadata["valid_embeddings"].value == 4
    assert ev.metadata["max_norm_error"].value < 1e-3

    _write_embed(paths, {"k0": _unit(rng)}, ["single", "short/0"])   # the test row's is missing
    ev = run_checks(embeddings_finite_unit_norm)["embeddings_finite_unit_norm"]
    assert not ev.passed
    assert "1 captions without embeddings" in ev.metadata["problems"].value

    bad_nan, bad_norm = _unit(rng), _unit(rng) * 1.5
    bad_nan[1, 0] = np.nan
    _write_embed(paths, {"k0": bad_nan, "k1": bad_norm}, ["single", "short/0"])
    ev = run_checks(embeddings_finite_unit_norm)["embeddings_finite_unit_norm"]
    problems = ev.metadata["problems"].value
    assert not ev.passed
    assert "k0: non-finite values" in problems and "k1: norm off by 0.5" in problems


def _write_curve(path: Path, losses: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "lr"])
        w.writerows([i + 1, loss, 1e-4] for i, loss in enumerate(losses))


def test_loss_checks_for_both_models(project):
    paths = tiny_paths()
    loss_checks = [c for c in CHECKS if next(iter(c.check_keys)).name == "loss_finite"]
    assert len(loss_checks) == 2
    _write_curve(paths.flame_model / "curve.csv", [3.0, 2.0, 1.5])
    _write_curve(paths.clip_model / "curve.csv", [3.0, math.nan, 1.5])
    result = dg.materialize(STAGE_ASSETS + CHECKS, selection=dg.AssetSelection.checks(*loss_checks),
                            resources=flame_resources("tiny", str(PARAMS)), raise_on_error=False)
    by_asset = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    assert by_asset["train"].passed and by_asset["train"].metadata["last_loss"].value == 1.5
    assert not by_asset["train_baseline"].passed
    assert "non-finite loss at steps ['2']" in by_asset["train_baseline"].metadata["problems"].value


def _record_eval(paths: Paths, rows: list[tuple[str, str, str, float]],
                 params_hash: str | None = None) -> None:
    params_hash = params_hash or load_profile("tiny", PARAMS).params_hash()
    store = ResultsStore(paths.results_db)
    run_id = store.start_run("tiny", "evaluate", params_hash)
    store.add_metrics(run_id, "tiny", params_hash, rows)
    store.end_run(run_id, "succeeded")


def test_evaluate_checks(project):
    paths = tiny_paths()
    ev = run_checks(flame_vs_clip_recorded, retrieval_above_chance)
    assert not ev["flame_vs_clip_recorded"].passed  # nothing recorded yet
    assert "no metrics for flame" in ev["flame_vs_clip_recorded"].metadata["problems"].value

    gallery = [("retrieval", "n_texts", 20.0), ("retrieval", "n_images", 10.0)]
    flame = gallery + [("retrieval", "i2t_R@1", 30.0), ("retrieval", "t2i_R@1", 40.0),
                       ("retrieval", "i2t_R@5", 60.0)]
    _record_eval(paths, [("flame", b, k, v) for b, k, v in flame] +
                 [("clip", b, k, 1.0) for b, k, _ in flame])
    ev = run_checks(flame_vs_clip_recorded, retrieval_above_chance)
    assert ev["flame_vs_clip_recorded"].passed, ev["flame_vs_clip_recorded"].metadata
    assert ev["retrieval_above_chance"].passed, ev["retrieval_above_chance"].metadata
    # i2t: 20 texts for 10 images, 2 right each: chance R@1 = 10 %, R@5 = 1 - 15/20 * 14/19
    i2t_chance = (10.0 + 100 * (1 - 15 / 20 * 14 / 19)) / 2
    assert (f"| retrieval | i2t | 1,5 | 45 | {i2t_chance:.4g} |"
            in ev["retrieval_above_chance"].metadata["recalls"].value)

    # a later run: t2i R@1 at chance (1 of 10 images = 10 %), CLIP missing one metric
    worse = [r if r[1] != "t2i_R@1" else ("retrieval", "t2i_R@1", 10.0) for r in flame]
    _record_eval(paths, [("flame", b, k, v) for b, k, v in worse] +
                 [("clip", b, k, 1.0) for b, k, _ in worse[:-1]])
    ev = run_checks(flame_vs_clip_recorded, retrieval_above_chance)
    assert not ev["flame_vs_clip_recorded"].passed
    assert not ev["retrieval_above_chance"].passed
    assert ev["retrieval_above_chance"].severity == dg.AssetCheckSeverity.WARN
    assert ("retrieval t2i: mean R@K 10 <= chance 10"
            in ev["retrieval_above_chance"].metadata["problems"].value)

    # complete metrics, but from an evaluation with other params
    _record_eval(paths, [(m, b, k, v) for b, k, v in flame for m in ("flame", "clip")], "0" * 16)
    ev = run_checks(flame_vs_clip_recorded)["flame_vs_clip_recorded"]
    assert not ev.passed
    assert "the latest evaluation used params 0000000000000000" in ev.metadata["problems"].value


def test_chance_recall_matches_random_rankings():
    assert chance_recall(1, 100) == pytest.approx(1.0)
    assert chance_recall(10, 5) == 100.0
    rng = np.random.default_rng(0)
    for k, gallery, relevant in ((1, 20, 2), (5, 20, 2), (3, 10, 3)):
        hits = [(rng.permutation(gallery)[:k] < relevant).any() for _ in range(20000)]
        assert chance_recall(k, gallery, relevant) == pytest.approx(100 * np.mean(hits), abs=1.0)


# ------------------------------------------------------------------ schedule and sensor
def test_weekly_schedule_requests_the_chain():
    monday = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.timezone.utc)
    ctx = dg.build_schedule_context(scheduled_execution_time=monday)
    data = weekly_retrain.evaluate_tick(ctx)
    assert len(data.run_requests) == 1
    assert weekly_retrain.job_name == "flame_chain"
    assert weekly_retrain.default_status == dg.DefaultScheduleStatus.STOPPED


def _sensor_tick(cursor: str | None, params: Path) -> dg.SensorResult:
    with dg.build_sensor_context(cursor=cursor,
                                 resources=flame_resources("tiny", str(params))) as ctx:
        return new_raw_data(ctx)


def test_sensor_starts_a_run_when_raw_data_lands(project):
    # a profile whose download reads a URL list: new lines there, or new files in data/incoming
    doc = yaml.safe_load(PARAMS.read_text())
    doc["profiles"]["tiny"]["download"]["sources"].append(
        {"kind": "url_list", "path": "data/sources/urls.tsv"})
    params = project / "params.yaml"
    params.write_text(yaml.safe_dump(doc))

    result = _sensor_tick(None, params)  # first tick: the files already there are the baseline
    assert not result.run_requests and result.skip_reason
    cursor = result.cursor
    assert not any(f.startswith("data/") for f in json.loads(cursor))

    (project / "data" / "incoming").mkdir(parents=True)
    (project / "data" / "incoming" / "batch1.tar").write_bytes(b"x" * 10)
    result = _sensor_tick(cursor, params)
    assert len(result.run_requests) == 1
    req = result.run_requests[0]
    assert req.tags["flame/profile"] == "tiny" and req.job_name in (None, "flame_chain")
    first_key, cursor = req.run_key, result.cursor

    result = _sensor_tick(cursor, params)  # nothing changed: no run
    assert not result.run_requests

    (project / "data" / "sources").mkdir()
    (project / "data" / "sources" / "urls.tsv").write_text("url\tcaption\nhttp://x/1.png\ta cat\n")
    result = _sensor_tick(cursor, params)
    assert len(result.run_requests) == 1 and result.run_requests[0].run_key != first_key
    assert "data/sources/urls.tsv" in json.loads(result.cursor)
