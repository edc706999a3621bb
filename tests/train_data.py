"""A small training data_dir in the documented formats (docs/DESIGN.md), for the training tests.

Raw MDS shards (key, image PNG) and the manifest's key, status and sha256, curated/captions.parquet and curated/train_shards (key, image,
caption, long_caption of the train rows), embed MDS shards (key, emb [E, d] fp16 unit rows,
valid [E]), embed/index.parquet and embed/meta.json. Samples come in ``classes`` learnable classes:
an image is a flat colour of its class plus noise, and its embeddings are its class vector plus
a little per-facet noise, so a model can learn to match them.
"""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import polars as pl
from PIL import Image

from flame_pipeline.config import Profile
from flame_pipeline.data.curate import TRAIN_COLUMNS
from flame_pipeline.paths import Paths
from flame_pipeline.shards import write_shards
from flame_pipeline.llm_files import llm_identity

NAMES = ["single", "short/0", "short/1", "short/2"] + [f"long/{i}" for i in range(7)]
COLOURS = ["red", "green", "blue", "yellow", "purple", "cyan", "orange", "grey"]


def png(colour: np.ndarray, size: int, rng: np.random.Generator) -> bytes:
    pixels = np.clip(colour[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_training_data(cfg: Profile, *, n_train: int = 24, n_test: int = 4, dim: int = 64,
                        classes: int = 4, image_size: int = 32, seed: int = 0,
                        corrupt_image: tuple[str, ...] = (), shard_bytes: int = 1 << 26) -> None:
    """Write the data under ``cfg``'s data_dir (the ``make_data`` fixture's, and the training
    benchmark's).

    Keys are ``s000``, ``s001``, ...; ``corrupt_image`` stores those keys' PNGs cut in half;
    ``shard_bytes`` caps the size of one shard file.
    """
    paths = Paths.of(cfg)
    rng = np.random.default_rng(seed)
    colours = rng.uniform(30, 225, (classes, 3))
    class_vecs = rng.normal(size=(classes, dim))
    n = n_train + n_test
    keys = [f"s{i:03d}" for i in range(n)]
    labels = [i % classes for i in range(n)]
    has_long = [i % 2 == 0 for i in range(n)]

    raw_rows = [{"key": k, "image": png(colours[c], image_size, rng)} for k, c in zip(keys, labels)]
    for row in raw_rows:
        if row["key"] in corrupt_image:
            row["image"] = row["image"][: len(row["image"]) // 2]      # a truncated PNG
    write_shards(paths.raw_shards, {"key": "str", "image": "bytes"}, raw_rows, size_limit=shard_bytes)
    pl.DataFrame({"key": keys, "status": ["kept"] * n,
                  "sha256": [hashlib.sha256(r["image"]).hexdigest() for r in raw_rows]}
                 ).write_parquet(paths.manifest)

    emb_rows = []
    for k, c, long in zip(keys, labels, has_long):
        emb = class_vecs[c][None, :] + 0.3 * rng.normal(size=(len(NAMES), dim))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        valid = np.array([1] * 4 + [int(long)] * 7, dtype=np.uint8)
        emb[valid == 0] = 0.0
        emb_rows.append({"key": k, "emb": emb.astype(np.float16), "valid": valid})
    write_shards(paths.embed_shards, {"key": "str", "emb": "ndarray:float16", "valid": "ndarray:uint8"},
                 emb_rows, size_limit=shard_bytes)
    split = ["train"] * n_train + ["test"] * n_test
    pl.DataFrame({"key": keys, "split": split, "valid": [r["valid"].tolist() for r in emb_rows]},
                 schema={"key": pl.String, "split": pl.String, "valid": pl.List(pl.UInt8)}
                 ).write_parquet(paths.embed_index)
    paths.embed_meta.write_text(json.dumps({"model": cfg.embed.llm, "identity": llm_identity(cfg.embed),
                                            "layer": cfg.embed.layer, "dim": dim, "names": NAMES}))

    paths.curated.mkdir(parents=True, exist_ok=True)
    caption = [f"a {COLOURS[c % len(COLOURS)]} square." for c in labels]
    long_caption = [f"{t[:-1]} drawn flat, filling the whole picture, with a little noise."
                    if long else None for t, long in zip(caption, has_long)]
    write_shards(paths.train_shards, TRAIN_COLUMNS,
                 ({"key": r["key"], "image": r["image"], "caption": c, "long_caption": lc or ""}
                  for r, c, lc in zip(raw_rows[:n_train], caption, long_caption)), size_limit=shard_bytes)
    pl.DataFrame({
        "key": keys, "source": ["fixture"] * n, "split": split, "language": ["en"] * n,
        "caption": caption, "long_caption": long_caption,
        "labels": [json.dumps({"colour": COLOURS[c % len(COLOURS)]}) for c in labels],
        "group": [None] * n, "n_tokens": [4] * n, "n_tokens_long": [14 if lg else None for lg in has_long],
        "is_long": [False] * n, "dup_group": keys,
    }).write_parquet(paths.captions)

