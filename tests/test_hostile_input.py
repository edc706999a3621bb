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
from flame_pipeline import cli
from flame_pipeline.config import ConfigError, ScenesSource, load_profile
from flame_pipeline.data.download import download
from flame_pipeline.data.scenes import generate_scenes
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.manifest import read_manifest
from flame_pipeline.eval.registry import MIN_GALLERY, Suite, run_suite, warnings
from flame_pipeline.eval.user_benchmark import spec_for
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


# ---------------------------------------------------------------- folders and tars
def test_folder_refuses_links_out_of_the_folder(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the machine's host name")
    (tmp_path / "outside.png").write_bytes(png_bytes(9))
    root = tmp_path / "pics"
    (root / "notes").mkdir(parents=True)
    (root / "a.png").write_bytes(png_bytes(1))
    os.symlink(secret, root / "a.txt")                       # a caption linked from outside
    os.symlink(tmp_path / "outside.png", root / "b.png")     # an image linked from outside
    (root / "b.txt").write_text("an outside image")
    (root / "c.png").write_bytes(png_bytes(3))
    (root / "notes/c.caption").write_text("a caption kept in a sub-folder")
    os.symlink(root / "notes/c.caption", root / "c.txt")     # a link inside the folder is fine
    cfg = profile(tmp_path / "data", [{"kind": "folder", "path": str(root)}])
    download(cfg)
    m = manifest(cfg)
    assert list(zip(m["key"], m["reason"])) == [
        ("folder/pics/a.png", "link outside folder"), ("folder/pics/b.png", "link outside folder"),
        ("folder/pics/c.png", None)]
    assert m["caption"].to_list() == [None, None, "a caption kept in a sub-folder"]
    assert [r["key"] for r in iter_shards(Paths.of(cfg).raw_shards)] == ["folder/pics/c.png"]


def write_tar(path, members: list[tuple[str, bytes]]):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_webdataset_keys_are_unique_per_shard_path_and_duplicates_are_rows(tmp_path):
    a = write_tar(tmp_path / "a/00000.tar", [("0001.png", png_bytes(1)), ("0001.txt", b"from a")])
    b = write_tar(tmp_path / "b/00000.tar", [("0001.png", png_bytes(2)), ("0001.txt", b"from b"),
                                             ("0002.png", png_bytes(3)), ("0002.txt", b"two"),
                                             ("0001.png", png_bytes(4)), ("0001.txt", b"again")])
    cfg = profile(tmp_path / "data", [{"kind": "webdataset", "paths": [str(a), str(b), str(a)]}])
    out = download(cfg)
    m = manifest(cfg)
    assert list(zip(m["key"], m["reason"])) == [
        ("webdataset/a/00000/0001", None), ("webdataset/b/00000/0001", None),
        ("webdataset/b/00000/0002", None),
        ("webdataset/b/00000/0001#2", "duplicate key"),     # the same key later in the same tar
        ("webdataset/a/00000/0001#2", "duplicate key")]     # the same tar listed twice
    assert m["source_ref"][3] == f"{b}:0001.png (duplicate of {b}:0001)"
    assert m["source_ref"][4] == f"{a}:0001.png (duplicate of {a}:0001)"
    assert out.rows == {"manifest": 5, "shards": 3}
    # a tar whose stem no other tar shares keeps the short key
    c = write_tar(tmp_path / "c/solo.tar", [("0001.png", png_bytes(5)), ("0001.txt", b"solo")])
    cfg = profile(tmp_path / "data2", [{"kind": "webdataset", "paths": [str(a), str(c)]}])
    download(cfg)
    assert manifest(cfg)["key"].to_list() == ["webdataset/00000/0001", "webdataset/solo/0001"]


def test_a_repeated_member_in_one_webdataset_sample_rejects_it(tmp_path):
    t = write_tar(tmp_path / "s.tar", [("0001.png", png_bytes(1)), ("0001.txt", b"first"),
                                       ("0001.txt", b"second"), ("0002.png", png_bytes(2)),
                                       ("0002.txt", b"fine")])
    cfg = profile(tmp_path / "data", [{"kind": "webdataset", "paths": [str(t)]}])
    download(cfg)
    m = manifest(cfg)
    assert list(zip(m["key"], m["reason"])) == [("webdataset/s/0001", "duplicate tar member"),
                                                ("webdataset/s/0002", None)]


# ---------------------------------------------------------------- flame benchmark manifests
SCENES = list(generate_scenes(ScenesSource(n_train=0, n_test=MIN_GALLERY, image_size=32,
                                           languages=["en"], hard_negatives=False), seed=1))


def bench_folder(tmp_path, n: int):
    rows = []
    for s in SCENES[:n]:
        name = f"{s.key.split('/')[-1]}.png"
        (tmp_path / name).write_bytes(s.image)
        rows.append({"image": name, "text": s.caption})
    return rows


def oracle(tmp_path, rows):
    vision = OracleVision([((tmp_path / r["image"]).read_bytes(), r["text"]) for r in rows],
                          CFG.vision.image_size)
    return EvalModel("oracle", vision.encode_image, vision.pooled_features,
                     lambda t, s: oracle_text(t), CFG.vision.image_size, batch_size=4)


def test_unknown_manifest_columns_are_an_error_naming_them(tmp_path):
    (tmp_path / "m.csv").write_text("image,text,lang\na.png,ein Hund,de\n")
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['lang'\]; expected image, text, "
                                         r"language, label"):
        read_manifest(tmp_path / "m.csv")


