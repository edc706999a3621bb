"""Smoke tests of experiments/ on the tiny profile (slow: one tiny chain, then each experiment
for real on its outputs): validation scenes, seeds, ablations, the held-out analysis, and the
variants judged on a slice of the real emoji corpus's validation concepts."""
from __future__ import annotations

import json
import sys

import polars as pl
import pytest
import yaml

from flame_pipeline.config import load_profile
from flame_pipeline.eval.headline import figures
from flame_pipeline.pipeline import run_chain
from profiles import PARAMS, REPO

sys.path.insert(0, str(REPO / "experiments"))   # the experiments are scripts importing each other
import ablations  # noqa: E402
import held_out  # noqa: E402
import seeds  # noqa: E402
import validation  # noqa: E402
import variants  # noqa: E402

pytestmark = pytest.mark.slow
FIGURES = ["long I2T R@1", "long T2I R@1", "long (no hard negatives) R@1",
           "multilingual non-en R@1", "zero-shot scenes top-1", "short retrieval R@1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tiny chain run where the experiments expect it: ``data/tiny`` under the cwd."""
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg = load_profile("tiny", PARAMS)
        run_chain(cfg, stop="evaluate")
        yield root, cfg


def _figures_in_range(metrics: pl.DataFrame) -> None:
    for model in ("flame", "clip"):
        values = figures(metrics, model)
        assert all(0.0 <= values[f] <= 100.0 for f in FIGURES), (model, values)


def test_validation_scores_both_models_on_new_scenes(base, monkeypatch):
    root, cfg = base
    monkeypatch.chdir(root)
    rows, images = validation.validation_rows(cfg.download.sources[0], cfg.seed, 6)
    assert rows.height == 6 * (4 + 1) and set(rows["key"]) == set(images)  # 4 languages + a negative
    assert rows["hard_negative"].sum() == 6
    metrics = validation.validation_metrics(cfg, 6)
    _figures_in_range(metrics)
    flame = metrics.filter(pl.col("model") == "flame").drop("value")
    assert flame.equals(metrics.filter(pl.col("model") == "clip").drop("value").with_columns(
        pl.lit("flame").alias("model")))                                    # the same benchmarks


def test_seeds_retrains_on_the_same_data_with_another_seed(base, monkeypatch):
    root, cfg = base
    monkeypatch.chdir(root)
    metrics = seeds.seed_metrics(str(PARAMS), 1, [], "smoke", 6, profile="tiny")
    _figures_in_range(metrics)
    run = root / "data" / "seeds" / "smoke-seed-1"
    assert (run / "raw").is_symlink() and (run / "curated").is_symlink()
    assert (run / "models" / "flame" / "model.safetensors").is_file()
    assert (run / "models" / "clip" / "model.safetensors").is_file()


def test_an_ablation_runs_the_flame_stages_and_tabulates(base, monkeypatch):
    root, cfg = base
    monkeypatch.chdir(root)
    assert ablations.run_variant("center", str(PARAMS), "tiny") > 0
    variant = root / "data" / "ablations" / "center"
    assert (variant / "models" / "clip").is_symlink()     # the baseline is the base run's
    assert (variant / "eval" / "metrics.json").is_file()
    lines = ablations.table(root / "data" / "tiny", root / "data" / "ablations", "tiny").splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| base", "| center", "| CLIP baseline"]


def test_held_out_splits_the_long_queries_of_the_test_scenes(base, monkeypatch):
    root, cfg = base
    monkeypatch.chdir(root)
    hits = held_out.long_hits(cfg)
    table = held_out.table(hits)
    assert set(table["direction"]) == {"I2T", "T2I"}
    for direction in ("I2T", "T2I"):
        queries = hits["flame"].filter(pl.col("direction") == direction).height
        assert table.filter(pl.col("direction") == direction)["queries"].sum() == queries > 0
    assert ((table["flame"] >= 0) & (table["flame"] <= 100) & (table["clip"] >= 0)).all()


@pytest.fixture(scope="module")
def emoji_base(tmp_path_factory):
    """The tiny chain on a slice of the real emoji corpus (val and test concepts held out)."""
    from test_emoji_art import ROOT as NPM
    if not NPM.is_dir():
        pytest.skip("npm data packages not installed (bash scripts/setup.sh)")
    root = tmp_path_factory.mktemp("emoji")
    doc = yaml.safe_load(PARAMS.read_text())
    doc["profiles"]["tiny"]["download"]["sources"] = [
        {"kind": "emoji_art", "root": str(NPM), "locales": ["en", "de", "ja"], "n_test": 4,
         "n_val": 4, "n_train": 8, "image_size": 32}]
    doc["profiles"]["tiny"]["curate"] = {"min_chars": 1}
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(doc, allow_unicode=True))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        run_chain(load_profile("tiny", params), stop="evaluate")
        yield root, str(params)


def test_variants_are_judged_on_the_validation_concepts(emoji_base, monkeypatch):
    root, params = emoji_base
    monkeypatch.chdir(root)
    assert variants.run_variant("base", [], params, "tiny") > 0
    assert variants.run_variant("single", ["train.pool=[single]"], params, "tiny", flame_only=True) > 0
    single = root / "data" / "variants" / "single"
    assert (single / "models" / "clip").is_symlink() and not (single / "models" / "flame").is_symlink()
    for name in ("base", "single"):
        doc = json.loads((root / "data" / "variants" / name / "eval" / "metrics.json").read_text())
        assert doc["split"] == "val" and doc["test_rows"] == 4 * 5 * 3   # concepts x styles x locales
        assert set(doc["models"]["flame"]) >= {"retrieval/emoji_art", "multilingual/emoji_art/de",
                                               "multilingual/emoji_art_openmoji/ja"}
    lines = variants.table("tiny", params, ["base", "single"]).splitlines()
    assert lines[0].startswith("| variant | emoji_art: non-English R@1, mean of 2 locales")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| base", "| single"]
