"""The URL-list path against a real HTTP server on 127.0.0.1: every row's exact outcome."""
from __future__ import annotations

import polars as pl
import pytest

from download_support import ImageServer, png_bytes, profile
from flame_pipeline.config import UrlListSource
from flame_pipeline.data.download import download
from flame_pipeline.data.urls import Fetcher, read_url_list
from flame_pipeline.shards import iter_shards

# (path or absolute url, caption bytes, expected reason; None = kept)
ROWS = [
    ("/good/1.png", b"a good image", None),
    ("/404.png", b"a missing image", "http 404"),
    ("/flaky.png", b"fails once then works", None),
    ("/slow.png", b"answers too late", "timeout"),
    ("/empty.png", b"zero bytes", "zero bytes"),
    ("/truncated.png", b"half a png", "truncated or corrupt image"),
    ("/text.png", b"text, not an image", "not an image"),
    ("/bomb.png", b"a decompression bomb", "decompression bomb"),
    ("ftp://127.0.0.1/x.png", b"ftp", "unsupported url scheme"),
    ("file:///etc/passwd", b"a local file", "unsupported url scheme"),
    ("/good/2.png", b"   ", "empty caption"),
    ("/good/3.png", b"caf\xe9 latin-1", "caption not utf-8"),
    ("/always500.png", b"server keeps failing", "http 500"),
    ("", b"no url at all", "missing url"),
    ("/good/4.png", b"another good one", None),
]
RETRIES = 2


def write_list(path, base: str) -> None:
    lines = [b"url\tcaption"]
    for url, caption, _ in ROWS:
        full = url if "://" in url or not url else base + url
        lines.append(full.encode() + b"\t" + caption)
    path.write_bytes(b"\n".join(lines) + b"\n")


def source(path, **kw) -> dict:
    return {"kind": "url_list", "path": str(path), "workers": 4, "timeout_s": 0.8,
            "retries": RETRIES, "backoff_s": 0.01, **kw}


@pytest.fixture
def server():
    with ImageServer(slow_s=2.5) as s:
        yield s


def test_every_row_gets_its_exact_outcome(tmp_path, server):
    write_list(tmp_path / "list.tsv", server.base)
    out = download(profile(tmp_path / "data", [source(tmp_path / "list.tsv")], chunk_size=4))
    m = pl.read_parquet(tmp_path / "data/raw/manifest.parquet")
    assert m["key"].to_list() == [f"url_list/list/{i:08d}" for i in range(len(ROWS))]
    assert m["reason"].to_list() == [r for _, _, r in ROWS]
    assert m["status"].to_list() == ["kept" if r is None else "rejected" for _, _, r in ROWS]
    assert out.summary["kept"] == 3 and out.summary["rejected"] == 12
    assert out.summary["kept"] + out.summary["rejected"] == len(ROWS)
    assert out.summary["reasons"]["unsupported url scheme"] == 2
    # retries: 5xx and timeouts are retried with back-off, a 4xx never
    assert server.hits["/404.png"] == 1
    assert server.hits["/flaky.png"] == 2
    assert server.hits["/always500.png"] == RETRIES + 1
    assert server.hits["/slow.png"] == RETRIES + 1
    # kept rows: their stored PNG is in the shards, fitted into max_side (tiny: 32)
    kept = m.filter(pl.col("status") == "kept")
    assert kept["width"].to_list() == [32, 32, 32] and kept["height"].to_list() == [24, 24, 24]
    shards = {r["key"]: r["image"] for r in iter_shards(tmp_path / "data/raw/shards")}
    assert sorted(shards) == sorted(kept["key"].to_list())
    assert kept["caption"].to_list() == ["a good image", "fails once then works", "another good one"]
    assert m.filter(pl.col("reason") == "caption not utf-8")["caption"].to_list() == ["caf\\xe9 latin-1"]


