"""The evaluation stage's plumbing on real scene and Fashion-MNIST samples in the stage file formats.

An oracle model whose answers are known by construction checks that rows, images and texts
stay aligned through every benchmark; a randomly initialised FLAME tower with the tiny LLM
checks the linear probe and the interpretability map end to end.
"""
import hashlib
import json
import shutil

import polars as pl
import pytest
import torch

from flame_pipeline.config import FashionMnistSource, ScenesSource
from flame_pipeline.data.packaged import iter_fashion_mnist
from flame_pipeline.data.scenes import generate_scenes
from flame_pipeline.eval.data import load_images, load_rows
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval import evaluate as evaluate_module
from flame_pipeline.eval.curated import classification_tasks
from flame_pipeline.eval.evaluate import (_finished, evaluate, fingerprint, interpretability,
                                          run_benchmarks, truncate_texts)
from flame_pipeline.files import write_json, write_parquet
from flame_pipeline.paths import Paths
from flame_pipeline.shards import write_shards
from flame_pipeline.eval.interpret import TokenReader
from flame_pipeline.text.llm import final_norm, load_llm, output_embedding
from flame_pipeline.text.postprocess import Postprocess
from flame_pipeline.vision.towers import FlameModel

from eval_oracle import OracleVision, oracle_text
from profiles import profile_at, with_eval

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    cfg = profile_at(root)
    samples = list(generate_scenes(ScenesSource(n_train=24, n_test=8, image_size=32,
                                                languages=["en", "de", "fr"]), seed=0))
    samples += list(iter_fashion_mnist(FashionMnistSource(n_train=30, n_test=12)))
    shas = [hashlib.sha256(s.image).hexdigest() for s in samples]
    paths = Paths.of(cfg)
    write_shards(paths.raw_shards, {"key": "str", "image": "bytes"},
                 ({"key": s.key, "image": s.image} for s in samples))
    write_parquet(paths.manifest, pl.DataFrame({"key": [s.key for s in samples], "sha256": shas}))
    write_parquet(paths.captions, pl.DataFrame({
        "key": [s.key for s in samples], "source": [s.source for s in samples],
        "split": [s.split for s in samples], "language": [s.language for s in samples],
        "caption": [s.caption for s in samples], "long_caption": [s.long_caption for s in samples],
        "labels": [json.dumps(s.labels) for s in samples]}))
    test, train = load_rows(paths, ["test"]), load_rows(paths, ["train"])
    images = load_images(paths, set(test["key"]) | set(train["key"]))
    return cfg, test, train, images


def oracle(rows: pl.DataFrame, images: dict[str, bytes], size: int) -> OracleVision:
    """Every caption, short or long, in every language, points at its image."""
    pairs = [(images[r["key"]], t) for r in rows.iter_rows(named=True)
             for t in (r["caption"], r["long_caption"]) if t]
    return OracleVision(pairs, size)


def test_classification_tasks_skip_per_image_labels(data):
    cfg, test, train, _ = data
    tasks, skipped = classification_tasks(test, train)
    names = {(t.source, t.task) for t in tasks}
    assert names == {("scenes", "shape"), ("scenes", "colour"), ("scenes", "count"),
                     ("fashion_mnist", "class")}
    assert any(s.startswith("scenes/hard_negative_of") for s in skipped)
    fashion = next(t for t in tasks if t.source == "fashion_mnist")
    assert set(fashion.classes) <= {"t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal",
                                    "shirt", "sneaker", "bag", "ankle boot"}