def test_a_non_string_language_rejects_its_row(tmp_path):
    rows = bench_folder(tmp_path, 3)
    frame = pl.DataFrame({"image": [r["image"] for r in rows], "text": [r["text"] for r in rows],
                          "language": [7, None, 7]})
    frame.write_parquet(tmp_path / "m.parquet")
    got = read_manifest(tmp_path / "m.parquet")
    assert [(n, r) for n, r, _ in got.problems] == [(1, "bad_language"), (3, "bad_language")]
    assert [(r.number, r.language) for r in got.rows] == [(2, "en")]


def test_a_csv_manifest_starting_with_a_bom_is_read(tmp_path):
    rows = bench_folder(tmp_path, 2)
    pl.DataFrame(rows).write_csv(tmp_path / "m.csv", include_bom=True)
    assert (tmp_path / "m.csv").read_bytes().startswith(b"\xef\xbb\xbfimage,")
    assert [r.text for r in read_manifest(tmp_path / "m.csv").rows] == [r["text"] for r in rows]


@pytest.mark.parametrize("name, content", [("empty.csv", ""), ("header.csv", "image,text\n"),
                                           ("empty.jsonl", "\n"), ("bad.csv", "image,text\nnope.png,x\n")])
def test_a_manifest_without_usable_rows_is_an_error(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match="no usable rows"):
        read_manifest(tmp_path / name)


def test_a_small_gallery_is_warned_about(tmp_path):
    rows = bench_folder(tmp_path, MIN_GALLERY)
    pl.DataFrame(rows[:1]).write_csv(tmp_path / "one.csv")
    pl.DataFrame(rows).write_csv(tmp_path / "all.csv")
    def scores(name):
        spec, suite = spec_for(tmp_path / name), Suite(CFG)
        suite.load(spec, tmp_path / name)
        return run_suite(suite, oracle(tmp_path, rows), [spec])
    one = scores("one.csv")
    assert one["manifest/one/retrieval/en"]["i2t_R@1"] == 100.0          # what a gallery of one gives
    assert warnings(one) == [f"manifest/one/retrieval/en: a gallery of 1 image (under {MIN_GALLERY}): "
                             "recall is not meaningful (R@1 by chance: 100%)"]
    full = scores("all.csv")
    assert warnings(full) == [] and full["manifest/all/retrieval/en"]["n_images"] == MIN_GALLERY


# ---------------------------------------------------------------- config
def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("common:\n  train: {steps: [1, 2}\nprofiles: {}\n")
    with pytest.raises(ConfigError, match=rf"{bad}: line 2, column 23: YAML syntax error"):
        load_profile("tiny", bad)
    with pytest.raises(ConfigError, match=r"override 'train.steps=\[1': line 1, column 3: "
                                          r"YAML syntax error"):
        load_profile("tiny", PARAMS, ["train.steps=[1"])


@pytest.mark.parametrize("override, key", [
    ("train.lr=.inf", "train.lr"), ("train.lr=.nan", "train.lr"),
    ("train.logit_scale_init=.inf", "train.logit_scale_init"),
    ("train.logit_bias_init=.nan", "train.logit_bias_init"),
    ("curate.near_dup_threshold=.nan", "curate.near_dup_threshold"),
    ("download.sources=[{kind: url_list, path: x, timeout_s: .inf}]", "download.sources.0.url_list.timeout_s"),
])
def test_infinite_and_nan_settings_are_refused(override, key):
    with pytest.raises(ConfigError, match="finite") as err:
        load_profile("tiny", PARAMS, [override])
    assert key in str(err.value)


