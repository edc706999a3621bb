"""Curation stage: normalisation, drop reasons, dedupe, splits, token counts, stats, reruns."""
import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from flame_pipeline.config import ConfigError
from flame_pipeline.data.curate import ManifestError, curate
from flame_pipeline.data.splits import hash_split
from flame_pipeline.llm_files import load_tokenizer
from flame_pipeline.paths import Paths
from flame_pipeline.shards import iter_shards, write_shards
from profiles import profile_at

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
DEFAULTS = {"source": "scenes", "source_ref": "gen", "split": "train", "caption": "a red cube",
            "short_caption": None, "long_caption": None, "language": "en", "labels": "{}", "group": None,
            "status": "kept", "reason": None, "n_bytes": 100, "width": 32, "height": 32}


def sha(n) -> str:
    return hashlib.sha256(f"image-{n}".encode()).hexdigest()


def profile(tmp_path, **curate):
    return profile_at(tmp_path, {f"curate.{k}": v for k, v in curate.items()})


def write_manifest(tmp_path, rows: list[dict]) -> pl.DataFrame:
    full = []
    for i, row in enumerate(rows):
        r = DEFAULTS | {"key": f"k{i:04d}", "sha256": sha(i)} | row
        if r["status"] == "rejected":
            r["sha256"] = None
        full.append(r)
    schema = {c: (pl.Int64 if c in ("n_bytes", "width", "height") else pl.String) for c in full[0]}
    return publish(tmp_path, pl.DataFrame(full, schema=schema))


