"""The embed stage: outputs for every row, the content cache (float16), resume, bad input,
TextEncoder, the stage's row chunks and its per-rank parts under torchrun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from flame_pipeline.config import load_profile
from flame_pipeline.files import sha256_tree, write_parquet
from flame_pipeline.paths import Paths
from flame_pipeline.shards import iter_shards, open_shards, shard_problems
from flame_pipeline.text import cache as cache_module, embed as embed_module
from flame_pipeline.text.cache import EmbeddingCache, content_hash
from flame_pipeline.text.embed import embed
from flame_pipeline.text.encoder import TextEncoder
from flame_pipeline.text.postprocess import Postprocess, whitening_matrix
from flame_pipeline.text.facets import facet_embeddings
from flame_pipeline.text.llm import load_llm
from flame_pipeline.text.prompts import EmptyCaptionError, PromptBuilder, PromptTokens, prepare_caption
from profiles import profile_at

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
CAPTIONS = ["a red square", "two blue circles left of a green triangle", "a dog running on grass",
            "a cat sleeping on a sofa", "a small yellow star above a big purple hexagon",
            "an orange car on a road", "a red square"]   # the last repeats the first
LONG = [None, "There are two blue circles. They are left of a green triangle.", None,
        "A grey cat is sleeping on a red sofa in a bright living room.",
        "A yellow star is above a purple hexagon. The star is small and the hexagon big.",
        None, None]
SPLITS = ["train", "train", "train", "train", "test", "test", "test"]


def profile(tmp_path, **over):
    # data_dir one level down: the embed cache sits beside the data dir, so each test owns one
    return profile_at(tmp_path / "data", {"embed.batch_size": 2, **over})


def write_captions(cfg, captions=CAPTIONS, long=LONG, splits=SPLITS, short=None):
    short = [None] * len(captions) if short is None else short
    table = pl.DataFrame({"key": [f"s{i}" for i in range(len(captions))], "split": splits,
                          "caption": captions, "short_caption": pl.Series(short, dtype=pl.String),
                          "long_caption": pl.Series(long, dtype=pl.String)})
    write_parquet(Paths.of(cfg).captions, table)
    return table


def outputs(cfg) -> dict[str, str]:
    p = Paths.of(cfg)
    return {n: sha256_tree(x) for n, x in [("shards", p.embed_shards), ("index", p.embed_index),
                                          ("meta", p.embed_meta)]}


def test_every_row_is_embedded_in_the_stored_format(tmp_path):
    cfg = profile(tmp_path)
    table = write_captions(cfg)
    out = embed(cfg)
    p = Paths.of(cfg)
    meta = json.loads(p.embed_meta.read_text())
    names = ["single"] + [f"short/{i}" for i in range(3)] + [f"long/{i}" for i in range(7)]
    assert meta["names"] == names and meta["dim"] == 64 and meta["layer"] == -2
    index = pl.read_parquet(p.embed_index)
    assert index["key"].to_list() == table["key"].to_list()
    assert index["split"].to_list() == SPLITS and not index["truncated"].any()
    assert index["content_hash"][0] == index["content_hash"][6]   # same texts, same content
    rows = list(iter_shards(p.embed_shards))
    assert [r["key"] for r in rows] == table["key"].to_list()
    # one process writes one part, joined by the top-level index.json as a run of ranks is
    assert sorted(f.name for f in p.embed_shards.iterdir()) == ["index.json", "part-00000"]
    shards = json.loads((p.embed_shards / "index.json").read_text())["shards"]
    assert [s["raw_data"]["basename"] for s in shards] == ["part-00000/shard.00000.mds"]
    for r, long in zip(rows, LONG):
        assert r["emb"].dtype == np.float16 and r["emb"].shape == (11, 64)
        assert r["valid"].tolist() == [1] * 4 + [int(long is not None)] * 7
        ok = r["valid"].astype(bool)
        assert np.allclose(np.linalg.norm(r["emb"][ok].astype(np.float32), axis=1), 1, atol=2e-3)
        assert not r["emb"][~ok].any()
    # 7 rows: 6 distinct captions x (single, short) + 3 long captions; 2 per forward batch
    assert (out.summary["texts"], out.summary["unique_texts"]) == (7 * 2 + 3, 6 * 2 + 3)
    assert out.summary["computed"] == 6 * 2 + 3
    assert out.summary["forward_passes"] == 3 + 3 + 2
    assert out.rows["embed_index"] == 7
    # valid embeddings per row: 4 (no long caption) or 11; the metrics the stage records
    assert (out.summary["valid_min"], out.summary["valid_mean"]) == (4.0, round((3 * 11 + 4 * 4) / 7, 4))
    assert {m[2]: m[3] for m in out.metrics if m[2].startswith("valid")} == {
        "valid_min": 4.0, "valid_mean": round(49 / 7, 4)}
    assert all(m[:2] == (cfg.embed.llm, "embed") for m in out.metrics)


def test_short_set_embeds_the_short_recaption_else_the_caption(tmp_path):
    """The plan's fallback: where a row has no short caption its short set embeds the caption,
    exactly what a plan of (caption, short) stores; with every text there a row has 11 valid."""
    short = [None, "Blue circles beside a green triangle.", None, "A cat asleep on a sofa.",
             None, None, None]
    today = profile(tmp_path / "today", **{"embed.postprocess": "none", "embed.plan": [
        ["caption", "single"], ["caption", "short"], ["long_caption", "long"]]})
    write_captions(today)
    embed(today)
    plan = profile(tmp_path / "plan", **{"embed.postprocess": "none"})
    assert plan.embed.plan[1] == ("short_caption", "short", "caption")
    write_captions(plan)                         # no short caption anywhere: the same bytes
    embed(plan)
    assert sha256_tree(Paths.of(plan).embed_shards) == sha256_tree(Paths.of(today).embed_shards)
    write_captions(plan, short=short)
    out = embed(plan)
    rows = {r["key"]: r for r in iter_shards(Paths.of(plan).embed_shards)}
    old = {r["key"]: r for r in iter_shards(Paths.of(today).embed_shards)}
    enc = TextEncoder(plan.embed, Paths.of(plan).embed_cache)
    for i, s in enumerate(short):
        key = f"s{i}"
        if s is None:
            assert np.array_equal(rows[key]["emb"], old[key]["emb"])
        else:
            raw, _ = enc.raw([("short", prepare_caption(s))])
            np.testing.assert_allclose(rows[key]["emb"][1:4].astype(np.float32), raw[0], atol=2e-3)
    assert out.summary["computed"] == 2            # only the two short recaptions
    assert [int(rows[f"s{i}"]["valid"].sum()) for i in range(7)] == [4, 11, 4, 11, 11, 4, 4]


def test_a_facet_set_added_in_params_needs_no_code(tmp_path):
    cfg = load_profile("tiny", PARAMS)
    sets = {k: v.model_dump() for k, v in cfg.embed.prompt_sets.items()}
    sets["colour"] = {"prefix": 'Picture : "{caption}" .',
                      "facets": [' its main colour in one word:"', ' its shape in one word:"']}
    cfg = profile(tmp_path, **{"embed.prompt_sets": sets, "embed.postprocess": "none",
                               "embed.plan": [["caption", "single"], ["caption", "colour"]]})
    write_captions(cfg)
    embed(cfg)
    meta = json.loads(Paths.of(cfg).embed_meta.read_text())
    assert meta["names"] == ["single", "colour/0", "colour/1"]
    row = next(iter(iter_shards(Paths.of(cfg).embed_shards)))
    assert row["emb"].shape == (3, 64) and row["valid"].tolist() == [1, 1, 1]
    assert float(row["emb"][1].astype(np.float32) @ row["emb"][2].astype(np.float32)) < 0.999


def test_rerun_computes_nothing_and_one_changed_caption_recomputes_one_sample(tmp_path):
    cfg = profile(tmp_path)
    write_captions(cfg)
    embed(cfg)
    first = outputs(cfg)
    again = embed(cfg)
    assert (again.summary["computed"], again.summary["forward_passes"]) == (0, 0)
    assert outputs(cfg) == first
    old_index = pl.read_parquet(Paths.of(cfg).embed_index)
    changed = CAPTIONS.copy()
    changed[2] = "a dog sleeping on grass"
    write_captions(cfg, changed)
    redo = embed(cfg)
    assert redo.summary["computed"] == 2         # its single and short texts, nothing else
    new_index = pl.read_parquet(Paths.of(cfg).embed_index)
    differs = (old_index["content_hash"] != new_index["content_hash"]).to_list()
    assert differs == [False, False, True, False, False, False, False]


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_batches(tmp_path):
    cfg = profile(tmp_path, **{"embed.batch_size": 1})
    many = [f"a {c} {s} number {i}" for i, (c, s) in enumerate(
        (c, s) for c in ["red", "blue", "green"] for s in ["dot", "cube", "ring", "star"])]
    args = dict(captions=many, long=[None] * len(many), splits=["train"] * len(many))
    write_captions(cfg, **args)
    total = 2 * len(many)
    cache = Paths.of(cfg).embed_cache
    script = ("from flame_pipeline.config import load_profile; "
              "from flame_pipeline.text.embed import embed; "
              f"embed(load_profile('tiny', {str(PARAMS)!r}, overrides={{'data_dir': {cfg.data_dir!r},"
              " 'embed.batch_size': 1}))")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def finished():  # <fingerprint>/<batch>.npz; a batch being written sits one level deeper
        return len(list(cache.glob("*/*.npz")))
    deadline = time.time() + 120
    while finished() < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = finished()
    assert 3 <= done < total and not Paths.of(cfg).embed_meta.exists()
    resumed = embed(cfg)
    assert resumed.summary["computed"] == total - done
    fresh = profile(tmp_path / "fresh", **{"embed.batch_size": 1})
    write_captions(fresh, **args)
    embed(fresh)
    a = list(iter_shards(Paths.of(cfg).embed_shards))
    b = list(iter_shards(Paths.of(fresh).embed_shards))
    assert len(a) == len(b) == len(many)
    assert all(np.array_equal(x["emb"], y["emb"]) for x, y in zip(a, b))
    assert outputs(cfg)["index"] == outputs(fresh)["index"]


def test_empty_caption_is_a_clear_error_and_nothing_is_written(tmp_path):
    cfg = profile(tmp_path)
    bad = CAPTIONS.copy()
    bad[3] = "   "
    write_captions(cfg, bad)
    with pytest.raises(EmptyCaptionError, match=r"s3 \(caption\)"):
        embed(cfg)
    assert not Paths.of(cfg).embed.exists() and not Paths.of(cfg).embed_cache.exists()


def test_too_long_caption_is_truncated_and_flagged_never_the_prompt(tmp_path):
    cfg = profile(tmp_path, **{"embed.max_tokens": 12, "embed.postprocess": "none"})
    long_caption = "a very long caption about " + "many red squares and blue circles " * 6
    write_captions(cfg, CAPTIONS[:-1] + [long_caption], long=[None] * 7)
    embed(cfg)
    index = pl.read_parquet(Paths.of(cfg).embed_index)
    assert index["truncated"].to_list() == [False] * 6 + [True]
    model, tok = load_llm(cfg.embed)
    builder = PromptBuilder(tok, cfg.embed.prompt_sets, cfg.embed.max_tokens)
    built = builder.build(prepare_caption(long_caption), "single")
    ids = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
    before, after = ids('Image description : "'), ids('" . After thinking step by step ,')
    caption = ids(prepare_caption(long_caption))
    assert len(caption) > 12 and built.truncated
    assert built.prefix == builder.lead + before + caption[:12] + after   # prompt kept whole
    with torch.inference_mode():
        h = model(input_ids=torch.tensor([built.prefix + built.facets[0]]),
                  output_hidden_states=True).hidden_states[cfg.embed.layer][0, -1]
    stored = list(iter_shards(Paths.of(cfg).embed_shards))[-1]["emb"][0].astype(np.float32)
    assert float(stored @ torch.nn.functional.normalize(h.float(), dim=0).numpy()) >= 0.999


def test_max_tokens_beyond_the_model_context_is_a_clear_error(tmp_path):
    cfg = profile(tmp_path, **{"embed.max_tokens": 4000})      # tiny-random: 2048 positions
    write_captions(cfg)
    with pytest.raises(ValueError, match="context"):
        embed(cfg)


def test_center_needs_train_texts_only_for_sets_in_use(tmp_path):
    cfg = profile(tmp_path)
    write_captions(cfg, long=[None] * 7)                 # no long caption anywhere: fine
    embed(cfg)
    assert not any(r["valid"][4:].any() for r in iter_shards(Paths.of(cfg).embed_shards))
    test_only = [None] * 4 + LONG[4:5] + [None, None]    # a long caption in test, none in train
    write_captions(cfg, long=test_only)
    with pytest.raises(ValueError, match=r"\['long'\].*no train-split text"):
        embed(cfg)


def test_train_split_only_when_asked(tmp_path):
    cfg = profile(tmp_path, **{"embed.splits": ["train"]})
    table = write_captions(cfg)
    out = embed(cfg)
    index = pl.read_parquet(Paths.of(cfg).embed_index)
    assert index["key"].to_list() == table["key"].to_list()[:4] and set(index["split"]) == {"train"}
    assert [r["key"] for r in iter_shards(Paths.of(cfg).embed_shards)] == index["key"].to_list()
    # 4 distinct train captions x (single, short) + their 2 long captions
    assert out.summary["computed"] == 4 * 2 + 2


def test_missing_column_and_missing_table_are_clear_errors(tmp_path):
    cfg = profile(tmp_path)
    with pytest.raises(FileNotFoundError, match="captions.parquet"):
        embed(cfg)
    write_parquet(Paths.of(cfg).captions, pl.DataFrame({"key": ["a"], "caption": ["x"]}))
    with pytest.raises(ValueError, match="split"):
        embed(cfg)


def test_center_uses_train_statistics_and_text_encoder_applies_them(tmp_path):
    cfg = profile(tmp_path, **{"embed.postprocess": "center"})
    write_captions(cfg)
    embed(cfg)
    p = Paths.of(cfg)
    meta = json.loads(p.embed_meta.read_text())
    cosines = meta["mean_cosine"]
    assert cosines["mean_before"] > 0.5 and cosines["mean_after"] < cosines["mean_before"] - 0.3
    rows = list(iter_shards(p.embed_shards))
    enc = TextEncoder.of(cfg)
    raw, _ = enc.raw([("single", prepare_caption(c)) for c in CAPTIONS])
    mean = np.stack([r for r, s in zip(raw, SPLITS) if s == "train"]).mean(0)   # train only
    post = Postprocess.load(p.embed_postprocess)
    assert np.allclose(post.means["single"], mean, atol=1e-6)
    for r, x in zip(rows, raw):
        want = (x - mean)[0] / np.linalg.norm(x - mean)
        assert float(r["emb"][0].astype(np.float32) @ want) >= 0.999
    got = enc.encode([CAPTIONS[1], CAPTIONS[4]], prompt_set="short")
    assert enc.computed == 0 and got.shape == (2, 64)        # both came from the stage's cache
    for g, r in zip(got, [rows[1], rows[4]]):
        want = r["emb"][1:4].astype(np.float32).mean(0)
        assert float(g @ (want / np.linalg.norm(want))) >= 0.999
    new = enc.encode(["a purple dog"])
    assert enc.computed == 1 and np.isclose(np.linalg.norm(new), 1, atol=1e-5)
    with pytest.raises(ValueError, match="stats_path"):
        TextEncoder(cfg.embed, p.embed_cache).encode(["a dog"])


def test_text_encoder_without_postprocess_is_the_facet_mean(tmp_path):
    cfg = profile(tmp_path, **{"embed.postprocess": "none"})
    enc = TextEncoder(cfg.embed, Paths.of(cfg).embed_cache)
    got = enc.encode(["a red square", "a red square?"], prompt_set="long")
    assert enc.computed == 1 and np.allclose(got[0], got[1])   # same normalised caption
    model, tok = load_llm(cfg.embed)
    builder = PromptBuilder(tok, cfg.embed.prompt_sets, cfg.embed.max_tokens)
    want = facet_embeddings(model, [builder.build("a red square.", "long")])[0].mean(0)
    assert float(torch.nn.functional.cosine_similarity(torch.from_numpy(got[0]), want, dim=0)) > 0.9999
    with pytest.raises(EmptyCaptionError):
        enc.encode([""])


def test_whitening_matrix_equalises_the_spectrum_up_to_its_floor():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    cov = (basis * np.array([100.0, 10, 5, 1, 0.5, 0.2])) @ basis.T
    w = whitening_matrix(cov, 1e-9)
    assert np.allclose(w, w.T, atol=1e-6) and np.isclose(np.linalg.eigvalsh(w).max(), 1.0)
    spectrum = np.linalg.eigvalsh(w @ cov @ w)
    assert spectrum.max() / spectrum.min() < 1.001          # white: every direction equal
    floored = np.linalg.eigvalsh(whitening_matrix(cov, 0.1) @ cov @ whitening_matrix(cov, 0.1))
    # a floor of 0.1 x 100: the weakest direction (0.2) keeps 0.2 / 10.2 of its variance
    assert np.isclose(floored.min() / floored.max(), (0.2 / 10.2) / (100 / 110), rtol=1e-4)


def test_whiten_uses_train_statistics_and_text_encoder_applies_them(tmp_path):
    cfg = profile(tmp_path, **{"embed.postprocess": "whiten", "embed.whiten_floor": 0.05})
    write_captions(cfg)
    embed(cfg)
    p = Paths.of(cfg)
    post = Postprocess.load(p.embed_postprocess)
    enc = TextEncoder.of(cfg)
    raw, _ = enc.raw([("short", prepare_caption(c)) for c in CAPTIONS])
    train = np.stack([r for r, s in zip(raw, SPLITS) if s == "train"]).astype(np.float64)  # [4, 3, d]
    mean = train.mean(0)
    centred = (train - mean).reshape(-1, train.shape[-1])
    want_w = whitening_matrix(centred.T @ centred / len(centred), 0.05)
    assert post.kind == "whiten" and post.floor == 0.05
    assert np.allclose(post.means["short"], mean, atol=1e-6)
    assert np.allclose(post.whiteners["short"], want_w, atol=1e-5)
    rows = list(iter_shards(p.embed_shards))
    for r, x in zip(rows, raw):
        want = (x - mean) @ want_w
        want /= np.linalg.norm(want, axis=-1, keepdims=True)
        assert (np.sum(r["emb"][1:4].astype(np.float32) * want, axis=-1) >= 0.999).all()
    got = enc.encode([CAPTIONS[4]], prompt_set="short")[0]
    want = ((raw[4] - mean) @ want_w)
    want = (want / np.linalg.norm(want, axis=-1, keepdims=True)).mean(0)
    assert enc.computed == 0 and float(got @ (want / np.linalg.norm(want))) >= 0.999
    other = profile_at(tmp_path / "data", {"embed.postprocess": "whiten",
                                          "embed.whiten_floor": 0.2})
    with pytest.raises(ValueError, match="floor 0.05"):
        TextEncoder.of(other).encode(["a dog"])


def test_forward_batches_keep_to_the_row_and_padded_token_limits(tmp_path):
    cfg = profile(tmp_path, **{"embed.batch_size": 3, "embed.batch_tokens": 20})
    enc = TextEncoder(cfg.embed, tmp_path / "cache")
    items = [(f"k{n}", PromptTokens(prefix=[1] * n, facets=[], truncated=False))
             for n in (2, 3, 5, 6, 9, 10, 25)]
    chunks = [[tok.n_tokens for _, tok in c] for c in enc._batches(items)]
    # rows capped at 3; a prompt joins only while rows x its length stays <= 20; 25 goes alone
    assert chunks == [[2, 3, 5], [6, 9], [10], [25]]


def test_token_limited_batches_give_the_same_vectors(tmp_path):
    texts = [prepare_caption(t) for t in CAPTIONS + [t for t in LONG if t]]
    vectors = []
    for limit in (0, 60):
        cfg = profile(tmp_path / str(limit), **{"embed.batch_size": 8, "embed.batch_tokens": limit})
        enc = TextEncoder(cfg.embed, tmp_path / str(limit) / "cache")
        units = [(ps, t) for t in texts for ps in ("single", "long")]
        emb, _ = enc.raw(units)
        vectors.append((np.concatenate(emb), enc.forward_passes))
    (full, few), (limited, many) = vectors
    assert many > few
    np.testing.assert_allclose(limited, full, atol=1e-5)


def cached(enc: TextEncoder) -> dict[str, tuple[np.ndarray, bool]]:
    """Every vector in the encoder's cache directory, by key, as read back (float32)."""
    enc.cache.refresh()
    keys = enc.cache.keys()
    emb, trunc = enc.cache.get(keys)
    return {k: (e, t) for k, e, t in zip(keys, emb, trunc)}