# ---------------------------------------------------------------- runs, reruns, the CLI
def runs(cfg) -> list[tuple[str, str]]:
    return ResultsStore(Paths.of(cfg).results_db).query(
        "SELECT run_id, status FROM runs ORDER BY started_at").rows()


def test_a_killed_download_run_is_marked_abandoned_once_its_lock_is_free(tmp_path):
    root = tmp_path / "pics"
    root.mkdir()
    (root / "a.png").write_bytes(png_bytes(1))
    (root / "a.txt").write_text("a picture")
    cfg = profile(tmp_path / "data", [{"kind": "folder", "path": str(root)}])
    # what SIGKILL leaves: the run's row says 'running' and the kernel has dropped its flock
    killed = ResultsStore(Paths.of(cfg).results_db).start_run(cfg.name, "download", cfg.params_hash())
    lock = Paths.of(cfg).download_work / ".lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:                 # while a live download holds the lock ...
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another download is running"):
            run_stage(cfg, "download")
    assert [s for _, s in runs(cfg)] == ["running", "failed"]      # ... its run is not touched
    run_stage(cfg, "download")
    assert runs(cfg)[0] == (killed, "abandoned")
    assert [s for _, s in runs(cfg)] == ["abandoned", "failed", "succeeded"]
    message = ResultsStore(Paths.of(cfg).results_db).query(
        "SELECT message FROM runs WHERE run_id = ?", [killed]).item()
    assert "lock" in message


@pytest.mark.usefixtures("one_thread")
def test_a_killed_training_run_is_marked_abandoned(tmp_path, make_data):
    cfg = make_data(tmp_path)
    store = ResultsStore(Paths.of(cfg).results_db)
    killed = store.start_run(cfg.name, "train", cfg.params_hash())
    other = store.start_run(cfg.name, "train_baseline", cfg.params_hash())   # another lock
    run_stage(cfg, "train")
    status = dict(runs(cfg))
    assert (status.pop(killed), status.pop(other)) == ("abandoned", "running")
    assert list(status.values()) == ["succeeded"]


@pytest.mark.usefixtures("one_thread")
def test_a_rerun_of_a_finished_baseline_is_byte_identical(tmp_path, make_data):
    cfg = make_data(tmp_path)
    first = run_stage(cfg, "train_baseline").hashes["model"]
    tokenizer = (Paths.of(cfg).clip_model / "tokenizer/tokenizer.json").read_bytes()
    again = run_stage(cfg, "train_baseline")
    assert again.summary["resumed_from"] == cfg.train.steps
    assert (Paths.of(cfg).clip_model / "tokenizer/tokenizer.json").read_bytes() == tokenizer
    assert again.hashes["model"] == first


def test_the_download_line_counts_rejected_rows_by_reason(tmp_path, capsys):
    root = tmp_path / "pics"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.png").write_bytes(png_bytes(i) if i else b"")
        if i != 3:
            (root / f"{i}.txt").write_text(f"picture {i}")
    sources = json.dumps([{"kind": "folder", "path": str(root)}])
    assert cli.main(["--profile", "tiny", "--set", f"data_dir={tmp_path / 'data'}",
                     "--set", f"download.sources={sources}", "download"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("[download] done: manifest=4, shards=2, "
                           "rejected=2 (missing caption: 1, zero bytes: 1), ")


@pytest.mark.usefixtures("one_thread")
def test_flame_benchmark_warns_on_a_small_gallery_and_refuses_an_empty_manifest(tmp_path, capsys, make_data):
    cfg = make_data(tmp_path / "data")
    run_stage(cfg, "train_baseline")
    capsys.readouterr()                      # training's progress lines
    rows = bench_folder(tmp_path, 1)
    pl.DataFrame(rows).write_csv(tmp_path / "one.csv")
    (tmp_path / "empty.csv").write_text("image,text\n")
    args = ["--profile", "tiny", "--set", f"data_dir={tmp_path / 'data'}", "benchmark", "--model", "clip",
            "--json"]
    assert cli.main(args + [str(tmp_path / "one.csv")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["warnings"] == [f"manifest/one/retrieval/en: a gallery of 1 image (under "
                                           f"{MIN_GALLERY}): recall is not meaningful (R@1 by chance: 100%)"]
    assert err.splitlines()[-1].startswith(
        f"flame: warning: manifest/one/retrieval/en: a gallery of 1 image (under {MIN_GALLERY})")
    assert cli.main(args + [str(tmp_path / "empty.csv")]) == 1
    assert capsys.readouterr().err == f"flame: error: ValueError: {tmp_path / 'empty.csv'}: no usable rows (0 read)\n"
