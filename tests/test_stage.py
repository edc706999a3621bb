from pathlib import Path

from flame_pipeline.files import sha256_tree
from flame_pipeline.stage import StageOutput, record
from flame_pipeline.store import ResultsStore
from profiles import profile_at


def _stage(cfg):
    out = Path(cfg.data_dir) / "thing.txt"
    out.write_text("hello")
    return StageOutput(artifacts={"thing": out}, rows={"thing": 1},
                       metrics=[("flame", "bench", "r1", 42.0)])


def test_record_stores_run_artifact_hash_and_metrics(tmp_path):
    cfg = profile_at(tmp_path)
    out = record(cfg, "demo", _stage)
    store = ResultsStore(tmp_path / "results.duckdb")
    assert store.query("SELECT stage, status, params_hash FROM runs").row(0) == \
        ("demo", "succeeded", cfg.params_hash())
    assert store.query("SELECT name, content_hash, row_count FROM artifacts").row(0) == \
        ("thing", sha256_tree(tmp_path / "thing.txt"), 1)
    assert out.hashes["thing"] == sha256_tree(tmp_path / "thing.txt")
    metric = store.query("SELECT model, benchmark, metric, value, inputs FROM metrics").row(0)
    assert metric[:4] == ("flame", "bench", "r1", 42.0) and metric[4].startswith("thing=")


def test_only_rank_zero_records(tmp_path, monkeypatch):
    cfg = profile_at(tmp_path)
    monkeypatch.setenv("RANK", "1")
    record(cfg, "demo", _stage)
    assert not (tmp_path / "results.duckdb").exists()
    monkeypatch.setenv("RANK", "0")
    record(cfg, "demo", _stage)
    assert ResultsStore(tmp_path / "results.duckdb").query("SELECT count(*) FROM runs").item() == 1
