"""Benchmarks in the formats users have: tiny fixtures of each, read (bad rows rejected with a
reason, paths kept inside the benchmark's folder) and scored through the evaluate stage's code
(``registry.run_suite``) with an oracle model whose right answers are known."""
from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest
import torch

from flame_pipeline.config import ScenesSource
from flame_pipeline.data.scenes import generate_scenes
from flame_pipeline.eval.class_folders import TEMPLATES
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.registry import Suite, detect_format, run_suite
from flame_pipeline.eval.user_benchmark import spec_for
from flame_pipeline.eval.zeroshot import normalise
from flame_pipeline.vision.preprocess import eval_pixels

from eval_oracle import OracleVision, oracle_text
from profiles import profile_at

SCENES = list(generate_scenes(ScenesSource(n_train=0, n_test=6, image_size=32, languages=["en", "de"],
                                           hard_negatives=False), seed=1))
EN = [s for s in SCENES if s.language == "en"]
DE = [s for s in SCENES if s.language == "de"]


@pytest.fixture
def cfg(tmp_path):
    return profile_at(tmp_path / "data")


def oracle(pairs, seen=None) -> EvalModel:
    """Each image points at the texts it is paired with; ``seen`` collects the prompt sets asked."""
    vision = OracleVision(pairs, 32)
    return EvalModel("oracle", vision.encode_image, vision.pooled_features,
                     lambda t, s: (seen.append(s) if seen is not None else None, oracle_text(t))[1],
                     32, batch_size=4)


def score(cfg, path, model, fmt=None, **settings):
    spec = spec_for(path, fmt, **settings)
    suite = Suite(cfg)
    suite.load(spec, path)
    return spec, suite.loaded[spec.title], run_suite(suite, model, [spec])


def images(root, scenes=EN, folder="img"):
    (root / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for s in scenes:
        name = f"{folder}/{s.key.split('/')[-1]}.png"
        (root / name).write_bytes(s.image)
        names.append(name)
    return names


def hostile(root, tmp_path, folder="img"):
    """Files a loader must refuse: outside the folder, a symlink leading out, a broken image."""
    (tmp_path / "outside.png").write_bytes(EN[0].image)
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / "broken.png").write_bytes(b"not a png")
    os.symlink(tmp_path / "outside.png", root / folder / "link.png")


