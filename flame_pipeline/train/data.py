"""The training data: the curated train split, streamed from its shards by mosaicml-streaming.

``TrainStream`` is a ``StreamingDataset`` over ``curated/train_shards`` (key, image, caption,
long_caption, in the captions table's order; the curate stage writes them), or over a remote
copy of them (``train.remote``: any URL streaming reads, or a folder), cached under
``Paths.stream_cache``. streaming gives each rank and DataLoader worker its part of a seeded
per-epoch shuffle (``train.seed``) over ``train.canonical_nodes`` canonical nodes: the global
batch of a step is the same for any number of ranks, nodes and workers, and its state (epoch,
sample in epoch) resumes a run exactly mid-epoch (``stream_state``, kept in the checkpoint).
Images are decoded and augmented in ``get_item``, that is in the DataLoader's workers
(``train.num_workers``). Nothing reads the data before the first step: training checks only that
every shard file an index names is there with its recorded size, and the index tables' keys.

An epoch is ``samples // batch_size`` steps (the samples past the last whole global batch wait
for the next epoch's shuffle). A sample's randomness (crop, drawn embeddings, caption choice)
comes from a generator seeded by (seed, epoch, sample id): the same whichever rank or worker
loads it.

FLAME's texts (``StoredEmbeddings``) are the embed stage's shards, which hold the curated rows
of ``embed.splits`` in the captions table's order: train sample i is the i-th train row there.
The keys of both index tables are compared before training, and each sample's key when read;
a train sample without a stored embedding in ``train.pool`` is an error before the first step
(from the embed index's ``valid`` column).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader

from flame_pipeline.config import Profile
from flame_pipeline.distributed import world
from flame_pipeline.files import sha256_file
from flame_pipeline.paths import Paths
from flame_pipeline.shards import open_shards, shard_problems
from flame_pipeline.llm_files import llm_identity
from flame_pipeline.streaming_compat import StreamingDataset
from flame_pipeline.vision.preprocess import train_pixels


class DataError(ValueError):
    """Training inputs are missing or do not fit the params; the message says which."""


def item_generator(seed: int, epoch: int, sample: int) -> torch.Generator:
    """The generator of one sample in one epoch (well mixed, independent of rank and worker)."""
    state = np.random.SeedSequence([seed, epoch, sample]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def train_keys(paths: Paths) -> list[str]:
    if not paths.captions.is_file():
        raise DataError(f"curated captions not found: {paths.captions} (run the curate stage first)")
    table = pl.read_parquet(paths.captions, columns=["key", "split"])
    return table.filter(pl.col("split") == "train")["key"].to_list()


def check_shards(shards_dir: Path, stage: str) -> None:
    """A clear error unless ``shards_dir`` has its ``index.json`` and every shard file it names
    with its recorded size (streaming would wait forever on a missing one)."""
    if not (shards_dir / "index.json").is_file():
        raise DataError(f"shards not found: {shards_dir} (run the {stage} stage first)")
    problems = shard_problems(shards_dir)
    if problems:
        raise DataError(f"unreadable shards in {shards_dir}: {'; '.join(problems)[:300]} "
                        f"(re-run the {stage} stage)")


class TextSource(Protocol):
    """Where a sample's texts come from: stored embeddings (FLAME) or captions (CLIP)."""

    def texts(self, sample: int, row: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The text tensors of train sample ``sample`` (its streamed ``row``) for one step."""


def pool_mask(names: list[str], pool: list[str]) -> np.ndarray:
    """Which of the stored embeddings ``names`` the ``train.pool`` entries select."""
    if not pool:
        return np.ones(len(names), dtype=bool)
    sets = {n.split("/")[0] for n in names}
    unknown = [p for p in pool if p not in names and p not in sets]
    if unknown:
        raise DataError(f"train.pool entries {unknown} name no stored embedding; the embed stage "
                        f"stored {names} (prompt sets {sorted(sets)})")
    return np.array([n in pool or n.split("/")[0] in pool for n in names])


class StoredEmbeddings:
    """FLAME's texts: up to M of a sample's valid stored facet embeddings per step.

    M distinct embeddings in a random order, drawn without replacement from the sample's valid
    ones in the pool (``train.pool``, default all); a sample with fewer than M has each of them
    once, in a random order, then empty slots: ``texts`` [M, d] with zeros there and
    ``text_mask`` [M] false there (the loss counts no empty slot, so no text counts twice).
    """

    def __init__(self, cfg: Profile):
        paths = Paths.of(cfg)
        if not paths.embed_meta.is_file() or not paths.embed_index.is_file():
            raise DataError(f"embeddings not found under {paths.embed} (run the embed stage first)")
        check_shards(paths.embed_shards, "embed")
        self.meta = json.loads(paths.embed_meta.read_text())
        self.dim = int(self.meta["dim"])
        self.n_texts = len(self.meta["names"])
        self.positives = cfg.train.positives
        made = {"llm": self.meta.get("identity"), "layer": self.meta.get("layer")}
        wanted = {"llm": llm_identity(cfg.embed), "layer": cfg.embed.layer}
        if made != wanted:
            raise DataError(f"stored embeddings ({paths.embed_meta}) were made with {made}, but "
                            f"params give {wanted}: re-run the embed stage")
        self.pool = pool_mask(self.meta["names"], cfg.train.pool)
        index = pl.read_parquet(paths.embed_index, columns=["key", "split", "valid"]).with_row_index("row")
        self.index = index.drop("valid")
        train = index.filter(pl.col("split") == "train")
        if train["key"].to_list() != train_keys(paths):
            raise DataError(f"{paths.embed} was made from another curated table than "
                            f"{paths.captions}: re-run the embed stage")
        pooled = np.array(train["valid"].to_list(), dtype=bool).reshape(train.height, -1) & self.pool
        lacking = train.filter(pl.Series(~pooled.any(axis=1)))["key"]
        if len(lacking):
            raise DataError(f"{len(lacking)} train samples have no stored embedding in train.pool "
                            f"{cfg.train.pool} (e.g. {lacking.head(3).to_list()}); widen train.pool "
                            "(or leave it empty: every stored embedding)")
        self.rows = train["row"].to_numpy()
        self.shards = open_shards(paths.embed_shards)

    def keys(self) -> set[str]:
        """The keys of every stored row (all of ``embed.splits``)."""
        return set(self.index["key"].to_list())

    def _stored(self, row: int) -> dict:
        stored = self.shards.get_item(row)
        emb, valid = stored["emb"], stored["valid"].astype(bool)
        if emb.shape != (self.n_texts, self.dim) or valid.shape != (self.n_texts,):
            raise DataError(f"{stored['key']}: stored embedding shape {emb.shape} / valid "
                            f"{valid.shape}, expected ({self.n_texts}, {self.dim}): re-run the embed stage")
        if not np.isfinite(emb[valid]).all():
            raise DataError(f"{stored['key']}: non-finite stored embedding: re-run the embed stage")
        return stored

    def queries(self, keys: list[str]) -> np.ndarray:
        """[n, d]: each key's stored ``short`` facets (else its ``single`` one) averaged and
        normalised, as a short English caption's query at evaluation (train/check.py)."""
        names = self.meta["names"]
        chosen = np.array([n.split("/")[0] == ("short" if any(n.startswith("short/") for n in names)
                                               else "single") for n in names])
        where = dict(self.index.filter(pl.col("key").is_in(keys)).select("key", "row").iter_rows())
        out = []
        for key in keys:
            stored = self._stored(where[key])
            mask = chosen & stored["valid"].astype(bool)
            if not mask.any():
                raise DataError(f"{key}: no stored {'/'.join(sorted(set(np.array(names)[chosen])))} embedding to check with")
            v = stored["emb"][mask].astype(np.float32).mean(axis=0)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    def texts(self, sample: int, row: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        stored = self._stored(int(self.rows[sample]))
        if stored["key"] != row["key"]:
            raise DataError(f"train sample {sample} is {row['key']!r} in the train shards but "
                            f"{stored['key']!r} in the embed shards: re-run the embed stage")
        pool = torch.from_numpy(np.flatnonzero(stored["valid"].astype(bool) & self.pool))
        pick = pool[torch.randperm(len(pool), generator=generator)[: self.positives]].numpy()
        texts = np.zeros((self.positives, self.dim), np.float32)
        texts[: len(pick)] = stored["emb"][pick]
        mask = torch.zeros(self.positives, dtype=torch.bool)
        mask[: len(pick)] = True
        return {"texts": torch.from_numpy(texts), "text_mask": mask}


class TrainStream(StreamingDataset):
    """The train split's samples as streamed training items (see the module doc): ``sample``
    (the row of the train shards), ``pixels`` and the text source's tensors, in the order of
    streaming's seeded shuffle."""

    def __init__(self, cfg: Profile, texts: TextSource, local_batch: int):
        paths = Paths.of(cfg)
        t = cfg.train
        if t.remote is None:
            check_shards(paths.train_shards, "curate")
        self.index_path = (paths.stream_cache if t.remote else paths.train_shards) / "index.json"
        super().__init__(remote=t.remote, local=str(self.index_path.parent), batch_size=local_batch,
                         shuffle=True, shuffle_seed=cfg.train_seed,
                         num_canonical_nodes=t.canonical_nodes)
        self.seed = cfg.train_seed
        self.image_size = cfg.vision.image_size
        self.crop_scale = t.crop_scale
        self.text_source = texts

    def fingerprint(self) -> dict:
        """What a checkpoint must have been trained on: the samples and their shards' index."""
        return {"samples": int(self.size), "index_sha256": sha256_file(self.index_path)}

    def get_item(self, sample_id: int, retry: int = 7) -> dict:
        row = super().get_item(sample_id, retry)
        gen = item_generator(self.seed, self.next_epoch - 1, sample_id)
        try:
            pixels = train_pixels(row["image"], self.image_size, self.crop_scale, gen)
        except ValueError as err:    # preprocess.decode names what is wrong
            raise DataError(f"{row['key']}: {err} in {self.index_path.parent}: re-run the "
                            "download and curate stages") from None
        return {"sample": torch.tensor(sample_id), "pixels": pixels,
                **self.text_source.texts(sample_id, row, gen)}


def local_batch(cfg: Profile) -> int:
    """This rank's share of ``train.batch_size``."""
    size = world()[1]
    if cfg.train.batch_size % size:
        raise DataError(f"train.batch_size {cfg.train.batch_size} is not divisible by the {size} processes")
    return cfg.train.batch_size // size


def stream_state(data: TrainStream, epoch: int, sample_in_epoch: int) -> dict:
    """streaming's resume state: start ``epoch`` at its ``sample_in_epoch``-th global sample."""
    return {"epoch": epoch, "sample_in_epoch": sample_in_epoch,
            "num_canonical_nodes": data.num_canonical_nodes, "shuffle_seed": data.shuffle_seed,
            "initial_physical_nodes": None}


def steps_per_epoch(data: TrainStream, batch_size: int) -> int:
    if data.size < batch_size:
        raise DataError(f"only {data.size} train samples, fewer than train.batch_size {batch_size}")
    return data.size // batch_size


def step_batches(data: TrainStream, batch_size: int, start: int, stop: int, num_workers: int,
                 pin_memory: bool, resume: dict | None = None) -> Iterator[tuple[int, dict, dict]]:
    """(step, this rank's batch, the stream state after the step) for steps ``start + 1`` ..
    ``stop``; ``resume`` is the state a checkpoint saved at ``start``."""
    per_epoch = steps_per_epoch(data, batch_size)
    step = start
    while step < stop:
        epoch, done = divmod(step, per_epoch)
        state = resume if resume is not None and step == start else \
            stream_state(data, epoch, done * batch_size)
        data.next_epoch = state["epoch"]     # else streaming takes a state behind it as stale
        data.load_state_dict(state)
        loader = DataLoader(data, batch_size=data.batch_size, num_workers=num_workers,
                            drop_last=True, pin_memory=pin_memory)
        for batch in loader:
            step += 1
            epoch, done = divmod(step, per_epoch)
            yield step, batch, stream_state(data, epoch, done * batch_size)
            if step == stop or done == 0:
                break