def test_cache_index_finds_every_key_across_merges_and_when_reopened(tmp_path, monkeypatch):
    """The in-memory index (sorted digests, merged every MERGE_EVERY puts) gives each key its
    own vector and flag, before and after a merge and from a fresh index of the files; keys
    whose digests end in zero bytes included; a key put twice is indexed once."""
    monkeypatch.setattr(cache_module, "MERGE_EVERY", 5)
    keys = [content_hash(i) for i in range(10)] + ["ff" * 31 + "00", "ff" * 30 + "0000"]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((12, 2, 3)).astype(np.float16)
    cache = EmbeddingCache(tmp_path, "fp")
    cache.put(keys[:4], vectors[:4], [True, False, False, True])    # 4 waiting for a merge
    assert len(cache) == 4 and keys[3] in cache and keys[4] not in cache
    cache.put(keys[3:], vectors[3:], [True] + [False] * 8)         # merged; keys[3] once
    assert len(cache) == 12 and cache.keys() == sorted(keys) and "ff" * 32 not in cache
    for index in (cache, EmbeddingCache(tmp_path, "fp")):
        emb, trunc = index.get(keys[::-1])
        assert trunc == [False] * 8 + [True, False, False, True]
        assert all(np.array_equal(e, v.astype(np.float32)) for e, v in zip(emb, vectors[::-1]))
    with pytest.raises(KeyError, match="not in the embedding cache"):
        cache.get([keys[0], "ff" * 32])