def publish(tmp_path, frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` as the download stage's outputs: the manifest and raw shards of its kept rows."""
    path = Paths(tmp_path).manifest
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    shutil.rmtree(Paths(tmp_path).raw_shards, ignore_errors=True)
    write_shards(Paths(tmp_path).raw_shards, {"key": "str", "image": "bytes"},
                 ({"key": k, "image": f"image of {k}".encode()} for k in
                  frame.filter(pl.col("status") == "kept")["key"]))
    return frame


def run(tmp_path, rows, **curate_cfg):
    write_manifest(tmp_path, rows)
    out = curate(profile(tmp_path, **curate_cfg))
    paths = Paths(tmp_path)
    return out, pl.read_parquet(paths.captions), pl.read_parquet(paths.dropped)


def reasons(dropped: pl.DataFrame) -> dict[str, str]:
    return dict(zip(dropped["key"], dropped["reason"]))


def test_normalises_caption_and_recaptions(tmp_path):
    out, kept, _ = run(tmp_path, [
        {"caption": '  a "red"   cube?', "long_caption": "A red cube.\n  It sits on grass",
         "short_caption": " a  red cube on grass"},
        {"caption": "a blue ball", "long_caption": "  \t ", "short_caption": " "},
    ])
    assert kept["caption"].to_list() == ["a 'red' cube.", "a blue ball."]
    assert kept["short_caption"].to_list() == ["a red cube on grass.", None]
    assert kept["long_caption"].to_list() == ["A red cube. It sits on grass.", None]
    assert kept.columns == ["key", "source", "split", "language", "caption", "short_caption",
                            "long_caption", "labels", "group", "n_tokens", "n_tokens_long", "is_long",
                            "dup_group"]
    # the rows without a recaption are counted per source, in the stats and the stage summary
    counts = {"scenes": {"rows": 2, "no_short_caption": 1, "no_long_caption": 1}}
    assert json.loads(Paths(tmp_path).curate_stats.read_text())["recaptions"] == counts
    assert out.summary["recaptions"] == counts


@pytest.mark.parametrize("row, reason", [
    ({"caption": None}, "empty_caption"),
    ({"caption": " \n "}, "empty_caption"),
    ({"caption": "Image"}, "boilerplate"),
    ({"caption": "untitled"}, "boilerplate"),
    ({"caption": "Stock Photo"}, "boilerplate"),
    ({"caption": "A cat on a mat - click to enlarge"}, "boilerplate"),
    ({"caption": "IMG_1234.jpg"}, "boilerplate"),
    ({"caption": "DSC01234"}, "boilerplate"),
    ({"caption": "my holiday.PNG"}, "boilerplate"),
    ({"caption": "https://example.com/a/b.jpg"}, "boilerplate"),
    ({"caption": "www.example.com"}, "boilerplate"),
    ({"caption": "ab"}, "too_short"),                     # 'ab.' is 3 chars: min_chars 4 below
    ({"caption": "x" * 50}, "too_long"),
    ({"caption": "a red cube", "long_caption": "y" * 50}, "too_long"),
    ({"caption": "a red cube", "short_caption": "y" * 50}, "too_long"),
    ({"caption": "sponsored content here"}, "boilerplate"),  # the profile's own pattern
])
def test_each_drop_reason(tmp_path, row, reason):
    _, kept, dropped = run(tmp_path, [row, {"caption": "a photo of a red cube on grass"}],
                           min_chars=4, max_chars=40, boilerplate_patterns=["^sponsored"])
    assert reasons(dropped) == {"k0000": reason}
    assert dropped["stage"].to_list() == ["curate"]
    assert kept["key"].to_list() == ["k0001"]


@pytest.mark.parametrize("caption", [
    "an image of a cat", "a picture frame on a wall", "stock photo of a dog in snow",
    "IMG of a red cube", "the photo booth", "www is short for world wide web"])
def test_real_captions_are_not_boilerplate(tmp_path, caption):
    _, kept, dropped = run(tmp_path, [{"caption": caption}])
    assert len(kept) == 1 and len(dropped) == 0


def test_boilerplate_detail_names_the_pattern(tmp_path):
    _, _, dropped = run(tmp_path, [{"caption": "Sponsored: a cube"}], boilerplate_patterns=["^sponsored"])
    assert dropped["detail"].to_list() == ["^sponsored"]


def test_invalid_pattern_is_a_clear_error_before_any_output(tmp_path):
    write_manifest(tmp_path, [{}])
    with pytest.raises(ValueError, match=r"curate.boilerplate_patterns\[1\]: invalid regex"):
        curate(profile(tmp_path, boilerplate_patterns=["ok", "(unclosed"]))
    assert not Paths(tmp_path).curated.exists()


def test_exact_duplicates_same_image_and_caption_only(tmp_path):
    _, kept, dropped = run(tmp_path, [
        {"caption": "a red cube", "sha256": sha("A")},
        {"caption": "a red cube.", "sha256": sha("A")},    # same after normalisation: duplicate
        {"caption": "a red cube", "sha256": sha("B")},     # same text, other image: kept
        {"caption": "a green ball", "sha256": sha("A")},   # other text, same image: kept
    ])
    assert reasons(dropped) == {"k0001": "duplicate"}
    assert dropped["detail"].to_list() == ["k0000"]
    assert kept["key"].to_list() == ["k0000", "k0002", "k0003"]
    assert kept["dup_group"].to_list() == ["k0000", "k0002", "k0000"]  # first row showing the image


def test_near_duplicates_on_the_same_image(tmp_path):
    rows = [
        {"caption": "A red cube on the grass", "sha256": sha("A")},
        {"caption": "a red cube, on the grass!!", "sha256": sha("A")},   # canonical text equal
        {"caption": "a red cube on the grass", "sha256": sha("B")},      # other image: kept
        {"caption": "a red cube on green grass", "sha256": sha("A")},    # similar, below 0.9
        {"caption": "12345", "sha256": sha("A")},                        # no letters: never near
        {"caption": "1234!", "sha256": sha("A")},
    ]
    _, kept, dropped = run(tmp_path, rows)
    assert reasons(dropped) == {"k0001": "near_duplicate"}
    assert dropped["detail"].to_list() == ["k0000"]
    assert "k0003" in kept["key"].to_list()
    _, _, dropped = run(tmp_path, rows, near_dup_threshold=0.5)       # a looser threshold
    assert reasons(dropped) == {"k0001": "near_duplicate", "k0003": "near_duplicate"}


def test_dedupe_never_crosses_splits(tmp_path):
    _, kept, dropped = run(tmp_path, [
        {"caption": "a red cube", "sha256": sha("A"), "split": "train"},
        {"caption": "a red cube", "sha256": sha("A"), "split": "test"},
        {"caption": "a red cube!", "sha256": sha("A"), "split": "test"},
    ])
    assert kept["key"].to_list() == ["k0000", "k0001"]
    assert reasons(dropped) == {"k0002": "near_duplicate"}
    assert dropped["detail"].to_list() == ["k0001"]  # the test row, never the train row


def test_split_assignment_is_stable_grouped_and_disjoint(tmp_path):
    rows = [{"split": None, "caption": f"object number {i}"} for i in range(300)]
    rows += [{"split": None, "group": "scene-7", "caption": f"scene seven variant {c}"} for c in "abcd"]
    rows += [{"split": "test", "caption": "a held out scene"}, {"split": "train", "caption": "a train scene"}]
    manifest = write_manifest(tmp_path, rows)
    cfg = profile(tmp_path, test_fraction=0.25)
    curate(cfg)
    kept = pl.read_parquet(Paths(tmp_path).captions)
    assert kept["split"].null_count() == 0 and set(kept["split"]) == {"train", "test"}
    # a unit is named by its smallest key: the group's first row, else the row itself
    units = manifest.select("key", unit=pl.col("key").min().over(pl.coalesce("group", "key")), given="split")
    want = {k: g or hash_split(u, 0.25) for k, u, g in units.iter_rows()}
    assert dict(zip(kept["key"], kept["split"])) == want
    assert kept.filter(pl.col("group") == "scene-7")["split"].n_unique() == 1  # a group stays together
    n_test = kept.filter(pl.col("group").is_null() & pl.col("key").is_in([f"k{i:04d}" for i in range(300)])
                         & (pl.col("split") == "test")).height
    assert 50 <= n_test <= 100                                               # ~25% of 300
    assert kept.filter(pl.col("key") == "k0304")["split"].to_list() == ["test"]  # source split kept
    assert kept["key"].is_unique().all()
    # the same rows in another order: the same splits
    publish(tmp_path, manifest.sample(fraction=1.0, shuffle=True, seed=3))
    curate(cfg)
    again = pl.read_parquet(Paths(tmp_path).captions)
    assert dict(zip(again["key"], again["split"])) == want


def _chains(n: int) -> list[dict]:
    """``n`` chains image A - caption X - image B - caption Y - image C: four rows each, linked
    only through a shared image or a caption that differs in case and punctuation."""
    rows = []
    for c in range(n):
        a, b, cc = sha(f"A{c}"), sha(f"B{c}"), sha(f"C{c}")
        rows += [{"split": None, "sha256": a, "caption": f"chain {c} caption x"},
                 {"split": None, "sha256": b, "caption": f"Chain {c}: caption X!"},
                 {"split": None, "sha256": b, "caption": f"chain {c} caption y"},
                 {"split": None, "sha256": cc, "caption": f"CHAIN {c} CAPTION Y"}]
    return rows


def test_a_chain_of_shared_images_and_captions_is_one_unit(tmp_path):
    out, kept, dropped = run(tmp_path, _chains(24), test_fraction=0.5)
    assert len(dropped) == 0 and len(kept) == 96
    chains = kept.with_columns(chain=pl.col("caption").str.extract(r"(?i)chain (\d+)"))
    per_chain = chains.group_by("chain").agg(pl.col("split").unique())
    assert all(len(s) == 1 for s in per_chain["split"])               # all four rows on one side
    sides = {s[0] for s in per_chain["split"]}
    assert sides == {"train", "test"}                                  # and chains on both sides
    # each chain is drawn as one unit named by its first key; row by row they would scatter
    firsts = chains.group_by("chain").agg(pl.col("key").min(), pl.col("split").first())
    assert all(hash_split(k, 0.5) == s for k, s in firsts.select("key", "split").iter_rows())
    assert any(len({hash_split(k, 0.5) for k in keys}) > 1
               for keys in chains.group_by("chain").agg("key")["key"])
    metrics = {m: v for _, _, m, v in out.metrics}
    assert metrics["test_rows"] > 0
    assert metrics["test_caption_in_train"] == metrics["test_image_in_train"] == 0


def test_a_user_named_group_keeps_different_images_and_captions_together(tmp_path):
    rows = [{"split": None, "group": f"product-{i % 10}", "caption": f"photo {i} of a thing"}
            for i in range(60)]                                         # unique images and captions
    _, kept, _ = run(tmp_path, rows, test_fraction=0.5)
    per_group = kept.group_by("group").agg(pl.col("split").n_unique().alias("n"), pl.col("split").first())
    assert per_group["n"].to_list() == [1] * 10
    assert set(per_group["split"]) == {"train", "test"}


def test_rows_follow_the_split_their_source_set_for_a_shared_caption_or_image(tmp_path):
    rows = [{"split": "test", "caption": "a photo of a sandal", "sha256": sha("s1")},   # k0000
            {"split": "train", "caption": "a photo of a boot", "sha256": sha("b1")},    # k0001
            {"split": "test", "caption": "a photo of a boot", "sha256": sha("b2")},     # k0002
            {"split": None, "caption": "A photo of a sandal!", "sha256": sha("u1")},    # k0003: test
            {"split": None, "caption": "a photo of a boot", "sha256": sha("u2")},       # k0004: train
            {"split": None, "caption": "a photo of a hat", "sha256": sha("s1")}]        # k0005: test
    out, kept, _ = run(tmp_path, rows, test_fraction=1.0)      # on its own, every unit is test
    assert dict(zip(kept["key"], kept["split"])) == {
        "k0000": "test", "k0001": "train", "k0002": "test", "k0003": "test", "k0004": "train",
        "k0005": "test"}
    metrics = {m: v for _, _, m, v in out.metrics}
    assert (metrics["test_rows"], metrics["test_caption_in_train"],
            metrics["test_image_in_train"]) == (2, 0, 0)
    # the source's own test row with a training caption is reported, apart
    assert (metrics["source_test_rows"], metrics["source_test_caption_in_train"]) == (2, 1)


def test_validation_split_by_the_same_rule(tmp_path):
    rows = _chains(60) + [{"split": "val", "caption": "a scene the source set aside"}]
    out, kept, _ = run(tmp_path, rows, test_fraction=0.2, val_fraction=0.3)
    counts = dict(kept.group_by("split").len().iter_rows())
    # whole chains of four rows (plus the source's val row), about the asked fractions of 60 chains
    assert counts["train"] % 4 == counts["test"] % 4 == (counts["val"] - 1) % 4 == 0
    assert 0.15 < (counts["val"] - 1) / 240 < 0.45 and 0.08 < counts["test"] / 240 < 0.35
    chains = kept.with_columns(chain=pl.col("caption").str.extract(r"(?i)chain (\d+)")).drop_nulls("chain")
    assert chains.group_by("chain").agg(pl.col("split").n_unique())["split"].max() == 1
    metrics = {m: v for _, _, m, v in out.metrics}
    assert metrics["val_caption_in_train"] == metrics["val_image_in_train"] == 0
    assert metrics["source_val_rows"] == 1
    stats = json.loads(Paths(tmp_path).curate_stats.read_text())
    assert stats["per_split"] == counts and stats["held_out"]["curate"]["val"]["rows"] == counts["val"] - 1
    _, kept, _ = run(tmp_path, _chains(60), test_fraction=0.2)        # val_fraction 0: no val
    assert set(kept["split"]) == {"train", "test"}


def test_fractions_over_one_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="curate: .*test_fraction \\+ val_fraction = 1.2 is more than 1"):
        profile(tmp_path, test_fraction=0.5, val_fraction=0.7)


def test_every_kept_row_is_accounted_for(tmp_path):
    rows = [{"caption": c, "sha256": sha(i % 5)} for i, c in enumerate(
        ["a cube", "a cube", "image", None, "a ball", "a ball!", "x", "a tree", "a tree", "a house"] * 6)]
    rows += [{"status": "rejected", "reason": "decode_error", "caption": "a cube"},
             {"status": "rejected", "reason": "http_404", "caption": None}]
    manifest = write_manifest(tmp_path, rows)
    out = curate(profile(tmp_path))
    kept = pl.read_parquet(Paths(tmp_path).captions)
    dropped = pl.read_parquet(Paths(tmp_path).dropped)
    manifest_kept = manifest.filter(pl.col("status") == "kept")["key"]
    assert len(kept) + len(dropped) == len(manifest_kept) == 60
    assert set(kept["key"]) | set(dropped["key"]) == set(manifest_kept)
    assert not set(kept["key"]) & set(dropped["key"])
    assert out.rows == {"captions": len(kept), "dropped": len(dropped)}
    assert dropped["reason"].null_count() == 0
    # the train shards: the train rows in the captions table's order, each with its own image
    train = kept.filter(pl.col("split") == "train")
    packed = list(iter_shards(Paths(tmp_path).train_shards))
    assert [r["key"] for r in packed] == train["key"].to_list() and len(packed) > 0
    assert all(r["image"] == f"image of {r['key']}".encode() for r in packed)
    assert [r["caption"] for r in packed] == train["caption"].to_list()
    assert [r["long_caption"] for r in packed] == train["long_caption"].fill_null("").to_list()


def test_raw_shards_out_of_step_with_the_manifest_are_a_clear_error(tmp_path):
    frame = write_manifest(tmp_path, [{"caption": f"a thing {i}"} for i in range(4)])
    frame.reverse().write_parquet(Paths(tmp_path).manifest)
    with pytest.raises(ManifestError, match=r"raw/shards does not match .*manifest.parquet: kept row"
                                            r" 'k0003' is not at raw row 0 \(re-run the download stage\)"):
        curate(profile(tmp_path))


def test_token_counts_equal_the_tokenizer(tmp_path):
    long = "A red cube sits on the left of a small blue ball. " * 12
    cfg = profile(tmp_path, long_tokens=77)
    write_manifest(tmp_path, [{"caption": "a red cube"}, {"caption": "Ein roter Würfel", "long_caption": long},
                              {"caption": "a cube", "long_caption": "A cube. It is red."}])
    curate(cfg)
    kept = pl.read_parquet(Paths(tmp_path).captions)
    tok = load_tokenizer(cfg.embed)
    count = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert kept["n_tokens"].to_list() == [count(c) for c in kept["caption"]]
    assert kept["n_tokens"][0] == 4                  # SmolLM2: "a", " red", " cube", "."
    assert kept["n_tokens_long"].to_list() == [None, count(kept["long_caption"][1]), count("A cube. It is red.")]
    assert kept["is_long"].to_list() == [False, True, False]
    assert kept["n_tokens_long"][1] > 77 > kept["n_tokens_long"][2]


def test_stats_json(tmp_path):
    rows = [{"caption": "a red cube", "language": "en", "source": "scenes"},
            {"caption": "ein roter Würfel", "language": "de", "source": "scenes", "split": "test"},
            {"caption": "a sneaker", "language": "en", "source": "fashion_mnist",
             "long_caption": "A white sneaker. " * 30},
            {"caption": "image", "source": "fashion_mnist"},
            {"status": "rejected", "reason": "truncated_image"},
            {"status": "rejected", "reason": "truncated_image"},
            {"status": "rejected", "reason": "empty_caption"}]
    run(tmp_path, rows)
    stats = json.loads(Paths(tmp_path).curate_stats.read_text())
    assert stats["manifest_rows"] == 7
    assert stats["download"] == {"kept": 4, "rejected": 3}
    assert stats["curated"] == 3 and stats["dropped"] == 1
    assert stats["rejection_reasons"] == {"download": {"empty_caption": 1, "truncated_image": 2},
                                          "curate": {"boilerplate": 1}}
    assert stats["per_language"] == {"de": 1, "en": 2}
    assert stats["per_source"] == {"fashion_mnist": 1, "scenes": 2}
    assert stats["per_split"] == {"test": 1, "train": 2}
    assert stats["per_split_language"] == {"test": {"de": 1}, "train": {"en": 2}}
    assert stats["long"] == {"long_tokens": 77, "with_long_caption": 1, "is_long": 1}
    hist = stats["token_histogram"]["caption"]
    assert hist["n"] == 3 and sum(hist["counts"]) == 3
    assert len(hist["counts"]) == len(hist["bin_edges"])           # last bin is open-ended
    assert stats["token_histogram"]["long_caption"]["n"] == 1
    assert (Paths(tmp_path).curated / "token_lengths.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_gives_identical_bytes_and_skips_finished_work(tmp_path):
    rows = [{"caption": f"a cube number {i % 7}", "sha256": sha(i % 9), "split": None,
             "long_caption": "A cube. " * (i % 20)} for i in range(80)]
    write_manifest(tmp_path, rows)
    cfg = profile(tmp_path)
    paths = Paths(tmp_path)
    first = curate(cfg)
    files = [paths.captions, paths.dropped, paths.curate_stats, paths.curated / "token_lengths.png"]
    snap = {f: f.read_bytes() for f in files}
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    again = curate(cfg)
    assert again.summary["resumed"] and not first.summary["resumed"]
    assert again.metrics == first.metrics and len(first.metrics) == 12
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes        # nothing rewritten
    # a run killed before its last write (stats.json) is redone, with the same bytes
    paths.curate_stats.unlink()
    paths.dropped.write_bytes(b"half written")
    assert not curate(cfg).summary["resumed"]
    assert {f: f.read_bytes() for f in files} == snap


def test_changed_params_are_not_skipped(tmp_path):
    write_manifest(tmp_path, [{"caption": "abcd"}, {"caption": "a longer caption"}])
    curate(profile(tmp_path, min_chars=3))
    out = curate(profile(tmp_path, min_chars=10))
    assert not out.summary["resumed"] and out.rows == {"captions": 1, "dropped": 1}


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop("sha256"), r"missing column\(s\) \['sha256'\]"),
    (lambda f: pl.concat([f, f.head(1)]), "keys must be unique"),
    (lambda f: f.with_columns(status=pl.lit("maybe")), "status must be kept/rejected"),
    (lambda f: f.with_columns(split=pl.lit("dev")), "split must be train/test/val/null"),
    (lambda f: f.with_columns(sha256=pl.lit(None, pl.String)), "has no image sha256"),
    (lambda f: f.with_columns(caption=pl.lit(1)), "column 'caption' is Int32"),
])
def test_bad_manifest_is_a_clear_error(tmp_path, change, message):
    frame = write_manifest(tmp_path, [{}, {}])
    change(frame).write_parquet(Paths(tmp_path).manifest)
    with pytest.raises(ManifestError, match=message):
        curate(profile(tmp_path))
    assert not Paths(tmp_path).curated.exists()


def test_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the download stage first"):
        curate(profile(tmp_path))


def test_manifest_with_no_kept_rows(tmp_path):
    out, kept, dropped = run(tmp_path, [{"status": "rejected", "reason": "http_404", "caption": None}])
    assert len(kept) == len(dropped) == 0 and out.rows == {"captions": 0, "dropped": 0}
    stats = json.loads(Paths(tmp_path).curate_stats.read_text())
    assert stats["rejection_reasons"]["download"] == {"http_404": 1}
    assert stats["token_histogram"]["caption"]["n"] == 0


@pytest.mark.slow
def test_sigkill_midway_then_rerun_gives_the_same_files(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    rows = [{"caption": f"a cube number {i % 97}", "sha256": sha(i % 301), "split": None,
             "long_caption": "A cube on grass. " * (i % 9)} for i in range(3000)]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for root in (whole, killed):
        write_manifest(root, rows)
    curate(profile(whole))
    script = (f"from flame_pipeline.config import load_profile; from flame_pipeline.data.curate import curate; "
              f"curate(load_profile('tiny', {str(PARAMS)!r}, {{'data_dir': {str(killed)!r}}}))")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=PARAMS.parent)
    deadline = time.monotonic() + 120
    while not Paths(killed).captions.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)   # after the first output, before the completion marker
    assert proc.wait() == -signal.SIGKILL and not Paths(killed).curate_stats.exists()
    assert not curate(profile(killed)).summary["resumed"]
    names = ["captions.parquet", "dropped.parquet", "token_lengths.png", "stats.json"]
    assert {n: (killed / "curated" / n).read_bytes() for n in names} == \
           {n: (whole / "curated" / n).read_bytes() for n in names}
