"""End-to-end (slow): the tiny chain, then the evaluate stage's files and DuckDB rows, and the
report stage's report."""
import json

import polars as pl
import pytest

from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import run_chain, run_stage
from flame_pipeline.store import ResultsStore
from profiles import profile_at, with_eval

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    cfg = profile_at(tmp_path_factory.mktemp("e2e"))
    out = run_chain(cfg)
    return cfg, out["evaluate"], out["report"]


def test_both_models_get_every_metric_recorded(chain):
    cfg, out, _ = chain
    paths = Paths.of(cfg)
    rows = ResultsStore(paths.results_db).query(
        "SELECT m.model, m.benchmark, m.metric, m.value FROM metrics m JOIN runs r USING (run_id) "
        "WHERE r.stage = 'evaluate'")
    assert rows.height == len(out.metrics) > 0
    flame, clip = (set(rows.filter(pl.col("model") == m).select("benchmark", "metric").iter_rows())
                   for m in ("flame", "clip"))
    assert flame == clip        # exactly the same benchmarks for both models
    families = {b.split("/")[0] for b, _ in flame}
    assert families == {"zeroshot", "retrieval", "long_retrieval", "long_retrieval_77",
                        "long_retrieval_no_hn",
                        "multilingual", "linear_probe"}
    recalls = rows.filter(~pl.col("metric").str.starts_with("n_"))
    assert recalls["value"].min() >= 0.0 and recalls["value"].max() <= 100.0
    doc = json.loads(paths.metrics.read_text())
    assert doc["models"]["flame"]["retrieval/scenes"]["i2t_R@1"] == pytest.approx(
        rows.filter((pl.col("model") == "flame") & (pl.col("benchmark") == "retrieval/scenes")
                    & (pl.col("metric") == "i2t_R@1"))["value"][0])


def test_report_and_plots(chain):
    cfg, _, out = chain
    paths = Paths.of(cfg)
    assert out.artifacts["report"] == paths.report
    report = out.artifacts["report"].read_text()
    for name in ("recall_at_k", "multilingual_r1", "interpretability"):
        assert (paths.plots / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"(plots/{name}.png)" in report
    assert "| CLIP (text tower from scratch) |" in report and "| FLAME (frozen LLM) |" in report
    assert "| train | model |" in report and "| train_baseline | model |" in report


def test_rerun_resumes_with_the_same_numbers_and_a_change_recomputes(chain):
    cfg, first, _ = chain
    assert first.summary["resumed"] is False
    again = run_stage(cfg, "evaluate")
    assert again.summary["resumed"] is True and again.metrics == first.metrics
    # another setting: recomputed, and the plot it no longer makes is gone
    other = with_eval(cfg, benchmarks=["retrieval"])
    redo = run_stage(other, "evaluate")
    assert redo.summary["resumed"] is False
    assert {b.split("/")[0] for _, b, _, _ in redo.metrics} == {"retrieval"}
    assert sorted(p.name for p in Paths.of(cfg).plots.glob("*.png")) == ["recall_at_k.png"]
    assert [m for m in first.metrics if m[1].startswith("retrieval/")] == redo.metrics


def test_reference_compat_chain_completes(tmp_path, capsys):
    """``flame --profile tiny --set reference_compat=true run``: the reference code's choices
    (continued facet positions, raw vectors, a 4096-wide projector) through every stage."""
    from flame_pipeline import cli

    data = tmp_path / "compat"
    assert cli.main(["--profile", "tiny", "--set", "reference_compat=true", "--set",
                     f"data_dir={data}", "run"]) == 0
    assert "chain finished" in capsys.readouterr().out
    meta = json.loads((data / "embed" / "meta.json").read_text())
    assert (meta["positions"], meta["postprocess"]) == ("continue", "none")
    flame = json.loads((data / "models" / "flame" / "config.json").read_text())
    assert flame["vision"]["projector_min_width"] == 4096
    assert (data / "eval" / "report.md").is_file()