def test_cache_stores_float16_and_gives_back_float32_within_its_rounding(tmp_path):
    cfg = profile(tmp_path, **{"embed.postprocess": "none"})
    enc = TextEncoder(cfg.embed, tmp_path / "cache")
    units = [(ps, prepare_caption(c)) for c in CAPTIONS[:4] for ps in ("single", "long")]
    emb, _ = enc.raw(units)
    files = sorted(enc.cache.dir.glob("*.npz"))
    for f in files:
        with np.load(f) as z:
            n, k, d = z["emb"].shape
            assert z["emb"].dtype == np.float16 and z["emb"].nbytes == n * k * d * 2  # 4 in float32
    assert all(e.dtype == np.float32 for e in emb)
    model, tok = load_llm(cfg.embed)
    builder = PromptBuilder(tok, cfg.embed.prompt_sets, cfg.embed.max_tokens)
    for (ps, text), e in zip(units, emb):
        want = facet_embeddings(model, [builder.build(text, ps)], cfg.embed.layer)[0].numpy()
        # float16 keeps 11 significant bits: a relative error of at most 2^-11 (plus the
        # float32 noise of another batch's padding)
        assert (np.abs(e - want) <= np.abs(want) * 2.0 ** -11 + 1e-6).all()


def test_ensure_in_small_chunks_gives_the_same_cache_as_in_one(tmp_path):
    cfg = profile(tmp_path, **{"embed.postprocess": "none", "embed.batch_size": 8})
    units = [(ps, prepare_caption(t)) for t in CAPTIONS + [t for t in LONG if t]
             for ps in ("single", "long")]                 # 9 distinct texts x 2 sets
    one = TextEncoder(cfg.embed, tmp_path / "one")
    assert one.ensure(units) == 18
    small = TextEncoder(cfg.embed, tmp_path / "small")
    assert small.ensure(iter(units), chunk=4) == 18       # any iterable: read as a stream
    assert one.forward_passes == 4 and small.forward_passes >= 5   # 2 sets x 2 of <= 8; 5 chunks
    a, b = cached(one), cached(small)
    assert a.keys() == b.keys() and len(a) == 18
    for key in a:
        assert a[key][1] == b[key][1]
        np.testing.assert_allclose(b[key][0], a[key][0], atol=2.0 ** -11)
    assert small.ensure(units, chunk=4) == 0                # all cached