# ------------------------------------------------------------------ manifest (CSV/Parquet/JSONL)
def write_manifest(root, fmt, rows):
    path = root / f"manifest.{fmt}"
    frame = pl.DataFrame(rows, schema={"image": pl.String, "text": pl.String, "language": pl.String,
                                       "label": pl.String})
    if fmt == "csv":
        frame.write_csv(path)
    elif fmt == "parquet":
        frame.write_parquet(path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_manifest_bad_rows_counted_good_rows_scored_per_language(cfg, tmp_path, fmt):
    root = tmp_path / "bench"
    names = images(root)
    hostile(root, tmp_path)
    rows = [{"image": n, "text": s.caption, "language": s.language, "label": s.labels["shape"]}
            for scenes in (EN, DE) for n, s in zip(names, scenes)]
    bad = [{"image": "../outside.png", "text": "escapes"},
           {"image": str(tmp_path / "outside.png"), "text": "absolute"},
           {"image": "img/link.png", "text": "symlink out"}, {"image": "img/nope.png", "text": "missing"},
           {"image": "img/broken.png", "text": "broken"}, {"image": names[0], "text": "  "}]
    path = write_manifest(root, fmt, rows + bad)
    assert detect_format(path) == "manifest"
    seen = []
    spec, loaded, out = score(cfg, path, oracle([(s.image, s.caption) for s in SCENES], seen))
    acc = loaded.accounting()
    assert (acc["rows"], acc["used"]) == (len(rows) + len(bad), len(rows))
    assert acc["problems"] == {"outside_folder": 3, "missing_image": 1, "unreadable_image": 1,
                               "missing_text": 1}
    assert [p["row"] for p in acc["problem_rows"]] == list(range(len(rows) + 1, len(rows) + 7))
    name = f"manifest/{spec.title}"
    assert sorted(out) == [f"{name}/retrieval/de", f"{name}/retrieval/en", f"{name}/zeroshot"]
    for lang in ("de", "en"):
        assert out[f"{name}/retrieval/{lang}"]["i2t_R@1"] == 100.0
        assert out[f"{name}/retrieval/{lang}"]["n_images"] == 6.0
    assert set(seen) == {"short", "single"}          # English short set, German single prompt
    assert out[f"{name}/zeroshot"]["n_classes"] == len({s.labels["shape"] for s in EN})


def test_manifest_unparseable_lines_and_file_errors(cfg, tmp_path):
    root = tmp_path / "bench"
    names = images(root)
    path = root / "m.jsonl"
    path.write_text(json.dumps({"image": names[0], "text": "a"}) + "\n{broken\n[1, 2]\n"
                    + json.dumps({"image": names[1], "text": "b"}) + "\n")
    loaded = Suite(cfg).load(spec_for(path), path)
    assert [(n, r) for n, r, _ in loaded.problems] == [(2, "unreadable_row"), (3, "unreadable_row")]
    (root / "m.csv").write_text(f"image,text\n{names[0]},a caption\n{names[1]},x,extra\nonly_one\n")
    assert [r for _, r, _ in Suite(cfg).load(spec_for(root / "m.csv"), root / "m.csv").problems] == \
        ["unreadable_row", "unreadable_row"]
    (root / "c.csv").write_text("path,caption\na.png,b\n")
    with pytest.raises(ValueError, match=r"required column\(s\) \['image', 'text'\] missing"):
        Suite(cfg).load(spec_for(root / "c.csv"), root / "c.csv")
    (root / "none.jsonl").write_text(json.dumps({"image": "../x.png", "text": "t"}) + "\n")
    with pytest.raises(ValueError, match=r"no usable rows \(1 read, outside_folder: 1\)"):
        Suite(cfg).load(spec_for(root / "none.jsonl"), root / "none.jsonl")
    with pytest.raises(FileNotFoundError, match="benchmark not found"):
        detect_format(root / "nothing.csv")
    (root / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="cannot tell its benchmark format"):
        detect_format(root / "notes.txt")


# ------------------------------------------------------------------ class folders
def class_vision(folder_images, classes, templates):
    """Each image at its class's embedding as the templates make it: zero-shot is right only
    when class names, their order and the templates are the ones the loader read."""
    table = {}
    for png, name in folder_images:
        v = normalise(oracle_text([t.format(name) for t in templates])).mean(axis=0)
        table[eval_pixels(png, 32).numpy().tobytes()] = v / np.linalg.norm(v)
    encode = lambda pixels: torch.from_numpy(np.stack([table[p.numpy().tobytes()] for p in pixels]))  # noqa: E731
    return encode


def test_class_folders_with_class_names_and_the_shipped_imagenet_templates(cfg, tmp_path):
    root = tmp_path / "shapes"
    shapes = sorted({s.labels["shape"] for s in EN})
    for i, shape in enumerate(shapes):           # folders in ids, names in classnames.txt
        images(root, [s for s in EN if s.labels["shape"] == shape], folder=f"n{i:02d}")
    hostile(root, tmp_path, folder="z_bad")      # a class of broken and outward files...
    (root / "z_bad" / "sub").mkdir()             # ...and a folder: none of it usable
    (root / "classnames.txt").write_text("".join(f"{s} shape\n" for s in shapes) + "bad files\n")
    assert detect_format(root) == "class_folders"
    templates = (TEMPLATES / "imagenet.txt").read_text().splitlines()
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}."
    names = [f"{s} shape" for s in shapes] + ["bad files"]
    encode = class_vision([(s.image, f"{s.labels['shape']} shape") for s in EN], names, templates)
    seen = []
    model = EvalModel("oracle", encode, encode, lambda t, s: (seen.append((s, t)), oracle_text(t))[1], 32, 4)
    spec, loaded, out = score(cfg, root, model, templates="imagenet")
    assert loaded.classes == names and len(loaded.templates) == 80
    assert loaded.accounting()["problems"] == {"not_an_image": 1, "outside_folder": 1, "unreadable_image": 1}
    assert out[f"manifest/{spec.title}/zeroshot"]["top1"] == 100.0
    assert out[f"manifest/{spec.title}/zeroshot"]["chance_top1"] == pytest.approx(100 / len(names))
    assert {s for s, _ in seen} == {"single"} and "a bad photo of a circle shape." in seen[0][1]
    (root / "templates.txt").write_text("a {c} drawn.\n")    # the folder's own, CLIP_benchmark style
    assert Suite(cfg).load(spec_for(root), root).templates == ["a {} drawn."]
    (root / "classnames.txt").write_text("one\n")
    with pytest.raises(ValueError, match="1 class names for"):
        Suite(cfg).load(spec_for(root), root)


