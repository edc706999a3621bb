"""A user's manifest: bad rows are counted and reported, good rows are benchmarked per language."""
import json
import os

import polars as pl
import pytest

from flame_pipeline.config import ScenesSource, load_profile
from flame_pipeline.data.scenes import generate_scenes
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.user_benchmark import benchmark, read_manifest

from eval_oracle import OracleVision, oracle_text

CFG = load_profile("tiny", "params.yaml")
SCENES = [s for s in generate_scenes(ScenesSource(n_train=0, n_test=6, image_size=32,
                                                  languages=["en", "de"], hard_negatives=False),
                                     seed=1)]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "bench"
    (root / "img").mkdir(parents=True)
    rows = []
    for s in SCENES:   # one image per scene, captioned in English and German
        name = f"img/{s.key.split('/')[-1]}.png"
        (root / name).write_bytes(s.image)
        rows.append({"image": name, "text": s.caption, "language": s.language,
                     "label": s.labels["shape"]})
    (tmp_path / "outside.png").write_bytes(SCENES[0].image)
    (root / "img" / "broken.png").write_bytes(b"not a png")
    os.symlink(tmp_path / "outside.png", root / "img" / "link.png")
    bad = [{"image": "../outside.png", "text": "escapes"},
           {"image": str(tmp_path / "outside.png"), "text": "absolute"},
           {"image": "img/link.png", "text": "symlink out"},
           {"image": "img/nope.png", "text": "missing"},
           {"image": "img/broken.png", "text": "broken"},
           {"image": rows[0]["image"], "text": "  "}]
    return root, rows, bad


def write(root, fmt, rows):
    path = root / f"manifest.{fmt}"
    frame = pl.DataFrame(rows, schema={"image": pl.String, "text": pl.String,
                                       "language": pl.String, "label": pl.String})
    if fmt == "csv":
        frame.write_csv(path)
    elif fmt == "parquet":
        frame.write_parquet(path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def oracle_model(rows, root, seen):
    vision = OracleVision([((root / r["image"]).read_bytes(), r["text"]) for r in rows],
                          CFG.vision.image_size)
    return EvalModel("oracle", vision.encode_image, vision.pooled_features,
                     lambda t, s: (seen.append(s), oracle_text(t))[1],
                     CFG.vision.image_size, batch_size=4)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_bad_rows_are_counted_and_good_rows_benchmarked(folder, fmt):
    root, rows, bad = folder
    manifest = read_manifest(write(root, fmt, rows + bad))
    seen = []
    out = benchmark(CFG, oracle_model(rows, root, seen), manifest)
    assert out["rows"] == len(rows) + len(bad) and out["used"] == len(rows)
    assert out["problems"] == {"outside_folder": 3, "missing_image": 1, "unreadable_image": 1,
                               "missing_text": 1}
    assert [p["row"] for p in out["problem_rows"]] == list(range(len(rows) + 1, len(rows) + 7))
    assert sorted(out["retrieval"]) == ["de", "en"]
    for lang in ("de", "en"):
        assert out["retrieval"][lang]["i2t_R@1"] == 100.0
        assert out["retrieval"][lang]["n_images"] == 6.0
    assert set(seen) == {"short", "single"}        # English short set, German single prompt
    n_shapes = len({r["label"] for r in rows})
    assert out["zeroshot"]["n_images"] == 6 and out["zeroshot"]["n_classes"] == n_shapes
    assert 0.0 <= out["zeroshot"]["top1"] <= 100.0


def test_unparseable_lines_are_counted(folder):
    root, rows, _ = folder
    path = root / "m.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n{broken\n[1, 2]\n" + json.dumps(rows[1]) + "\n")
    manifest = read_manifest(path)
    assert [(n, r) for n, r, _ in manifest.problems] == [(2, "unreadable_row"), (3, "unreadable_row")]
    assert len(manifest.rows) == 2
    csv_path = root / "m.csv"
    csv_path.write_text("image,text\nimg/000000.png,a caption\nimg/000001.png,x,extra\nonly_one\n")
    assert [r for _, r, _ in read_manifest(csv_path).problems] == ["unreadable_row", "unreadable_row"]


def test_manifest_level_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown manifest format"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "m.csv").write_text("path,caption\na.png,b\n")
    with pytest.raises(ValueError, match=r"required column\(s\) \['image', 'text'\] missing"):
        read_manifest(tmp_path / "m.csv")


def test_no_usable_rows_is_an_error_counting_the_problems(folder):
    root, _, bad = folder
    with pytest.raises(ValueError, match=r"no usable rows \(6 read, missing_image: 1, missing_text: 1, "
                                         r"outside_folder: 3, unreadable_image: 1\)"):
        read_manifest(write(root, "jsonl", bad))
