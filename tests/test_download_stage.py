"""The download stage as a whole: accounting invariant, duplicate keys, resume, SIGKILL."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from download_support import ImageServer, png_bytes, profile
from profiles import REPO as ROOT
from flame_pipeline.data.download import DuplicateKeyError, download
from flame_pipeline.files import sha256_tree
from flame_pipeline.paths import Paths
from flame_pipeline.shards import open_shards
from flame_pipeline.stage import record
from flame_pipeline.store import ResultsStore


def folder(tmp_path, n: int, bad: int = 0):
    root = tmp_path / "pics"
    root.mkdir(exist_ok=True)
    for i in range(n):
        (root / f"img{i:03d}.png").write_bytes(png_bytes(i) if i >= bad else b"")
        (root / f"img{i:03d}.txt").write_text(f"picture number {i}")
    return root


def outputs(data_dir) -> tuple[str, str]:
    raw = data_dir / "raw"
    return sha256_tree(raw / "shards"), sha256_tree(raw / "manifest.parquet")


def test_rows_in_equal_kept_plus_rejected_and_the_run_is_recorded(tmp_path):
    root = folder(tmp_path, 10, bad=3)
    cfg = profile(tmp_path / "data", [{"kind": "folder", "path": str(root)},
                                      {"kind": "fashion_mnist", "n_train": 5, "n_test": 2}], chunk_size=4)
    if not os.path.exists("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Debian dataset-fashion-mnist not installed")
    out = record(cfg, "download", download)
    m = pl.read_parquet(Paths.of(cfg).manifest)
    assert m.height == 17 == out.summary["kept"] + out.summary["rejected"]
    assert out.summary["kept"] == 14 and out.summary["reasons"] == {"zero bytes": 3}
    # sources without recaptions say how many kept rows lack them
    none = {"no_short_caption": 7, "no_long_caption": 7}
    assert out.summary["per_source"] == {"fashion_mnist": {"kept": 7, **none},
                                         "folder": {"kept": 7, "rejected": 3, **none}}
    ds = open_shards(Paths.of(cfg).raw_shards)
    assert ds.num_samples == 14
    assert [ds.get_item(i)["key"] for i in range(ds.num_samples)] == \
        m.filter(pl.col("status") == "kept")["key"].to_list()
    assert m.filter(pl.col("status") == "kept")["sha256"].null_count() == 0
    with ResultsStore(Paths.of(cfg).results_db)._connect() as con:
        rows = con.execute("SELECT name, row_count, content_hash FROM artifacts ORDER BY name").fetchall()
    assert rows == [("manifest", 17, out.hashes["manifest"]), ("shards", 14, out.hashes["shards"])]


def test_duplicate_keys_across_sources_are_an_error_and_nothing_is_published(tmp_path):
    root = folder(tmp_path, 3)
    src = {"kind": "folder", "path": str(root)}
    with pytest.raises(DuplicateKeyError, match=r"'folder/pics/img000.png': in source #0 \(folder\) and source #1"):
        download(profile(tmp_path / "data", [src, src]))
    assert not (tmp_path / "data/raw/manifest.parquet").exists()
    assert not (tmp_path / "data/raw/shards").exists()


def test_rerun_skips_finished_chunks_and_ends_identical(tmp_path):
    root = folder(tmp_path, 9, bad=1)
    cfg = profile(tmp_path / "data", [{"kind": "folder", "path": str(root)}], chunk_size=2)
    download(cfg)
    reference = outputs(tmp_path / "data")
    work = next((tmp_path / "data/raw/work/sources").iterdir())
    kept_inode = (work / "chunk-000000/manifest.parquet").stat().st_ino
    # as after a crash: the last chunks and the completion mark are gone, the outputs too
    for name in ("chunk-000003", "chunk-000004", "complete.json"):
        p = work / name
        p.unlink() if p.is_file() else shutil.rmtree(p)
    (tmp_path / "data/raw/manifest.parquet").unlink()
    dead_pid = 2**22 + 1                     # above Linux's pid_max: no such process
    for half_written in (work / f".chunk-000003.{dead_pid}.abc.tmp", tmp_path / f"data/raw/.shards.{dead_pid}.x.tmp"):
        (half_written / "junk").mkdir(parents=True)
    out = download(cfg)
    assert not list(work.glob(".*.tmp")) and not list((tmp_path / "data/raw").glob(".*.tmp"))
    assert outputs(tmp_path / "data") == reference
    assert (work / "chunk-000000/manifest.parquet").stat().st_ino == kept_inode
    assert out.rows == {"manifest": 9, "shards": 8}
    assert download(cfg).rows == out.rows and outputs(tmp_path / "data") == reference


def test_an_edited_folder_is_picked_up(tmp_path):
    root = folder(tmp_path, 3)
    cfg = profile(tmp_path / "data", [{"kind": "folder", "path": str(root)}])
    assert download(cfg).rows == {"manifest": 3, "shards": 3}
    (root / "img000a.png").write_bytes(png_bytes(50))    # sorts between existing files
    (root / "img000a.txt").write_text("a new picture")
    out = download(cfg)
    assert out.rows == {"manifest": 4, "shards": 4}
    assert pl.read_parquet(Paths.of(cfg).manifest)["key"].to_list()[:2] == \
        ["folder/pics/img000.png", "folder/pics/img000a.png"]


def test_no_sources_gives_empty_but_valid_outputs(tmp_path):
    out = download(profile(tmp_path / "data", []))
    assert out.rows == {"manifest": 0, "shards": 0}
    assert pl.read_parquet(tmp_path / "data/raw/manifest.parquet").columns[:2] == ["key", "source"]
    assert json.loads((tmp_path / "data/raw/shards/index.json").read_text())["shards"] == []


def test_a_second_download_on_the_same_data_dir_is_refused(tmp_path):
    import fcntl
    root = folder(tmp_path, 2)
    cfg = profile(tmp_path / "data", [{"kind": "folder", "path": str(root)}])
    lock = tmp_path / "data/raw/work/.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another download is running"):
            download(cfg)
    assert download(cfg).rows == {"manifest": 2, "shards": 2}


def test_scene_generator_resumes_mid_source(tmp_path):
    src = [{"kind": "scenes", "n_train": 7, "n_test": 2, "image_size": 32}]
    cfg = profile(tmp_path / "a", src, chunk_size=3)
    clean = download(cfg)
    work = next((tmp_path / "a/raw/work/sources").iterdir())
    shutil.rmtree(work / "chunk-000002")
    (work / "complete.json").unlink()
    (tmp_path / "a/raw/manifest.parquet").unlink()
    assert download(cfg).rows == clean.rows
    download(profile(tmp_path / "b", src, chunk_size=3))
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")


CHILD = """
import json, sys
from flame_pipeline.config import load_profile
from flame_pipeline.data.download import download
download(load_profile("tiny", sys.argv[1], json.loads(sys.argv[2])))
"""


@pytest.mark.slow  # 23 s measured on a busy 2-core box, mostly the child importing torch (via streaming)
def test_sigkill_half_way_then_rerun_is_byte_identical(tmp_path):
    n = 12
    with ImageServer() as server:
        urls = [f"{server.base}/good/{i}.png?delay=0.2" for i in range(n)] + [f"{server.base}/404.png"]
        lines = ["url\tcaption"] + [f"{u}\tcaption {i}" for i, u in enumerate(urls)]
        (tmp_path / "list.tsv").write_text("\n".join(lines) + "\n")
        sources = [{"kind": "url_list", "path": str(tmp_path / "list.tsv"), "workers": 1, "retries": 0}]
        over = {"data_dir": str(tmp_path / "killed"), "download.sources": sources, "download.chunk_size": 3}
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT / "params.yaml"), json.dumps(over)],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        work = tmp_path / "killed/raw/work/sources"
        deadline = time.monotonic() + 120
        while not list(work.glob("*/chunk-000001")):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never finished two chunks"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        assert not (tmp_path / "killed/raw/manifest.parquet").exists()
        finished = sorted(p.name for p in next(work.iterdir()).glob("chunk-*"))
        assert 2 <= len(finished) < 5
        inode = (next(work.iterdir()) / "chunk-000000/manifest.parquet").stat().st_ino

        resumed = download(profile(tmp_path / "killed", sources, chunk_size=3))
        # rows of finished chunks were fetched once only: neither redone nor refetched
        assert all(server.hits[f"/good/{i}.png"] == 1 for i in range(3 * len(finished)))
        assert sum(server.hits.values()) <= n + 1 + 2   # at most the 2 in flight at the kill again
        assert (next(work.iterdir()) / "chunk-000000/manifest.parquet").stat().st_ino == inode

        clean = download(profile(tmp_path / "clean", sources, chunk_size=3))
    assert outputs(tmp_path / "killed") == outputs(tmp_path / "clean")
    assert resumed.rows == clean.rows == {"manifest": n + 1, "shards": n}