# ------------------------------------------------------------------ Karpathy JSON
def test_karpathy_json_keeps_the_split_and_rejects_each_caption_of_a_bad_entry(cfg, tmp_path):
    root = tmp_path / "coco"
    names = images(root, folder="val2014")
    hostile(root, tmp_path)
    entries = [{"filepath": "val2014", "filename": n.split("/")[1], "split": "test",
                "sentences": [{"raw": f"{s.caption} ({j})"} for j in range(5)]}
               for n, s in zip(names, EN)]
    entries += [{"filepath": "val2014", "filename": names[0].split("/")[1], "split": "train",
                 "sentences": [{"raw": "a training caption"}]},
                {"filename": "../outside.png", "split": "test", "sentences": [{"raw": "x"}] * 5},
                {"filename": "img/broken.png", "split": "test", "sentences": [{"raw": "y"}] * 2},
                {"filepath": "val2014", "filename": names[1].split("/")[1], "split": "test",
                 "sentences": [{"raw": ""}]}]
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))
    path = root / "dataset_coco.json"
    assert detect_format(path) == "karpathy"
    seen = []
    pairs = [(s.image, f"{s.caption} ({j})") for s in EN for j in range(5)]
    spec, loaded, out = score(cfg, path, oracle(pairs, seen))
    acc = loaded.accounting()
    assert (acc["used"], acc["excluded"]) == (30, 1)
    assert acc["problems"] == {"outside_folder": 5, "unreadable_image": 2, "missing_text": 1}
    r = out[f"manifest/{spec.title}/retrieval"]
    assert (r["n_images"], r["n_texts"], r["i2t_R@1"], r["t2i_R@1"]) == (6.0, 30.0, 100.0, 100.0)
    assert set(seen) == {"short"}


def table_model(image_vectors: dict[bytes, np.ndarray], text_vectors: dict[str, np.ndarray]) -> EvalModel:
    table = {eval_pixels(png, 32).numpy().tobytes(): v for png, v in image_vectors.items()}
    encode = lambda pixels: torch.from_numpy(np.stack([table[p.numpy().tobytes()] for p in pixels]))  # noqa: E731
    return EvalModel("table", encode, encode, lambda t, s: np.stack([text_vectors[x] for x in t]), 32, 4)


def test_karpathy_counts_as_clip_benchmark_each_caption_a_query(cfg, tmp_path):
    """Two images, two captions each. Image A's first caption points at B, B's second at A:
    each image still has a caption at rank 1 (I2T R@1 = 100), but only 2 of the 4 caption
    queries find their image (T2I R@1 = 50). A caption both entries share stays two queries."""
    root = tmp_path / "flickr"
    names = images(root, EN[:2])
    a, b = np.eye(4, dtype=np.float32)[:2]
    lean = lambda x, y: (0.9 * x + 0.1 * y) / np.linalg.norm(0.9 * x + 0.1 * y)  # noqa: E731
    texts = {"A0": lean(b, a), "A1": a, "B0": b, "B1": lean(a, b), "shared": (a + b) / np.sqrt(2)}
    entries = [{"filename": names[0].split("/")[1], "split": "test",
                "sentences": [{"raw": "A0"}, {"raw": "A1"}, {"raw": "shared"}]},
               {"filename": names[1].split("/")[1], "split": "test",
                "sentences": [{"raw": "B0"}, {"raw": "B1"}, {"raw": "shared"}]}]
    (root / "data.json").write_text(json.dumps({"images": entries}))
    spec, _, out = score(cfg, root / "data.json", table_model({EN[0].image: a, EN[1].image: b}, texts),
                         image_dir="img")
    r = out[f"manifest/{spec.title}/retrieval"]
    assert (r["n_images"], r["n_texts"]) == (2.0, 6.0)
    assert r["i2t_R@1"] == 100.0
    # T2I: A1 and B0 find their image; A0, B1 do not; each "shared" ties its two images: a miss
    assert r["t2i_R@1"] == pytest.approx(100 * 2 / 6)
    assert r["t2i_R@5"] == 100.0


