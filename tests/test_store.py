import multiprocessing as mp

import duckdb
import pytest

from flame_pipeline.store import ResultsStore, recorded_run


def _writer(path: str, tag: str, n: int) -> None:
    store = ResultsStore(path)
    for i in range(n):
        run_id = store.start_run("tiny", f"stage-{tag}", "h")
        store.add_artifact(run_id, "s", f"a{i}", "p", "hash", i)
        store.add_metrics(run_id, "tiny", "h", [("flame", tag, "r1", float(i))])
        store.end_run(run_id, "succeeded")


def test_two_processes_write_at_once_without_loss(tmp_path):
    path = str(tmp_path / "results.duckdb")
    ResultsStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, tag, 25)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = ResultsStore(path)
    runs = store.query("SELECT stage, status, count(*) AS n FROM runs GROUP BY ALL ORDER BY stage")
    assert runs.rows() == [("stage-a", "succeeded", 25), ("stage-b", "succeeded", 25)]
    assert store.query("SELECT count(*) FROM artifacts").item() == 50
    sums = store.query("SELECT benchmark, sum(value) FROM metrics GROUP BY 1 ORDER BY 1").rows()
    assert sums == [("a", 300.0), ("b", 300.0)]  # 0 + 1 + ... + 24 each


def test_recorded_run_marks_failure_with_reason(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    with pytest.raises(RuntimeError):
        with recorded_run(store, "tiny", "train", "h"):
            raise RuntimeError("loss is NaN at step 3")
    row = store.query("SELECT status, message, ended_at IS NOT NULL FROM runs").row(0)
    assert row == ("failed", "RuntimeError: loss is NaN at step 3", True)


def test_transaction_rolls_back_whole_batch(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    run_id = store.start_run("tiny", "evaluate", "h")
    with pytest.raises((duckdb.Error, ValueError, TypeError)):
        store.add_metrics(run_id, "tiny", "h", [("flame", "b", "m1", 1.0), ("flame", "b", "m2", "not a number")])
    assert store.query("SELECT count(*) FROM metrics").item() == 0
