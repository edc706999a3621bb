"""FLAME and CLIP on a validation set, to choose settings without looking at the test split.

The validation scenes are drawn like the training scenes (training phrasebook, no held-out
colour/shape pair) from a random stream of their own (``split="val"``), so they are neither
training rows nor test rows. Each scene is captioned in every language of the profile's scenes
source. Both trained models of the profile's data dir run the same benchmarks as the evaluate
stage (``run_benchmarks``); the headline figures of issue 7 are printed for both, with the
FLAME/CLIP ratio.

    .venv/bin/python bench/validation.py                      # default profile, 200 scenes
    .venv/bin/python bench/validation.py --set data_dir=data/ablations/whiten --n 100
"""
from __future__ import annotations

import argparse
import hashlib
import json

import polars as pl

from flame_pipeline.config import ScenesSource, load_profile
from flame_pipeline.data.scene_lexicon import get_language
from flame_pipeline.data.scenes import _rng, describe, render_png, sample_scene
from flame_pipeline.eval.encoders import MODELS, load_eval_model
from flame_pipeline.eval.evaluate import classification_tasks, run_benchmarks
from flame_pipeline.eval.headline import figures


def validation_rows(src: ScenesSource, seed: int, n: int) -> tuple[pl.DataFrame, dict[str, bytes]]:
    """``n`` validation scenes, one row per language, in the evaluation's row schema."""
    rows, images = [], {}
    for i in range(n):
        scene = sample_scene(_rng(seed, "val", i), held_out=False)
        png = render_png(scene, src.image_size)
        for code in src.languages:
            lang = get_language(code)
            short, long = describe(scene, lang, lang.train, _rng(seed, "val", i, code))
            key = f"scenes/val/{code}/{i:06d}"
            images[key] = png
            rows.append({"key": key, "source": "scenes", "split": "val", "language": code,
                         "caption": short, "long_caption": long, "labels": json.dumps(scene.labels()),
                         "sha256": hashlib.sha256(png).hexdigest(), "hard_negative": False})
    return pl.DataFrame(rows), images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--n", type=int, default=200, help="validation scenes")
    args = ap.parse_args()
    cfg = load_profile(args.profile, args.params, args.overrides + [
        "eval.benchmarks=[zeroshot, retrieval, long_retrieval, multilingual]"])
    src = next(s for s in cfg.download.sources if isinstance(s, ScenesSource))
    rows, images = validation_rows(src, cfg.seed, args.n)
    tasks, _ = classification_tasks(rows, rows)
    metrics = []
    for name in MODELS:
        results = run_benchmarks(cfg, load_eval_model(cfg, name), rows, rows.clear(), images, tasks,
                                 truncate=lambda texts: texts)
        metrics += [(name, b, k, float(v)) for b, ms in results.items() for k, v in ms.items()]
    m = pl.DataFrame(metrics, schema=["model", "benchmark", "metric", "value"], orient="row")
    flame, clip = figures(m, "flame"), figures(m, "clip")
    print(f"validation: {args.n} scenes x {len(src.languages)} languages, {cfg.data_dir}, "
          f"overrides {args.overrides}")
    print(f"{'figure':32s} {'FLAME':>7s} {'CLIP':>7s} {'ratio':>6s}")
    for fig, f in flame.items():
        c = clip[fig]
        if f is None or c is None:
            continue
        print(f"{fig:32s} {f:7.1f} {c:7.1f} {f / c if c else float('inf'):6.2f}")


if __name__ == "__main__":
    main()
