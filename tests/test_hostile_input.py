"""Hostile input (issue 17): each case a new user tried that lost data, leaked a file, crashed or
said nothing. Every input row ends kept or rejected with a reason; every bad file or setting
is an error naming it."""
from __future__ import annotations

import fcntl
import io
import json
import os
import tarfile

import polars as pl
import pytest

from download_support import ImageServer, png_bytes, profile
from eval_oracle import OracleVision, oracle_text
from fixtures_train import make_data, one_thread  # noqa: F401 (fixture)
from flame_pipeline import cli
from flame_pipeline.config import ConfigError, ScenesSource, load_profile
from flame_pipeline.data.download import download
from flame_pipeline.data.scenes import generate_scenes
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.files import sha256_tree
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import run_stage
from flame_pipeline.shards import iter_shards
from flame_pipeline.store import ResultsStore

PARAMS = "params.yaml"
CFG = load_profile("tiny", PARAMS)


def manifest(cfg) -> pl.DataFrame:
    return pl.read_parquet(Paths.of(cfg).manifest)


# ---------------------------------------------------------------- URL lists
def test_a_stray_quote_in_a_csv_url_list_rejects_its_line_only(tmp_path):
    with ImageServer() as server:
        lines = [f"{server.base}/good/{i}.png,caption {i}" for i in range(5)]
        lines[2] = f'{server.base}/good/2.png,"a quoted word'
        (tmp_path / "list.csv").write_text("url,caption\n" + "\n".join(lines) + "\n")
        cfg = profile(tmp_path / "data", [{"kind": "url_list", "path": str(tmp_path / "list.csv"),
                                           "retries": 0}])
        out = download(cfg)
    m = manifest(cfg)
    assert m.height == 5 and out.summary["reasons"] == {"malformed row": 1}
    assert m["reason"].to_list() == [None, None, "malformed row", None, None]
    assert m["caption"].to_list() == ["caption 0", "caption 1", None, "caption 3", "caption 4"]
    assert m["source_ref"][2] == lines[2]          # the user sees the line that was refused


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_url_lists_starting_with_a_bom_are_read(tmp_path, suffix, sep):
    with ImageServer() as server:
        path = tmp_path / f"list{suffix}"
        path.write_bytes(f"\ufeffurl{sep}caption\n{server.base}/good/1.png{sep}one\n".encode("utf-8"))
        out = download(profile(tmp_path / "data", [{"kind": "url_list", "path": str(path)}]))
    assert out.rows == {"manifest": 1, "shards": 1}