# ------------------------------------------------------------------ long captions
@pytest.mark.parametrize("layout", ["urban", "sharegpt4v", "docci"])
def test_long_caption_layouts_scored_with_the_long_prompt_set(cfg, tmp_path, layout):
    root = tmp_path / layout
    hostile(root, tmp_path)
    if layout == "urban":
        (root / "image").mkdir()
        (root / "caption").mkdir()
        for i, s in enumerate(EN):
            (root / "image" / f"{i}.png").write_bytes(s.image)
            (root / "caption" / f"{i}.txt").write_text(s.long_caption)
        (root / "caption" / "orphan.txt").write_text("a caption without its image")
        (root / "image" / "alone.png").write_bytes(EN[0].image)
        path, problems = root, {"missing_image": 1, "missing_text": 1}
    else:
        names = images(root, folder="images")
        records = [{"image": n.split("/")[1], "long": s.long_caption} for n, s in zip(names, EN)]
        records.append({"image": "../../outside.png", "long": "escapes"})  # images/../../
        if layout == "sharegpt4v":
            path = root / "share.json"
            path.write_text(json.dumps([{"image": r["image"], "conversations": [
                {"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": r["long"]}]}
                for r in records]))
        else:
            path = root / "docci_descriptions.jsonlines"
            path.write_text("".join(json.dumps({"image_file": r["image"], "description": r["long"],
                                                "split": "test"}) + "\n" for r in records)
                            + json.dumps({"image_file": "x.png", "description": "t", "split": "train"}) + "\n")
        problems = {"outside_folder": 1}
    assert detect_format(path) == "long_captions"
    seen = []
    settings = {} if layout == "urban" else {"image_dir": "images"}
    if layout == "docci":
        settings["split"] = "test"
    spec, loaded, out = score(cfg, path, oracle([(s.image, s.long_caption) for s in EN], seen), **settings)
    assert loaded.accounting()["problems"] == problems
    assert loaded.excluded == (1 if layout == "docci" else 0)
    r = out[f"manifest/{spec.title}/long_retrieval"]
    assert r["i2t_R@1"] == r["t2i_R@1"] == 100.0 and r["n_images"] == 6.0
    assert set(seen) == {"long"}


# ------------------------------------------------------------------ XM3600
@pytest.mark.parametrize("style", ["xm3600", "simple"])
def test_xm3600_captions_per_language_single_prompt(cfg, tmp_path, style):
    root = tmp_path / "xm"
    names = images(root, folder="images")
    hostile(root, tmp_path)
    lines = []
    for n, en, de in zip(names, EN, DE):
        key = n.split("/")[1].removesuffix(".png")
        (root / "images" / f"{key}.jpg").write_bytes(en.image)   # the release's .jpg names
        captions = {"en": [en.caption], "de": [de.caption, de.caption + " Zwei."], "fr": ["ignoré"]}
        lines.append({"image/key": key, **{k: {"caption": v} for k, v in captions.items()}}
                     if style == "xm3600" else {"image": f"{key}.jpg", "captions": captions})
    lines.append({"image/key": "../../outside", "en": {"caption": ["x"]}} if style == "xm3600"
                 else {"image": "../../outside.png", "captions": {"en": ["x"]}})
    lines.append({"image/key": "k", "fr": {"caption": ["seulement"]}} if style == "xm3600"
                 else {"image": "k.jpg", "captions": {"fr": ["seulement"]}})
    path = root / "captions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    assert detect_format(path) == "xm3600"
    seen = []
    pairs = [(en.image, t) for en, de in zip(EN, DE) for t in (en.caption, de.caption, de.caption + " Zwei.")]
    spec, loaded, out = score(cfg, path, oracle(pairs, seen), image_dir="images", languages=["en", "de"])
    acc = loaded.accounting()
    assert (acc["used"], acc["excluded"]) == (18, 1)
    assert acc["problems"] == {"outside_folder": 1, "unreadable_row": 1}
    assert sorted(out) == [f"manifest/{spec.title}/multilingual/de", f"manifest/{spec.title}/multilingual/en"]
    de = out[f"manifest/{spec.title}/multilingual/de"]
    assert (de["n_images"], de["n_texts"], de["i2t_R@1"], de["t2i_R@1"]) == (6.0, 12.0, 100.0, 100.0)
    assert set(seen) == {"single"}


def test_a_prompt_set_chosen_for_a_benchmark_is_used(cfg, tmp_path):
    root = tmp_path / "bench"
    names = images(root)
    path = write_manifest(root, "csv", [{"image": n, "text": s.caption} for n, s in zip(names, EN)])
    seen = []
    score(cfg, path, oracle([(s.image, s.caption) for s in EN], seen), prompt_set="long")
    assert set(seen) == {"long"}
