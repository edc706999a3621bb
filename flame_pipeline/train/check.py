"""A small retrieval check during training (``train.eval_every`` steps; 0 = off): R@1 image to
text and text to image on ``train.eval_rows`` rows, logged beside the loss (the curve and
TensorBoard, ``eval_<split>/i2t_R@1``).

The rows: the validation split's when it can be read, that is when curation made one and the
embed stage stores it (``embed.splits`` lists ``val``: FLAME's queries are stored embeddings,
training never runs the LLM); else training rows, and the figure then measures fit, not
generalisation (its name says ``eval_train``). Never the test split. Within the split, rows in
key order with distinct captions (as ``data.splits.caption_key`` compares them) and distinct
images, the first ``eval_rows`` of them; both models check the same rules, FLAME among the
rows with stored embeddings.

FLAME's query of a row is the mean of its stored ``short`` facets (the short English caption's
prompt set at evaluation), else of its ``single`` one, normalised; CLIP's is its own text tower
on the caption. Images get the evaluation view (no augmentation) and the model runs in eval
mode without gradients: the check draws no random numbers, so training is the same with it or
without. Ties count against the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import polars as pl
import torch

from flame_pipeline.config import Profile
from flame_pipeline.data.splits import caption_key
from flame_pipeline.paths import Paths
from flame_pipeline.shards import open_shards, raw_rows, sample_at
from flame_pipeline.vision.preprocess import eval_batch


@dataclass(frozen=True)
class CheckRows:
    split: str                # "val" or "train"
    keys: list[str]
    captions: list[str]
    pixels: torch.Tensor      # [n, 3, H, W], the evaluation view


def check_rows(cfg: Profile, usable: Callable[[str], bool]) -> CheckRows:
    """The rows of the check (module doc); ``usable`` says which keys the model can check."""
    paths = Paths.of(cfg)
    table = pl.read_parquet(paths.captions, columns=["key", "split", "caption"])
    split = "val" if "val" in cfg.embed.splits and (table["split"] == "val").any() else "train"
    keys = [k for k, s in zip(table["key"], table["split"]) if s == split and usable(k)]
    rows = (table.filter(pl.col("key").is_in(keys))
                 .with_columns(seen=caption_key(pl.col("caption")))
                 .drop_nulls("seen").sort("key").unique("seen", keep="first", maintain_order=True))
    captions = dict(zip(rows["key"], rows["caption"]))
    # distinct images by the manifest's sha256; only the chosen rows' images are read
    manifest = pl.read_parquet(paths.manifest, columns=["key", "status", "sha256"])
    chosen = (rows.select("key").join(raw_rows(manifest).join(manifest, on="key"), on="key",
                                      maintain_order="left")
                  .unique("sha256", keep="first", maintain_order=True).head(cfg.train.eval_rows))
    keys = chosen["key"].to_list()
    shards = open_shards(paths.raw_shards)
    images = {}
    for key, i in zip(keys, chosen["raw"]):
        sample = sample_at(shards, i, key)
        if sample is None:
            raise ValueError(f"{paths.raw_shards} does not match {paths.manifest} at {key!r}: "
                             "re-run the download stage")
        images[key] = sample["image"]
    if len(keys) < 2:
        raise ValueError(f"train.eval_every: only {len(keys)} usable {split} rows to check retrieval on")
    return CheckRows(split, keys, [captions[k] for k in keys],
                     eval_batch([images[k] for k in keys], cfg.vision.image_size))


def recall_at_1(images: torch.Tensor, texts: torch.Tensor) -> dict[str, float]:
    """R@1 in percent both ways for normalised [n, d] embeddings whose row i belong together;
    a query is right when its own item alone scores at or above its own score."""
    sim = images.float() @ texts.float().T
    own = sim.diagonal()
    return {"i2t_R@1": 100.0 * float(((sim >= own[:, None]).sum(1) == 1).float().mean()),
            "t2i_R@1": 100.0 * float(((sim >= own[None, :]).sum(0) == 1).float().mean())}


def run_check(model: torch.nn.Module, rows: CheckRows, images: Callable, texts: Callable) -> dict[str, float]:
    """``recall_at_1`` of ``images(model, pixels)`` against ``texts(model)`` in eval mode,
    without gradients; the model's mode is restored. Figures named ``eval_<split>/...``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            figures = recall_at_1(images(model, rows.pixels.to(device)).cpu(), texts(model).cpu())
    finally:
        model.train(was_training)
    return {f"eval_{rows.split}/{k}": v for k, v in figures.items()}