def test_ranks_compute_disjoint_shares_of_the_missing_units(tmp_path):
    cfg = profile(tmp_path, **{"embed.postprocess": "none"})
    units = [(ps, prepare_caption(c)) for c in CAPTIONS for ps in ("single", "short")]
    shares = [TextEncoder(cfg.embed, tmp_path / "cache") for _ in range(2)]
    counts = [enc.ensure(units, rank, 2, chunk=3) for rank, enc in enumerate(shares)]
    assert all(counts) and sum(counts) == 12                  # 6 distinct captions x 2 sets
    owned = [set(enc.cache.keys()) for enc in shares]
    assert not owned[0] & owned[1]
    assert TextEncoder(cfg.embed, tmp_path / "cache").ensure(units) == 0


def test_the_stage_reads_the_table_in_row_chunks(tmp_path, monkeypatch):
    """Chunks of 3 rows (some all test, dropped by embed.splits) give the rows of any slice
    in table order, and the same outputs as the whole table in one chunk."""
    settings = {"embed.postprocess": "whiten", "embed.splits": ["train"]}
    whole = profile(tmp_path / "whole", **settings)
    splits = ["train", "test", "train", "test", "test", "test", "train"]
    write_captions(whole, splits=splits)
    embed(whole)
    monkeypatch.setattr(embed_module, "ROW_CHUNK", 3)
    chunked = profile(tmp_path / "chunked", **settings)
    write_captions(chunked, splits=splits)
    embed(chunked)
    assert outputs(chunked)["index"] == outputs(whole)["index"]
    assert json.loads(Paths.of(chunked).embed_meta.read_text()) == \
        json.loads(Paths.of(whole).embed_meta.read_text())
    got, want = (list(iter_shards(Paths.of(c).embed_shards)) for c in (chunked, whole))
    assert [r["key"] for r in got] == [r["key"] for r in want] == ["s0", "s2", "s6"]
    for a, b in zip(got, want):
        assert np.array_equal(a["valid"], b["valid"])
        np.testing.assert_allclose(a["emb"].astype(np.float32), b["emb"].astype(np.float32),
                                   atol=2.0 ** -11)
    train = ["s0", "s2", "s6"]
    path = Paths.of(chunked).captions
    for start in range(4):
        for stop in range(start, 4):
            keys = [k for f in embed_module._chunks(path, chunked.embed, start, stop) for k in f["key"]]
            assert keys == train[start:stop], (start, stop)


