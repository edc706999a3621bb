"""The DuckDB results store: runs, the artifacts they wrote, and their metrics.

Every write opens the file, runs one transaction and closes it. Processes of the project take
turns on the file through a lock beside it (``results.duckdb.lock``), held from opening to
closing: with DuckDB's own file lock alone, two processes writing 25 runs each on a loaded
machine once lost a row of 50 (tests/test_store.py). A writer that finds DuckDB's lock held by
another program waits and retries as well.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import random
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import duckdb
import polars as pl

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, profile TEXT, stage TEXT, params_hash TEXT, code_version TEXT,
    started_at TIMESTAMP, ended_at TIMESTAMP, status TEXT, message TEXT);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT, stage TEXT, name TEXT, path TEXT, content_hash TEXT, row_count BIGINT,
    created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT, profile TEXT, params_hash TEXT, model TEXT, benchmark TEXT, metric TEXT,
    value DOUBLE, inputs TEXT, created_at TIMESTAMP);
"""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def code_version() -> str:
    """The git commit of the checkout (``-dirty`` when it has changes), else the package version."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               text=True, capture_output=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import version
        return "v" + version("flame-pipeline")


class ResultsStore:
    def __init__(self, path: str | Path, timeout_s: float = 60.0):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute(SCHEMA)

    @contextlib.contextmanager
    def _connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        deadline = time.monotonic() + self.timeout_s
        with open(self.path.with_name(self.path.name + ".lock"), "a") as turn:
            while True:
                try:
                    fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
                    break
                except (BlockingIOError, duckdb.IOException) as err:  # another process's turn
                    fcntl.flock(turn, fcntl.LOCK_UN)
                    if (isinstance(err, duckdb.IOException) and "lock" not in str(err).lower()) \
                            or time.monotonic() > deadline:
                        raise
                    time.sleep(random.uniform(0.01, 0.05))
            try:
                yield con
            finally:
                con.close()
                fcntl.flock(turn, fcntl.LOCK_UN)

    def _write(self, sql: str, rows: list[tuple]) -> None:
        if not rows:
            return
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.executemany(sql, rows)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ writes
    def start_run(self, profile: str, stage: str, params_hash: str) -> str:
        run_id = uuid.uuid4().hex[:16]
        self._write("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, NULL, 'running', NULL)",
                    [(run_id, profile, stage, params_hash, code_version(), _now())])
        return run_id

    def end_run(self, run_id: str, status: str, message: str | None = None) -> None:
        self._write("UPDATE runs SET ended_at = ?, status = ?, message = ? WHERE run_id = ?",
                    [(_now(), status, message, run_id)])

    def abandon_runs(self, stage: str, by: str) -> None:
        """Mark ``stage``'s runs still 'running', other than ``by``, as 'abandoned': ``by`` holds
        the stage's lock, which the kernel dropped when their process died (SIGKILL)."""
        self._write("UPDATE runs SET ended_at = ?, status = 'abandoned', message = ? "
                    "WHERE stage = ? AND status = 'running' AND run_id <> ?",
                    [(_now(), f"killed: run {by} found the stage's lock free", stage, by)])

    def add_artifact(self, run_id: str, stage: str, name: str, path: str | Path,
                     content_hash: str, row_count: int | None = None) -> None:
        self._write("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(run_id, stage, name, str(path), content_hash, row_count, _now())])

    def add_metrics(self, run_id: str, profile: str, params_hash: str,
                    rows: list[tuple[str, str, str, float]], inputs: str = "") -> None:
        """``rows`` are (model, benchmark, metric, value); ``inputs`` names the artifact hashes used."""
        now = _now()
        self._write("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(run_id, profile, params_hash, m, b, k, float(v), inputs, now)
                     for m, b, k, v in rows])

    # ------------------------------------------------------------------ reads
    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        with self._connect(read_only=True) as con:
            return con.sql(sql, params=params).pl()


@contextlib.contextmanager
def recorded_run(store: ResultsStore, profile: str, stage: str, params_hash: str) -> Iterator[str]:
    """Record a run's start, then its end as 'succeeded' or 'failed' with the reason."""
    run_id = store.start_run(profile, stage, params_hash)
    try:
        yield run_id
    except BaseException as err:
        store.end_run(run_id, "failed", f"{type(err).__name__}: {err}")
        raise
    store.end_run(run_id, "succeeded")