def test_oracle_model_gets_known_answers(data):
    cfg, test, train, images = data
    tasks, _ = classification_tasks(test, train)
    seen = []
    vision = oracle(test, images, cfg.vision.image_size)
    model = EvalModel("oracle", vision.encode_image, vision.pooled_features,
                      lambda texts, s: (seen.append(s), oracle_text(texts))[1],
                      cfg.vision.image_size, batch_size=5)
    cut = lambda texts: [" ".join(t.split()[:20]) for t in texts]  # noqa: E731
    cfg = with_eval(cfg, benchmarks=["zeroshot", "retrieval", "long_retrieval", "multilingual"])
    out = run_benchmarks(cfg, model, test, train, images, tasks, cut)
    assert sorted(out) == sorted(
        ["retrieval/scenes", "retrieval/fashion_mnist", "long_retrieval/scenes",
         "long_retrieval_77/scenes", "long_retrieval_no_hn/scenes", "multilingual/scenes/de", "multilingual/scenes/en",
         "multilingual/scenes/fr", "zeroshot/scenes/shape", "zeroshot/scenes/colour",
         "zeroshot/scenes/count", "zeroshot/fashion_mnist/class"])
    for bench in ("retrieval/scenes", "retrieval/fashion_mnist", "long_retrieval/scenes",
                  "multilingual/scenes/de", "multilingual/scenes/fr"):
        assert out[bench]["i2t_R@1"] == 100.0 and out[bench]["t2i_R@1"] == 100.0, bench
    # 8 scenes + 8 hard negatives in the long gallery; the cut captions point nowhere
    assert out["long_retrieval/scenes"]["n_images"] == 16.0
    assert out["long_retrieval_no_hn/scenes"]["n_images"] == 8.0
    assert out["long_retrieval_no_hn/scenes"]["i2t_R@1"] == 100.0
    assert out["long_retrieval_77/scenes"]["i2t_R@1"] <= 25.0
    # Fashion-MNIST captions repeat ("a photo of a shirt."): fewer texts than images
    fm = out["retrieval/fashion_mnist"]
    assert fm["n_images"] == 12.0 and fm["n_texts"] < 12.0
    # prompt sets by docs/METHOD.md#text-queries: short captions "short", long "long", class names and
    # the multilingual protocol "single"
    assert set(seen) == {"short", "long", "single"}


def test_long_caption_test_sets_are_embedded_through_the_long_set(data):
    """Every long caption (cut to 77 tokens or not) goes through ``long``, every short English
    caption through ``short``, the non-English captions and class names through ``single``."""
    cfg, test, train, images = data
    tasks, _ = classification_tasks(test, train)
    sets: dict[str, set[str]] = {}
    vision = oracle(test, images, cfg.vision.image_size)
    model = EvalModel("oracle", vision.encode_image, vision.pooled_features,
                      lambda texts, s: ([sets.setdefault(t, set()).add(s) for t in texts],
                                        oracle_text(texts))[1], cfg.vision.image_size, batch_size=64)
    cut = lambda texts: [" ".join(t.split()[:20]) for t in texts]  # noqa: E731
    cfg = with_eval(cfg, benchmarks=["zeroshot", "retrieval", "long_retrieval", "multilingual"])
    run_benchmarks(cfg, model, test, train, images, tasks, cut)
    long = test.filter(pl.col("language") == "en")["long_caption"].drop_nulls().to_list()
    assert long and all(sets[t] == {"long"} for t in long + cut(long))
    english = test.filter((pl.col("language") == "en") & ~pl.col("hard_negative"))
    assert all("short" in sets[t] for t in english["caption"])
    foreign = test.filter(pl.col("language") != "en")["caption"].to_list()
    assert foreign and all(sets[t] == {"single"} for t in foreign)


def test_single_prompt_mode_uses_only_the_single_set(data):
    cfg, test, train, images = data
    seen = set()
    vision = oracle(test, images, cfg.vision.image_size)
    model = EvalModel("oracle", vision.encode_image, vision.pooled_features,
                      lambda texts, s: (seen.add(s), oracle_text(texts))[1],
                      cfg.vision.image_size, batch_size=64)
    cfg = with_eval(cfg, prompt_mode="single", benchmarks=["retrieval", "long_retrieval"])
    run_benchmarks(cfg, model, test, train, images, [], lambda t: t)
    assert seen == {"single"}