@pytest.mark.slow
def test_two_processes_write_two_parts_that_read_as_one_process_output(tmp_path):
    """torchrun --nproc_per_node 2 (gloo): each rank writes its part of the rows; the joined
    shards read row by row as one process's, with the same index, meta and post-processing
    (fitted from sums added over the ranks). Seen: identical emb bytes, whitening matrices
    within 2e-8."""
    paths = {}
    for n in (1, 2):
        cfg = profile(tmp_path / f"n{n}", **{"embed.postprocess": "whiten"})
        write_captions(cfg)
        cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone",  # a free port
               "--nproc_per_node", str(n), "-m", "flame_pipeline.cli", "embed", "--profile",
               "tiny", "--params", str(PARAMS), "--set", f"data_dir={cfg.data_dir}", "--set",
               "embed.batch_size=2", "--set", "embed.postprocess=whiten"]
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert run.returncode == 0, run.stderr[-3000:]
        paths[n] = Paths.of(cfg)
    one, two = paths[1], paths[2]
    assert sorted(f.name for f in two.embed_shards.iterdir()) == ["index.json", "part-00000", "part-00001"]
    assert [len(open_shards(two.embed_shards / f"part-0000{r}")) for r in (0, 1)] == [3, 4]
    a, b = list(iter_shards(one.embed_shards)), list(iter_shards(two.embed_shards))
    assert [r["key"] for r in b] == [r["key"] for r in a] == [f"s{i}" for i in range(7)]
    for x, y in zip(a, b):
        assert np.array_equal(x["valid"], y["valid"])
        np.testing.assert_allclose(y["emb"].astype(np.float32), x["emb"].astype(np.float32),
                                   atol=2.0 ** -11)      # float16's step below 1
    assert not shard_problems(two.embed_shards) and len(b) == 7
    assert sha256_tree(two.embed_index) == sha256_tree(one.embed_index)
    assert json.loads(two.embed_meta.read_text()) == json.loads(one.embed_meta.read_text())
    p1, p2 = Postprocess.load(one.embed_postprocess), Postprocess.load(two.embed_postprocess)
    assert p1.means.keys() == p2.means.keys() == p2.whiteners.keys() == {"single", "short", "long"}
    for ps in p1.means:
        np.testing.assert_allclose(p2.means[ps], p1.means[ps], atol=1e-6)
        np.testing.assert_allclose(p2.whiteners[ps], p1.whiteners[ps], atol=1e-6)
