"""FLAME and CLIP on a validation set, to choose settings without looking at the test split.

The validation scenes (``flame_pipeline.data.scenes.validation_scenes``) are drawn like the
training scenes (no held-out colour/shape pair) from a random stream of their own and captioned
with a phrasebook of their own, so they are neither training rows nor test rows, and, like the
test's, their phrasings are new to the model; each is captioned in every language of the
profile's scenes source and, as in the test split, comes with an English hard negative. Both
trained models of the profile's data dir run the same benchmarks as the evaluate stage
(``run_benchmarks``); the headline figures of issue 7 are printed for both, with the FLAME/CLIP
ratio.

    .venv/bin/python experiments/validation.py                      # scenes profile, 200 scenes
    .venv/bin/python experiments/validation.py --set data_dir=data/ablations/whiten --n 100
"""
from __future__ import annotations

import argparse
import hashlib
import json

import polars as pl

from flame_pipeline.config import CuratedBenchmark, Profile, ScenesSource, load_profile
from flame_pipeline.data.scenes import validation_scenes
from flame_pipeline.eval.data import HARD_NEGATIVE
from flame_pipeline.eval.encoders import MODELS, load_eval_model
from flame_pipeline.eval.evaluate import classification_tasks, run_benchmarks
from flame_pipeline.eval.headline import figures


def validation_rows(src: ScenesSource, seed: int, n: int) -> tuple[pl.DataFrame, dict[str, bytes]]:
    """``validation_scenes`` in the evaluation's row schema, and their images by key."""
    rows, images = [], {}
    for r in validation_scenes(src, seed, n):
        images[r.key] = r.image
        rows.append({"key": r.key, "source": r.source, "split": r.split, "language": r.language,
                     "caption": r.caption, "long_caption": r.long_caption,
                     "labels": json.dumps(r.labels), "sha256": hashlib.sha256(r.image).hexdigest(),
                     "hard_negative": HARD_NEGATIVE in r.labels})
    return pl.DataFrame(rows), images


def validation_metrics(cfg: Profile, n: int) -> pl.DataFrame:
    """Metric rows (model, benchmark, metric, value) of both trained models of ``cfg`` on ``n``
    validation scenes."""
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"benchmarks": [
        CuratedBenchmark(kind=k) for k in ("zeroshot", "retrieval", "long_retrieval", "multilingual")]})})
    src = next(s for s in cfg.download.sources if isinstance(s, ScenesSource))
    rows, images = validation_rows(src, cfg.seed, n)
    tasks, _ = classification_tasks(rows, rows)
    metrics = []
    for name in MODELS:
        results = run_benchmarks(cfg, load_eval_model(cfg, name), rows, rows.clear(), images, tasks,
                                 truncate=lambda texts: texts)
        metrics += [(name, b, k, float(v)) for b, ms in results.items() for k, v in ms.items()]
    return pl.DataFrame(metrics, schema=["model", "benchmark", "metric", "value"], orient="row")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="scenes")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--n", type=int, default=200, help="validation scenes")
    args = ap.parse_args()
    cfg = load_profile(args.profile, args.params, args.overrides)
    m = validation_metrics(cfg, args.n)
    flame, clip = figures(m, "flame"), figures(m, "clip")
    print(f"validation: {args.n} scenes, {cfg.data_dir}, overrides {args.overrides}")
    print(f"{'figure':32s} {'FLAME':>7s} {'CLIP':>7s} {'ratio':>6s}")
    for fig, f in flame.items():
        c = clip[fig]
        if f is None or c is None:
            continue
        print(f"{fig:32s} {f:7.1f} {c:7.1f} {f / c if c else float('inf'):6.2f}")


if __name__ == "__main__":
    main()