def test_validation_rows_are_benchmarked_only_when_asked(data, tmp_path, monkeypatch):
    cfg = data[0]
    root = tmp_path / "data"
    shutil.copytree(cfg.root, root)
    paths = Paths(root)
    captions = pl.read_parquet(paths.captions)
    as_val = (pl.col("source") == "scenes") & (pl.col("split") == "test")
    write_parquet(paths.captions, captions.with_columns(
        split=pl.when(as_val).then(pl.lit("val")).otherwise("split")))
    rows = load_rows(paths, ["test", "val"])
    vision = oracle(rows, load_images(paths, rows["key"]), cfg.vision.image_size)
    model = EvalModel("oracle", vision.encode_image, vision.pooled_features,
                      lambda texts, s: oracle_text(texts), cfg.vision.image_size, batch_size=64)
    monkeypatch.setattr(evaluate_module, "load_eval_model", lambda cfg, name: model)
    for split, source in (("test", "fashion_mnist"), ("val", "scenes")):
        run = profile_at(root, {"eval.split": split, "eval.benchmarks": ["retrieval"]})
        evaluate(run)
        doc = json.loads(paths.metrics.read_text())
        want = captions.filter(pl.col("split") == "test").filter(
            pl.col("source") == source).height
        assert (doc["split"], doc["test_rows"]) == (split, want)
        assert set(doc["models"]["flame"]) == {f"retrieval/{source}"}
        assert doc["models"]["flame"][f"retrieval/{source}"]["i2t_R@1"] == 100.0


def test_probe_and_token_map_with_a_real_tower(data, tmp_path):
    cfg, test, train, images = data
    torch.manual_seed(0)
    llm, tokenizer = load_llm(cfg.embed)
    tower = FlameModel(cfg.vision, llm.config.hidden_size).eval()
    model = EvalModel("flame", tower.encode_image, tower.pooled_features, lambda texts, s: None,
                      cfg.vision.image_size, batch_size=16, patch_tokens=tower.projected_tokens)
    tasks, _ = classification_tasks(test, train)
    cfg = with_eval(cfg, benchmarks=["linear_probe"])
    out = run_benchmarks(cfg, model, test, train, images, tasks, lambda t: t)
    assert set(out) >= {"linear_probe/fashion_mnist/class", "linear_probe/scenes/shape"}
    assert all(0.0 <= m["top1"] <= 100.0 for m in out.values())
    path = tmp_path / "map.png"
    reader = TokenReader(Postprocess("none", "", {}), "single", final_norm(llm),
                         output_embedding(cfg.embed, llm))
    grids = interpretability(cfg, model, reader, lambda i: tokenizer.decode([i]), test, images, path)
    cells = cfg.eval.interpret_cells
    assert len(grids) == cfg.eval.interpret_images
    assert all(len(g) == cells and all(len(row) == cells for row in g) for g in grids)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_truncate_texts_keeps_short_texts_and_cuts_long_ones(data):
    cfg = data[0]
    _, tokenizer = load_llm(cfg.embed)
    long = "one red circle and " * 40
    out = truncate_texts(tokenizer, ["a red circle.", long], 10)
    assert out[0] == "a red circle."
    assert len(tokenizer(out[1], add_special_tokens=False)["input_ids"]) <= 11
    assert long.startswith(out[1])


def test_a_finished_run_is_found_only_with_the_same_fingerprint(tmp_path):
    cfg = profile_at(tmp_path)
    paths = Paths.of(cfg)
    write_parquet(paths.captions, pl.DataFrame({"key": ["a"], "caption": ["a red circle."]}))
    fp = fingerprint(cfg)
    assert fp["inputs"]["captions"] is not None and fp["inputs"]["flame"] is None
    write_json(paths.metrics, {"models": {}, "plots": [], "skipped": [], "fingerprint": fp})
    assert _finished(paths, fingerprint(cfg)) is not None
    other = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"recall_ks": [1]})})
    assert _finished(paths, fingerprint(other)) is None                  # another setting
    write_json(paths.metrics, {"models": {}, "plots": ["gone.png"], "skipped": [], "fingerprint": fp})
    assert _finished(paths, fp) is None                                  # a plot is missing
    write_parquet(paths.captions, pl.DataFrame({"key": ["a"], "caption": ["a blue circle."]}))
    assert fingerprint(cfg)["inputs"]["captions"] != fp["inputs"]["captions"]   # new data