def test_second_run_fetches_only_what_is_missing(tmp_path, server):
    write_list(tmp_path / "list.tsv", server.base)
    download(profile(tmp_path / "data", [source(tmp_path / "list.tsv")]))
    first = dict(server.hits)
    # a new max_side and a row added to the list redo every chunk, but bodies and 4xx answers
    # come from the byte cache: only the new URL and the transient failures are fetched again
    with open(tmp_path / "list.tsv", "a") as f:
        f.write(f"{server.base}/good/5.png\tone more\n")
    out = download(profile(tmp_path / "data", [source(tmp_path / "list.tsv")], max_side=16))
    again = {p: n - first.get(p, 0) for p, n in server.hits.items() if n != first.get(p, 0)}
    assert again == {"/slow.png": RETRIES + 1, "/always500.png": RETRIES + 1, "/good/5.png": 1}
    m = pl.read_parquet(tmp_path / "data/raw/manifest.parquet")
    assert m.filter(pl.col("status") == "kept")["width"].to_list() == [16, 16, 16, 16]
    assert out.summary["kept"] == 4 and m.height == len(ROWS) + 1


def test_backoff_doubles_between_retries(tmp_path, server):
    src = UrlListSource(path="unused", retries=3, backoff_s=0.05, timeout_s=2.0)
    with Fetcher(src, tmp_path / "cache") as f:
        assert f.fetch(server.base + "/always500.png").reason == "http 500"
    t = server.times["/always500.png"]
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert len(gaps) == 3 and all(g >= 0.05 * 2**i for i, g in enumerate(gaps))
    assert not list((tmp_path / "cache").rglob("*.json"))     # a 5xx is not cached as final


def test_too_large_invalid_urls_and_redirects(tmp_path, server):
    src = UrlListSource(path="unused", max_bytes=100, timeout_s=1.0, retries=0)
    with Fetcher(src, tmp_path / "cache") as f:
        assert f.fetch(server.base + "/good/1.png").reason == "too large"
        assert f.fetch(server.base + "/badgzip.png").reason == "corrupt response"
    with Fetcher(UrlListSource(path="unused", retries=0), tmp_path / "cache2") as f:
        assert f.fetch(server.base + "/moved.png").data == png_bytes(8)
        assert f.fetch(server.base + "/to-ftp.png").reason == "unsupported url scheme"
        assert f.fetch(server.base + "/loop.png").reason == "too many redirects"
        assert f.fetch("http://[not a host").reason == "invalid url"
        assert f.fetch(b"http://\xff").reason == "invalid url"
        assert f.fetch("https:///nohost.png").reason == "invalid url"


def test_read_url_list_formats(tmp_path):
    (tmp_path / "a.csv").write_text('caption,url\n"a, quoted caption",http://x/1.png\nshort\n')
    src = UrlListSource(path=str(tmp_path / "a.csv"))
    assert [r[:4] for r in read_url_list(src)] == [("http://x/1.png", "a, quoted caption", None, None),
                                                   (None, "short", None, None)]
    (tmp_path / "cc3m.tsv").write_bytes(b"a dog\thttp://x/dog.jpg\nbad \xff\thttp://x/2.jpg\n")
    src = UrlListSource(path=str(tmp_path / "cc3m.tsv"), header=False,
                        url_column="column_2", caption_column="column_1")
    assert [r[:4] for r in read_url_list(src)] == [("http://x/dog.jpg", "a dog", None, None),
                                                   ("http://x/2.jpg", b"bad \xff", None, None)]
    pl.DataFrame({"link": ["http://x/3.png"], "text": ["three"]}).write_parquet(tmp_path / "p.parquet")
    src = UrlListSource(path=str(tmp_path / "p.parquet"), url_column="link", caption_column="text")
    assert [r[:4] for r in read_url_list(src)] == [("http://x/3.png", "three", None, None)]
    with pytest.raises(ValueError, match="needs column\\(s\\) 'url', 'caption'"):
        read_url_list(UrlListSource(path=str(tmp_path / "cc3m.tsv")))
    with pytest.raises(FileNotFoundError):
        read_url_list(UrlListSource(path=str(tmp_path / "missing.tsv")))


def test_good_image_bytes_are_cached_verbatim(tmp_path, server):
    src = UrlListSource(path="unused", retries=0)
    with Fetcher(src, tmp_path / "cache") as f:
        got = f.fetch(server.base + "/good/7.png")
        assert got.data == png_bytes(7)
        again = f.fetch(server.base + "/good/7.png")
        assert again.data == png_bytes(7)
    assert server.hits["/good/7.png"] == 1
