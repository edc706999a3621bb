"""WebDataset tars and image folders: unsafe members, bad captions, every sample accounted for."""
from __future__ import annotations

import io
import json
import tarfile

import polars as pl
import pytest

from download_support import png_bytes, profile
from flame_pipeline.config import FolderSource, WebDatasetSource
from flame_pipeline.data.download import download
from flame_pipeline.data.local import iter_folder, iter_webdataset, unsafe_member_name
from flame_pipeline.shards import iter_shards

# (member name, data or None for a symlink)
MEMBERS = [
    ("good/0001.png", png_bytes(1)), ("good/0001.txt", b"a good caption"),
    ("0002.jpg", None), ("0002.json", json.dumps({"caption": "caption from json"}).encode()),
    ("../evil.png", png_bytes(2)), ("../evil.txt", b"climbs out"),
    ("/abs.png", png_bytes(3)), ("/abs.txt", b"absolute"),
    ("0003.png", png_bytes(4)), ("0003.txt", b"\xff\xfe not utf-8"),
    ("0004.png", png_bytes(5)), ("0004.txt", b" \n"),
    ("0005.txt", b"caption without image"),
    ("0006.png", png_bytes(6)),
    ("0007.png", png_bytes(7)), ("0007.json", b"{not json"),
    ("0008.png", "link"), ("0008.txt", b"a symlink"),
    ("0009.png", png_bytes(9, (200, 200))), ("0009.txt", b"a member over max_bytes"),
]
EXPECTED = [  # key, reason
    ("good/0001", None), ("0002", None), ("../evil", "unsafe tar member path"),
    ("/abs", "unsafe tar member path"), ("0003", "caption not utf-8"), ("0004", "empty caption"),
    ("0005", "missing image"), ("0006", "missing caption"), ("0007", "bad json"),
    ("0008", "unsafe tar member type"), ("0009", "too large"),
]


def jpeg() -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 100, 0)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "shard-000.tar"
    with tarfile.open(path, "w") as tar:
        dir_info = tarfile.TarInfo("somedir")
        dir_info.type = tarfile.DIRTYPE
        tar.addfile(dir_info)
        for name, data in MEMBERS:
            info = tarfile.TarInfo(name)
            if data == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
                continue
            data = jpeg() if data is None else data
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:  # the names really are stored unsafe
        assert {"../evil.png", "/abs.png"} <= set(tar.getnames())
    return path


def test_unsafe_member_name():
    assert unsafe_member_name("../evil.png") and unsafe_member_name("/abs.png")
    assert unsafe_member_name("a/../../b.png") and unsafe_member_name("..\\evil.png")
    assert not unsafe_member_name("a/b..c.png") and not unsafe_member_name("x/0001.png")


def test_webdataset_rows_and_reasons(tmp_path, shard):
    out = download(profile(tmp_path / "data", [{"kind": "webdataset", "paths": [str(shard)],
                                                 "max_bytes": 100_000}], chunk_size=3))
    m = pl.read_parquet(tmp_path / "data/raw/manifest.parquet")
    assert m["key"].to_list() == [f"webdataset/shard-000/{k}" for k, _ in EXPECTED]
    assert m["reason"].to_list() == [r for _, r in EXPECTED]
    assert out.summary["kept"] == 2 and out.summary["rejected"] == 9
    assert m["caption"].to_list()[:2] == ["a good caption", "caption from json"]
    assert {r["key"] for r in iter_shards(tmp_path / "data/raw/shards")} == \
        {"webdataset/shard-000/good/0001", "webdataset/shard-000/0002"}
    # nothing was extracted anywhere
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


def test_webdataset_start_skips_rows(shard):
    src = WebDatasetSource(paths=[str(shard), str(shard)])
    every = list(iter_webdataset(src))
    assert len(every) == 2 * len(EXPECTED)
    later = list(iter_webdataset(src, start=7))
    assert [s.key for s in later] == [s.key for s in every[7:]]
    assert later[5].image == every[12].image


def test_corrupt_tar_is_a_clear_error(tmp_path, shard):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(shard.read_bytes()[:3000] + b"\x01" * 700)
    with pytest.raises(ValueError, match="bad.tar"):
        list(iter_webdataset(WebDatasetSource(paths=[str(bad)])))
    with pytest.raises(FileNotFoundError):
        list(iter_webdataset(WebDatasetSource(paths=[str(tmp_path / "none.tar")])))


def test_folder_rows_and_reasons(tmp_path):
    root = tmp_path / "pics"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(png_bytes(1))
    (root / "a.txt").write_text("a caption for a")
    (root / "sub/b.jpg").write_bytes(jpeg())
    (root / "sub/b.txt").write_text("b in a subfolder")
    (root / "c.png").write_bytes(png_bytes(3))                 # no caption
    (root / "d.txt").write_text("no image")                   # no image
    (root / "e.webp").write_bytes(b"RIFF not really")         # broken image
    (root / "e.txt").write_text("broken")
    (root / "f.png").write_bytes(png_bytes(4))
    (root / "f.txt").write_bytes(b"")                          # empty caption
    (root / "g.png").write_bytes(png_bytes(5, (200, 200)))     # over max_bytes
    (root / "g.txt").write_text("big")
    (root / "notes.md").write_text("not a sample")
    out = download(profile(tmp_path / "data", [{"kind": "folder", "path": str(root), "max_bytes": 100_000}]))
    m = pl.read_parquet(tmp_path / "data/raw/manifest.parquet")
    assert list(zip(m["key"], m["reason"])) == [
        ("folder/pics/a.png", None), ("folder/pics/c.png", "missing caption"),
        ("folder/pics/d.txt", "missing image"), ("folder/pics/e.webp", "not an image"),
        ("folder/pics/f.png", "empty caption"), ("folder/pics/g.png", "too large"),
        ("folder/pics/sub/b.jpg", None)]
    assert out.rows == {"manifest": 7, "shards": 2}
    assert [s.key for s in iter_folder(FolderSource(path=str(root)), start=5)] == \
        ["folder/pics/g.png", "folder/pics/sub/b.jpg"]
