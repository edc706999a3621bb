"""Recaptions from every user source: WebDataset json keys, URL-list columns, a folder's sidecar
json, a sidecar table joined on the sample key; missing ones counted per source; the embed
stage's valid counts on the tiny profile."""
from __future__ import annotations

import io
import json
import tarfile

import polars as pl
import pytest

from download_support import ImageServer, png_bytes, profile
from flame_pipeline.data.curate import curate
from flame_pipeline.data.download import download
from flame_pipeline.data.recaptions import RecaptionTableError, read_recaptions
from flame_pipeline.paths import Paths
from flame_pipeline.text.embed import embed
from profiles import profile_at

SHORT = ["A red dot on grey.", "Two green squares.", "A blue ring."]
LONG = ["A small red dot sits in the middle of a plain grey picture.",
        "Two green squares stand side by side on a white ground, the left one larger.",
        "A thin blue ring floats near the top of a dark picture."]


def write_tar(path, samples: list[tuple[str, dict]]) -> None:
    """``samples``: (key, json object); each also gets a PNG."""
    with tarfile.open(path, "w") as tar:
        for i, (key, meta) in enumerate(samples):
            for name, data in ((f"{key}.png", png_bytes(i, (16, 16))),
                               (f"{key}.json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def manifest(cfg) -> pl.DataFrame:
    return pl.read_parquet(Paths.of(cfg).manifest)


def test_webdataset_json_keys_give_the_recaptions(tmp_path):
    path = tmp_path / "shard.tar"
    write_tar(path, [("a", {"caption": "red dot", "short_caption": SHORT[0], "long_caption": LONG[0]}),
                     ("b", {"caption": "squares", "short_caption": SHORT[1]}),
                     ("c", {"caption": "ring", "long_caption": 7})])
    cfg = profile(tmp_path / "data", [{"kind": "webdataset", "paths": [str(path)]}])
    out = download(cfg)
    m = manifest(cfg)
    assert m.select("caption", "short_caption", "long_caption", "reason").rows() == [
        ("red dot", SHORT[0], LONG[0], None), ("squares", SHORT[1], None, None),
        ("ring", None, None, "bad recaption")]
    assert out.summary["per_source"]["webdataset"] == {
        "kept": 2, "rejected": 1, "no_short_caption": 0, "no_long_caption": 1}


def test_url_list_columns_and_a_table_keyed_by_row(tmp_path):
    with ImageServer() as server:
        rows = ["url\tcaption\tshort\tlong"] + [
            f"{server.base}/good/{i}.png\talt {i}\t{s}\t{lg}"
            for i, (s, lg) in enumerate([(SHORT[0], LONG[0]), ("", ""), ("", LONG[2])])]
        (tmp_path / "list.tsv").write_text("\n".join(rows) + "\n")
        # the table fills row 1's short caption; its key is the row number as the key writes it
        table = tmp_path / "recap.jsonl"
        table.write_text(json.dumps({"key": "00000001", "short": SHORT[1]}) + "\n")
        cfg = profile(tmp_path / "data", [{
            "kind": "url_list", "path": str(tmp_path / "list.tsv"), "workers": 2,
            "short_caption_column": "short", "long_caption_column": "long",
            "recaptions": str(table)}])
        download(cfg)
    assert manifest(cfg).select("caption", "short_caption", "long_caption").rows() == [
        ("alt 0", SHORT[0], LONG[0]), ("alt 1", SHORT[1], None), ("alt 2", None, LONG[2])]


def test_folder_sidecar_json_gives_the_recaptions(tmp_path):
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a", "sub/b"]):
        (folder / f"{name}.png").write_bytes(png_bytes(i, (16, 16)))
        (folder / f"{name}.txt").write_text(f"alt {i}")
    (folder / "a.json").write_text(json.dumps({"short_caption": SHORT[0], "long_caption": LONG[0]}))
    cfg = profile(tmp_path / "data", [{"kind": "folder", "path": str(folder)}])
    download(cfg)
    assert manifest(cfg).select("caption", "short_caption", "long_caption").rows() == [
        ("alt 0", SHORT[0], LONG[0]), ("alt 1", None, None)]


@pytest.mark.parametrize("suffix", ["json", "jsonl", "parquet"])
def test_sidecar_table_formats_join_on_the_sample_key(tmp_path, suffix):
    records = [{"__key__": "a", "short": SHORT[0], "long": LONG[0]},
               {"__key__": "b", "short": SHORT[1], "long": None},
               {"__key__": "zz", "short": "no such sample", "long": "none"}]
    table = tmp_path / f"recap.{suffix}"
    if suffix == "json":
        table.write_text(json.dumps({r["__key__"]: {"short": r["short"], "long": r["long"]}
                                     for r in records}))
    elif suffix == "jsonl":
        table.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        pl.DataFrame(records).write_parquet(table)
    assert read_recaptions(table) == {"a": (SHORT[0], LONG[0]), "b": (SHORT[1], None),
                                      "zz": ("no such sample", "none")}
    path = tmp_path / "shard.tar"
    # the table's text replaces the sample's own; where the table has none, the sample's stays
    write_tar(path, [("a", {"caption": "red dot", "short_caption": "its own"}),
                     ("b", {"caption": "squares", "long_caption": LONG[1]}),
                     ("c", {"caption": "ring"})])
    cfg = profile(tmp_path / "data", [{"kind": "webdataset", "paths": [str(path)],
                                       "recaptions": str(table)}])
    download(cfg)
    assert manifest(cfg).select("short_caption", "long_caption").rows() == [
        (SHORT[0], LONG[0]), (SHORT[1], LONG[1]), (None, None)]


@pytest.mark.parametrize("name, text, error", [
    ("r.jsonl", '{"key": "a", "short": "x"}\n{not json\n', "line 2 does not parse"),
    ("r.jsonl", '{"key": "a", "short": "x"}\n{"key": "a", "long": "y"}\n', "key 'a' appears twice"),
    ("r.jsonl", '{"short": "x"}\n', "record 1 has no key"),
    ("r.json", '{"a": {"short": ["x"]}}', "key 'a': 'short' is not a string"),
    ("r.json", '[1, 2]', "expected an object mapping"),
    ("r.csv", "key,short\n", "must be .json, .jsonl or .parquet"),
])
def test_a_bad_table_is_one_clear_error(tmp_path, name, text, error):
    (tmp_path / name).write_text(text)
    with pytest.raises(RecaptionTableError, match=error):
        read_recaptions(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="recaption table"):
        read_recaptions(tmp_path / "missing.json")


def test_editing_the_table_redoes_the_source(tmp_path):
    path, table = tmp_path / "shard.tar", tmp_path / "recap.json"
    write_tar(path, [("a", {"caption": "red dot"})])
    table.write_text(json.dumps({"a": {"short": SHORT[0]}}))
    cfg = profile(tmp_path / "data", [{"kind": "webdataset", "paths": [str(path)],
                                       "recaptions": str(table)}])
    download(cfg)
    table.write_text(json.dumps({"a": {"short": SHORT[1]}}))
    download(cfg)
    assert manifest(cfg)["short_caption"].to_list() == [SHORT[1]]


def recaptioned(tmp_path, from_table: bool) -> tuple:
    """The tiny profile's download -> curate -> embed over one recaptioned WebDataset, its
    recaptions in the samples' json or in a sidecar table."""
    path, table = tmp_path / "shard.tar", tmp_path / "recap.json"
    texts = {k: {"short_caption": s, "long_caption": lg} for k, s, lg in zip("abc", SHORT, LONG)}
    write_tar(path, [(k, {"caption": c, **({} if from_table else texts[k])})
                     for k, c in zip("abc", ["red dot", "squares", "ring"])])
    table.write_text(json.dumps({k: {"short": t["short_caption"], "long": t["long_caption"]}
                                 for k, t in texts.items()}))
    source = {"kind": "webdataset", "paths": [str(path)],
              "recaptions": str(table) if from_table else None}
    cfg = profile_at(tmp_path / "data", {"download.sources": [source], "curate.test_fraction": 0.0})
    download(cfg)
    return curate(cfg), embed(cfg)


@pytest.mark.parametrize("from_table", [False, True])
def test_recaptioned_samples_store_all_eleven_embeddings(tmp_path, from_table):
    cur, out = recaptioned(tmp_path, from_table)
    assert cur.summary["recaptions"] == {"webdataset": {"rows": 3, "no_short_caption": 0,
                                                        "no_long_caption": 0}}
    assert out.summary["valid_min"] == out.summary["valid_mean"] == 11.0
    # the Dagster asset shows them: in its summary and its metrics table (model = the LLM)
    from assets.metadata import stage_metadata
    meta = stage_metadata("tiny", "hash", out, md5s={}, dvc={})
    assert meta["summary/valid_min"].value == meta["summary/valid_mean"].value == 11.0
    assert "| embed | valid_min | 11 |" in meta["metrics"].value
