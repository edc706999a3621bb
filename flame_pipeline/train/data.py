"""The training data: train-split samples joined with their images and their texts.

Images come from the raw MDS shards (``key``, ``image``), FLAME's texts from the embed MDS
shards (``key``, ``emb``, ``valid``), both read through mosaicml-streaming
(``flame_pipeline.shards.open_shards``: random access to local MDS dirs through streaming's shard readers). The LLM is never
loaded. The train split is the curated captions table's ``split == "train"``.

Before the first step every train key is checked once; a sample missing its image, with an
undecodable image, missing its embeddings or with no valid embedding is skipped with a
recorded reason (``TrainSamples.skipped``), so nothing fails mid-epoch.

What a step sees is a pure function of (seed, step): the global batch of step s holds positions
s*B .. s*B+B-1 of an endless stream of seeded per-epoch permutations, rank r takes its slice,
and each position's randomness (crop, drawn embeddings, caption choice) comes from a generator
seeded by (seed, position). A resumed run therefore sees exactly the batches it would have
seen, and any number of ranks sees the same global batch.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import polars as pl
import torch
from PIL import Image
from torch.utils.data import Dataset

from flame_pipeline.config import Profile
from flame_pipeline.files import sha256_text
from flame_pipeline.paths import Paths
from flame_pipeline.shards import open_shards
from flame_pipeline.llm_files import llm_identity
from flame_pipeline.vision.preprocess import train_pixels


class DataError(ValueError):
    """Training inputs are missing or do not fit the params; the message says which."""


def item_generator(seed: int, position: int) -> torch.Generator:
    """The generator for one position of the sample stream (well mixed, independent of rank)."""
    state = np.random.SeedSequence([seed, position]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def train_keys(paths: Paths) -> list[str]:
    if not paths.captions.is_file():
        raise DataError(f"curated captions not found: {paths.captions} (run the curate stage first)")
    table = pl.read_parquet(paths.captions, columns=["key", "split"])
    return table.filter(pl.col("split") == "train")["key"].to_list()


def _image_problem(png: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
    except Exception as err:  # Pillow raises many kinds on corrupt bytes
        return f"undecodable image: {type(err).__name__}: {err}"
    return None


def readable_rows(dataset, shards_dir: Path, errors: list[str]) -> Iterator[tuple[int, dict]]:
    """Every row of the MDS dataset over ``shards_dir`` whose shard file is there with the
    size its ``index.json`` records; each other shard is described in ``errors`` and its rows
    are never touched (streaming waits forever on a second read of a shard it failed to find)."""
    index = json.loads((shards_dir / "index.json").read_text())
    start = 0
    for shard in index["shards"]:
        raw, n = shard["raw_data"], shard["samples"]
        path = shards_dir / raw["basename"]
        zipped = shard.get("zip_data") and (shards_dir / shard["zip_data"]["basename"]).is_file()
        if not path.is_file() and not zipped:
            errors.append(f"{raw['basename']} is missing ({n} rows)")
        elif path.is_file() and path.stat().st_size != raw["bytes"]:
            errors.append(f"{raw['basename']} has {path.stat().st_size} bytes, index.json says "
                          f"{raw['bytes']} ({n} rows)")
        else:
            for i in range(start, start + n):
                yield i, dataset.get_item(i)
        start += n


def missing_reason(what: str, errors: list[str]) -> str:
    if not errors:
        return f"no {what}"
    return f"no {what} (unreadable shards: {'; '.join(errors)[:200]})"


class TextSource(Protocol):
    """Where a sample's texts come from: stored embeddings (FLAME) or captions (CLIP)."""

    def problem(self, key: str) -> str | None:
        """Why ``key`` cannot be trained on, or None."""

    def texts(self, key: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The text tensors of one sample for one step."""


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
        if not paths.embed_meta.is_file() or not (paths.embed_shards / "index.json").is_file():
            raise DataError(f"embeddings not found under {paths.embed} (run the embed stage first)")
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
        self.shards = open_shards(paths.embed_shards)
        self.index: dict[str, int] = {}
        self.problems: dict[str, str] = {}
        self.errors: list[str] = []
        for i, row in readable_rows(self.shards, paths.embed_shards, self.errors):
            self.index[row["key"]] = i
            emb, valid = row["emb"], row["valid"]
            if emb.shape != (self.n_texts, self.dim) or valid.shape != (self.n_texts,):
                self.problems[row["key"]] = (f"embedding shape {emb.shape} / valid {valid.shape}, "
                                             f"expected ({self.n_texts}, {self.dim})")
            elif not (valid.astype(bool) & self.pool).any():
                self.problems[row["key"]] = ("no valid embedding" if cfg.train.pool == [] else
                                             f"no valid embedding in train.pool {cfg.train.pool}")
            elif not np.isfinite(emb[valid.astype(bool)]).all():
                self.problems[row["key"]] = "non-finite embedding"

    def problem(self, key: str) -> str | None:
        if key not in self.index:
            return missing_reason("embeddings in the embed shards", self.errors)
        return self.problems.get(key)

    def queries(self, keys: list[str]) -> np.ndarray:
        """[n, d]: each key's stored ``short`` facets (else its ``single`` one) averaged and
        normalised, as a short English caption's query at evaluation (train/check.py)."""
        names = self.meta["names"]
        chosen = np.array([n.split("/")[0] == ("short" if any(n.startswith("short/") for n in names)
                                               else "single") for n in names])
        out = []
        for key in keys:
            row = self.shards.get_item(self.index[key])
            mask = chosen & row["valid"].astype(bool)
            if not mask.any():
                raise DataError(f"{key}: no stored {'/'.join(sorted(set(np.array(names)[chosen])))} embedding to check with")
            v = row["emb"][mask].astype(np.float32).mean(axis=0)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    def texts(self, key: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
        row = self.shards.get_item(self.index[key])
        pool = torch.from_numpy(np.flatnonzero(row["valid"].astype(bool) & self.pool))
        pick = pool[torch.randperm(len(pool), generator=generator)[: self.positives]].numpy()
        texts = np.zeros((self.positives, self.dim), np.float32)
        texts[: len(pick)] = row["emb"][pick]
        mask = torch.zeros(self.positives, dtype=torch.bool)
        mask[: len(pick)] = True
        return {"texts": torch.from_numpy(texts), "text_mask": mask}


class TrainSamples(Dataset):
    """Map-style dataset over the usable train samples; an item is addressed by
    ``(position, sample)`` so that its randomness follows the stream position."""

    def __init__(self, cfg: Profile, texts: TextSource):
        paths = Paths.of(cfg)
        if not (paths.raw_shards / "index.json").is_file():
            raise DataError(f"raw shards not found: {paths.raw_shards} (run the download stage first)")
        self.seed = cfg.train_seed
        self.size = cfg.vision.image_size
        self.scale = cfg.train.crop_scale
        self.text_source = texts
        self.images = open_shards(paths.raw_shards)
        image_index: dict[str, int] = {}
        image_problems: dict[str, str] = {}
        keys = train_keys(paths)
        wanted = set(keys)
        errors: list[str] = []
        for i, row in readable_rows(self.images, paths.raw_shards, errors):
            if row["key"] in wanted:
                image_index[row["key"]] = i
                if (why := _image_problem(row["image"])) is not None:
                    image_problems[row["key"]] = why
        self.keys: list[str] = []
        self.image_rows: list[int] = []
        self.skipped: list[tuple[str, str]] = []
        for key in keys:
            why = (missing_reason("image in the raw shards", errors) if key not in image_index
                   else image_problems.get(key) or texts.problem(key))
            if why is None:
                self.keys.append(key)
                self.image_rows.append(image_index[key])
            else:
                self.skipped.append((key, why))
        if not self.keys:
            raise DataError(f"no usable train samples ({len(self.skipped)} skipped, first: "
                            f"{self.skipped[:3]})")

    def __len__(self) -> int:
        return len(self.keys)

    def fingerprint(self) -> dict:
        """What a checkpoint must have been trained on: the usable keys, in order."""
        return {"samples": len(self.keys), "keys_sha256": sha256_text("\n".join(self.keys))}

    def __getitem__(self, address: tuple[int, int]) -> dict:
        position, i = address
        gen = item_generator(self.seed, position)
        png = self.images.get_item(self.image_rows[i])["image"]
        item = {"pixels": train_pixels(png, self.size, self.scale, gen)}
        item.update(self.text_source.texts(self.keys[i], gen))
        return item


class StepBatches:
    """Batch sampler: this rank's addresses for steps ``start .. stop-1`` of the sample stream."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise DataError(f"train.batch_size {batch_size} is not divisible by the "
                            f"{world_size} processes")
        if n < batch_size:
            raise DataError(f"only {n} usable train samples, fewer than train.batch_size {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop = start, stop
        self.local = batch_size // world_size
        self.offset = rank * self.local
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _sample(self, position: int) -> int:
        epoch = position // self.n
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return int(self._perm[position % self.n])

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            first = step * self.batch_size + self.offset
            yield [(p, self._sample(p)) for p in range(first, first + self.local)]
