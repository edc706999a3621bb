"""Held out means held out: user sources' groups reach the manifest, and curation keeps rows
that share a caption, an image or a group on one side, recorded as metrics in DuckDB."""
from __future__ import annotations

import io
import json
import tarfile

import polars as pl
import pytest

from download_support import png_bytes, profile
from profiles import profile_at
from flame_pipeline.config import ConfigError, UrlListSource
from flame_pipeline.data.curate import curate
from flame_pipeline.data.download import download
from flame_pipeline.data.splits import hash_split
from flame_pipeline.data.urls import read_url_list
from flame_pipeline.paths import Paths
from flame_pipeline.stage import record
from flame_pipeline.store import ResultsStore


def folder_cfg(tmp_path, folder, **source):
    return profile_at(tmp_path / "data", {
        "curate.test_fraction": 0.3, "download.sources": [{"kind": "folder", "path": str(folder), **source}]})


def test_folder_with_each_caption_under_three_images_holds_captions_out(tmp_path):
    folder = tmp_path / "emoji"
    for c in range(40):                       # 40 concepts, each drawn by three designers
        for d in range(3):
            (folder / f"designer{d}").mkdir(parents=True, exist_ok=True)
            (folder / f"designer{d}" / f"{c:03d}.png").write_bytes(png_bytes(100 * c + d, (16, 16)))
            (folder / f"designer{d}" / f"{c:03d}.txt").write_text(f"Concept number {c}")
    cfg = folder_cfg(tmp_path, folder)
    record(cfg, "download", download)
    out = record(cfg, "curate", curate)

    paths = Paths.of(cfg)
    kept = pl.read_parquet(paths.captions)
    assert kept.height == 120
    test, train = kept.filter(pl.col("split") == "test"), kept.filter(pl.col("split") == "train")
    assert test.height > 0 and train.height > 0
    assert not set(test["caption"]) & set(train["caption"])
    assert kept.group_by("caption").agg(pl.col("split").n_unique())["split"].max() == 1
    # splitting image by image (the old rule) would have put some captions on both sides
    sha = pl.read_parquet(paths.manifest, columns=["key", "sha256"])
    by_image = kept.join(sha, on="key").with_columns(
        old=pl.col("sha256").map_elements(lambda s: hash_split(s, 0.3), return_dtype=pl.String))
    assert by_image.group_by("caption").agg(pl.col("old").n_unique())["old"].max() == 2

    metrics = {m: v for _, _, m, v in out.metrics}
    assert metrics["test_rows"] == test.height
    assert metrics["test_caption_in_train"] == metrics["test_image_in_train"] == 0
    stored = ResultsStore(paths.results_db).query(
        "SELECT m.metric, m.value FROM metrics m JOIN runs r USING (run_id) "
        "WHERE r.stage = 'curate' AND m.model = 'data' AND m.benchmark = 'curate'")
    stored = dict(stored.iter_rows())
    assert stored["test_caption_in_train"] == stored["test_image_in_train"] == 0.0
    assert stored["test_rows"] == test.height
    stats = json.loads(paths.curate_stats.read_text())
    assert stats["held_out"]["curate"]["test"] == {"rows": test.height, "caption_in_train": 0,
                                                   "image_in_train": 0}


def test_folder_group_key_from_sidecar_json(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    sidecars = {0: {"product": "p1"}, 1: {"product": "p1"}, 2: {"product": 7}, 3: {"other": "x"},
                4: None, 5: {"product": ["a", "b"]}, 6: b"{not json"}
    for i, side in sidecars.items():
        (folder / f"{i}.png").write_bytes(png_bytes(i, (16, 16)))
        (folder / f"{i}.txt").write_text(f"a product photo {i}")
        if isinstance(side, dict):
            (folder / f"{i}.json").write_text(json.dumps(side))
        elif side is not None:
            (folder / f"{i}.json").write_bytes(side)
    cfg = folder_cfg(tmp_path, folder, group_key="product")
    download(cfg)
    m = pl.read_parquet(Paths.of(cfg).manifest)
    assert m["group"].to_list() == ["p1", "p1", "7", None, None, None, None]
    assert m["reason"].to_list() == [None] * 5 + ["bad group", "bad json"]
    # without group_key the sidecars are not read
    plain = folder_cfg(tmp_path / "plain", folder)
    download(plain)
    assert pl.read_parquet(Paths.of(plain).manifest)["group"].null_count() == 7


def test_webdataset_group_key_from_the_sample_json(tmp_path):
    path = tmp_path / "shard.tar"
    members = [("a.png", png_bytes(1)), ("a.json", {"caption": "one", "concept": "cat"}),
               ("b.png", png_bytes(2)), ("b.txt", b"two"), ("b.json", {"concept": "cat"}),
               ("c.png", png_bytes(3)), ("c.txt", b"three")]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            data = json.dumps(data).encode() if isinstance(data, dict) else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cfg = profile(tmp_path / "data", [{"kind": "webdataset", "paths": [str(path)], "group_key": "concept"}])
    download(cfg)
    m = pl.read_parquet(Paths.of(cfg).manifest)
    assert m.select("caption", "group", "status").rows() == [
        ("one", "cat", "kept"), ("two", "cat", "kept"), ("three", None, "kept")]


def test_url_list_group_column(tmp_path):
    (tmp_path / "list.tsv").write_text("url\tcaption\tsku\nhttp://x/1.png\ta shoe\tS-1\n"
                                       "http://x/2.png\tthe shoe again\tS-1\nhttp://x/3.png\ta hat\t\n")
    src = UrlListSource(path=str(tmp_path / "list.tsv"), group_column="sku")
    assert [row.group for row in read_url_list(src)] == ["S-1", "S-1", None]
    pl.DataFrame({"url": ["http://x/1.png"], "caption": ["a"], "sku": [12]}
                 ).write_parquet(tmp_path / "l.parquet")
    src = UrlListSource(path=str(tmp_path / "l.parquet"), group_column="sku")
    assert [r[:4] for r in read_url_list(src)] == [("http://x/1.png", "a", "12", None)]
    with pytest.raises(ValueError, match=r"needs column\(s\) 'product'; found"):
        read_url_list(UrlListSource(path=str(tmp_path / "list.tsv"), group_column="product"))


def test_user_sources_leave_the_split_to_curation(tmp_path):
    with pytest.raises(ConfigError, match="test_fraction"):
        profile(tmp_path, [{"kind": "folder", "path": str(tmp_path), "test_fraction": 0.2}])
