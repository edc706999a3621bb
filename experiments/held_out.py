"""Long-caption retrieval on the test scenes, split by whether a scene shows a colour/shape pair
that no training scene shows (``HELD_OUT_COMBOS``): which part of the test costs FLAME its
long-caption ratio over CLIP (issue 7). It reports; it chooses nothing.

The gallery is the evaluate stage's ``long_retrieval`` one (English long captions of the test
scenes and their hard negatives, through the same prompt set); each query's hit at R@1 is taken
on the whole gallery, then averaged over the queries whose scene (image for I2T, the scene the
caption describes for T2I) does or does not show a held-out pair. Scenes are rebuilt from the
rows' ``source_ref`` in the download manifest (seed, split, index) with the generator itself.

    .venv/bin/python experiments/held_out.py                               # the scenes run
    .venv/bin/python experiments/held_out.py --set data_dir=data/seeds/seeds-seed-1
"""
from __future__ import annotations

import argparse
from urllib.parse import parse_qs, urlsplit

import numpy as np
import polars as pl

from flame_pipeline.config import Profile, load_profile
from flame_pipeline.data.scenes import HELD_OUT_COMBOS, evaluation_scenes
from flame_pipeline.eval.data import load_images, load_rows
from flame_pipeline.eval.encoders import MODELS, load_eval_model
from flame_pipeline.eval.curated import per_row
from flame_pipeline.eval.metrics import first_relevant_rank, pair_relation
from flame_pipeline.eval.prompt_sets import long_set
from flame_pipeline.paths import Paths


def shows_held_out(source_ref: str) -> bool:
    """Whether the scene of a scenes row (its ``source_ref``) shows a held-out pair."""
    q = {k: v[0] for k, v in parse_qs(urlsplit(source_ref).query).items()}
    scene, negative = evaluation_scenes(int(q["seed"]), q["split"], int(q["index"]))
    shown = negative if q.get("negative") == "1" else scene
    return any((o.colour, o.shape) in HELD_OUT_COMBOS for o in shown.objects)


def long_hits(cfg: Profile) -> dict[str, pl.DataFrame]:
    """Per model, one row per query: direction, held_out, hit (R@1 on the whole gallery)."""
    paths = Paths.of(cfg)
    rows = load_rows(paths).filter((pl.col("source") == "scenes") & (pl.col("language") == "en")
                                   & pl.col("long_caption").is_not_null())
    refs = pl.read_parquet(paths.manifest, columns=["key", "source_ref"])
    rows = rows.join(refs, on="key", how="left", maintain_order="left")
    images = load_images(paths, rows["key"])
    held = np.array([shows_held_out(r) for r in rows["source_ref"]])
    rel = pair_relation(rows["sha256"].to_list(), rows["long_caption"].to_list())
    texts = [rows["long_caption"][int(i)] for i in rel.text_rows]
    out = {}
    for name in MODELS:
        model = load_eval_model(cfg, name)
        img = per_row(model.image_embeddings, rows, images)[rel.image_rows]
        sim = img @ model.text_embeddings(texts, long_set(cfg.eval.prompt_mode)).T
        i2t = first_relevant_rank(sim, rel.relation) == 0
        t2i = first_relevant_rank(np.ascontiguousarray(sim.T), rel.relation.T) == 0
        out[name] = pl.concat([
            pl.DataFrame({"direction": "I2T", "held_out": held[rel.image_rows], "hit": i2t}),
            pl.DataFrame({"direction": "T2I", "held_out": held[rel.text_rows], "hit": t2i})])
    return out


def table(hits: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """R@1 (%) of each model per direction and subset, the query count and FLAME / CLIP."""
    per = [h.group_by("direction", "held_out").agg(pl.len().alias("queries"),
                                                   (100 * pl.col("hit").mean()).alias(m))
           for m, h in hits.items()]
    t = per[0].join(per[1].drop("queries"), on=["direction", "held_out"])
    return t.with_columns((pl.col("flame") / pl.col("clip")).round(2).alias("ratio")) \
        .sort("direction", "held_out")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default="scenes")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_profile(args.profile, args.params, args.overrides)
    print(f"long-caption R@1 on the test scenes by held-out pair, {cfg.data_dir}")
    with pl.Config(tbl_rows=-1, float_precision=1, tbl_hide_dataframe_shape=True):
        print(table(long_hits(cfg)))


if __name__ == "__main__":
    main()
