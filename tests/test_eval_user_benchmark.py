"""``flame benchmark PATH``: both models side by side, a readable table, JSON for machines, a run
and its metric rows in DuckDB that ``flame report`` shows."""
import json

import polars as pl
import pytest

from flame_pipeline.cli import main
from flame_pipeline.config import ScenesSource
from flame_pipeline.data.scenes import generate_scenes
from flame_pipeline.eval import user_benchmark
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.report import comparison_table, write_report
from flame_pipeline.eval.user_benchmark import comparison, evaluate_manifest
from flame_pipeline.paths import Paths
from flame_pipeline.store import ResultsStore, recorded_run

from eval_oracle import OracleVision, oracle_text
from profiles import profile_at

SCENES = list(generate_scenes(ScenesSource(n_train=0, n_test=12, image_size=32, languages=["en"],
                                           hard_negatives=False), seed=2))


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """A 12-row CSV manifest; "flame" knows every caption, "clip" only the first half."""
    root = tmp_path / "bench"
    (root / "img").mkdir(parents=True)
    rows = []
    for i, s in enumerate(SCENES):
        (root / f"img/{i}.png").write_bytes(s.image)
        rows.append({"image": f"img/{i}.png", "text": s.caption})
    rows.append({"image": "../x.png", "text": "outside"})
    pl.DataFrame(rows).write_csv(root / "my.csv")
    knows = {"flame": SCENES, "clip": SCENES[:6]}

    def model(cfg, name):
        vision = OracleVision([(s.image, s.caption) for s in knows[name]]
                              + [(s.image, f"unrelated {i}") for i, s in enumerate(SCENES)], 32)
        return EvalModel(name, vision.encode_image, vision.pooled_features,
                         lambda t, s: oracle_text(t), 32, batch_size=8)
    monkeypatch.setattr(user_benchmark, "load_eval_model", model)
    return profile_at(tmp_path / "data"), root / "my.csv"


def test_both_models_scored_recorded_in_duckdb_and_tabled(bench):
    cfg, path = bench
    doc = evaluate_manifest(cfg, path)
    assert (doc["benchmark"], doc["format"], doc["rows"], doc["used"]) == ("my", "manifest", 13, 12)
    assert doc["problems"] == {"outside_folder": 1}
    flame, clip = (doc["models"][m]["manifest/my/retrieval/en"] for m in ("flame", "clip"))
    assert flame["i2t_R@1"] == 100.0 and clip["i2t_R@1"] == pytest.approx(50.0, abs=10)
    rows = ResultsStore(Paths.of(cfg).results_db).query(
        "SELECT r.stage, r.status, m.model, m.benchmark, m.metric, m.value FROM metrics m "
        "JOIN runs r USING (run_id) WHERE r.run_id = ?", [doc["run_id"]])
    assert set(rows["stage"]) == {"benchmark"} and set(rows["status"]) == {"succeeded"}
    assert set(rows["model"]) == {"flame", "clip"} and set(rows["benchmark"]) == {"manifest/my/retrieval/en"}
    got = rows.filter((pl.col("model") == "clip") & (pl.col("metric") == "i2t_R@1"))["value"][0]
    assert got == clip["i2t_R@1"]
    assert json.loads(Paths.of(cfg).benchmark_result("my").read_text())["models"] == doc["models"]
    lines = comparison(doc).splitlines()
    assert len({len(line) for line in lines}) == 1              # padded: columns line up
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head == ["benchmark", "metric", "FLAME", "CLIP", "FLAME − CLIP", "chance"]
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    assert first == ["retrieval/en", "I2T R@1", "100.0", f"{clip['i2t_R@1']:.1f}",
                     f"{100 - clip['i2t_R@1']:+.1f}", f"{flame['chance_R@1']:.2f}"]


def test_one_model_and_json_on_the_command_line(bench, capsys):
    cfg, path = bench
    args = ["benchmark", str(path), "--profile", "tiny", "--set", f"data_dir={cfg.data_dir}"]
    assert main(args + ["--model", "clip", "--name", "mine"]) == 0
    out = capsys.readouterr().out
    assert "mine (manifest): 12 of 13 rows scored, rejected: outside_folder: 1" in out
    head = [c.strip() for c in out.split("\n\n")[1].splitlines()[0].strip("|").split("|")]
    assert head == ["benchmark", "metric", "CLIP", "chance"] and "recorded: run" in out
    assert main(args + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(doc["models"]) == ["clip", "flame"] and doc["run_id"]
    assert main(args + ["--format", "karpathy"]) == 1          # a wrong format: a clear error
    assert "not a Karpathy JSON" in capsys.readouterr().err


def test_report_shows_the_latest_flame_benchmark_run(bench):
    cfg, path = bench
    store = ResultsStore(Paths.of(cfg).results_db)
    with recorded_run(store, cfg.name, "evaluate", cfg.params_hash()) as run_id:
        store.add_metrics(run_id, cfg.name, cfg.params_hash(),
                          [("flame", "compositional/swap_att", "accuracy", 75.0),
                           ("clip", "compositional/swap_att", "accuracy", 55.0),
                           ("flame", "compositional/swap_att", "chance_accuracy", 50.0)])
    evaluate_manifest(cfg, path, model="flame")
    latest = evaluate_manifest(cfg, path)
    report = write_report(cfg).read_text()
    assert "## Compositional probe (SugarCrepe's seven kinds)" in report
    assert "| *FLAME − CLIP* | +20.0 |" in report and "| *chance* | 50.00 |" in report
    assert "## `flame benchmark`: my" in report and f"Run `{latest['run_id']}`" in report
    section = report.split("## `flame benchmark`: my")[1]
    assert "| retrieval/en | I2T R@1  | 100.0 |" in section and "FLAME − CLIP" in section
    assert "| benchmark | model |" not in report          # the benchmark run is no pipeline input


def test_comparison_table_numbers():
    frame = pl.DataFrame([("flame", "manifest/x/zeroshot", "top1", 40.0),
                          ("clip", "manifest/x/zeroshot", "top1", 25.5),
                          ("flame", "manifest/x/zeroshot", "chance_top1", 10.0),
                          ("clip", "manifest/x/zeroshot", "n_images", 3.0)],
                         schema=["model", "benchmark", "metric", "value"], orient="row")
    table = comparison_table(frame, "manifest/x/").splitlines()
    assert [c.strip() for c in table[2].strip("|").split("|")] == ["zeroshot", "top-1", "40.0", "25.5",
                                                                  "+14.5", "10.00"]
    assert len(table) == 3 and comparison_table(frame, "manifest/y/") is None
