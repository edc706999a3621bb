"""End to end (slow) on the tiny profile: the chain with the compositional probe and a file
benchmark declared in params (and the training check on), then ``flame benchmark my.csv``
against the trained models, its table, its DuckDB rows and the report."""
import json

import polars as pl
import pytest

from flame_pipeline.cli import main
from flame_pipeline.config import ScenesSource
from flame_pipeline.data.scenes import generate_scenes
from flame_pipeline.eval.compositional import KINDS
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import run_chain
from flame_pipeline.store import ResultsStore
from profiles import profile_at

pytestmark = pytest.mark.slow


def write_csv(root):
    (root / "img").mkdir(parents=True)
    scenes = generate_scenes(ScenesSource(n_train=0, n_test=10, image_size=32, languages=["en"],
                                          hard_negatives=False), seed=5)
    rows = []
    for i, s in enumerate(scenes):
        (root / f"img/{i}.png").write_bytes(s.image)
        rows.append({"image": f"img/{i}.png", "text": s.caption, "label": s.labels["shape"]})
    rows.append({"image": "img/none.png", "text": "a missing image"})
    pl.DataFrame(rows).write_csv(root / "my.csv")
    return root / "my.csv"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_e2e")
    path = write_csv(tmp / "benchmarks" / "shop")
    cfg = profile_at(tmp / "data", {
        "eval.benchmark_dir": str(tmp / "benchmarks"), "train.eval_every": 3,
        "eval.benchmarks": ["zeroshot", "retrieval", {"kind": "compositional", "n": 12},
                            {"kind": "manifest", "path": "shop/my.csv", "name": "shop"}]})
    return cfg, run_chain(cfg), path


def test_probe_and_declared_benchmark_in_the_evaluation_for_both_models(chain):
    cfg, out, _ = chain
    rows = ResultsStore(Paths.of(cfg).results_db).query(
        "SELECT model, benchmark, metric, value FROM metrics WHERE run_id = ?", [out["evaluate"].run_id])
    probe = rows.filter(pl.col("benchmark").str.starts_with("compositional/") & (pl.col("metric") == "accuracy"))
    assert sorted(probe["benchmark"].unique()) == sorted(f"compositional/{k}" for k in KINDS)
    assert probe.height == 14 and probe["value"].is_between(0, 100).all()
    declared = set(rows.filter(pl.col("benchmark").str.starts_with("manifest/"))["benchmark"])
    assert declared == {"manifest/shop/retrieval/en", "manifest/shop/zeroshot"}
    doc = json.loads(Paths.of(cfg).metrics.read_text())
    assert doc["data_benchmarks"]["shop"]["problems"] == {"missing_image": 1}
    report = Paths.of(cfg).report.read_text()
    table = report.split("## Compositional probe (SugarCrepe's seven kinds)")[1].split("##")[0]
    assert all(f"{k} accuracy" in table for k in KINDS)
    assert "| CLIP (text tower from scratch) |" in table and "| FLAME (frozen LLM) |" in table
    assert "| *chance* | 50.00 |" in table
    assert "## Your benchmarks (`eval.benchmarks`)" in report
    curve = pl.read_csv(Paths.of(cfg).curve("flame"))
    assert curve.drop_nulls("eval_train/i2t_R@1")["step"].to_list() == [3, 6]


def test_flame_benchmark_prints_flame_and_clip_and_records_the_run(chain, capsys):
    cfg, _, path = chain
    args = ["benchmark", str(path), "--profile", "tiny", "--set", f"data_dir={cfg.data_dir}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[1].splitlines()
    assert [c.strip() for c in table[0].strip("|").split("|")] == \
        ["benchmark", "metric", "FLAME", "CLIP", "FLAME − CLIP", "chance"]
    assert any(line.startswith("| retrieval/en | I2T R@1") for line in table)
    run_id = out.split("recorded: run ")[1].split()[0]
    rows = ResultsStore(Paths.of(cfg).results_db).query(
        "SELECT r.stage, m.model, m.benchmark FROM metrics m JOIN runs r USING (run_id) "
        "WHERE run_id = ?", [run_id])
    assert set(rows["stage"]) == {"benchmark"} and set(rows["model"]) == {"flame", "clip"}
    assert set(rows["benchmark"]) == {"manifest/my/retrieval/en", "manifest/my/zeroshot"}
    assert main(["report", "--profile", "tiny", "--set", f"data_dir={cfg.data_dir}"]) == 0
    assert f"Run `{run_id}`" in Paths.of(cfg).report.read_text()
