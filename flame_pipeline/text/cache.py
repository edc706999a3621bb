"""The content-addressed embedding cache: raw facet vectors stored under the key of what made
them, so an unchanged (model, prompt, caption) is never computed twice.

A unit's key is ``content_hash([model fingerprint, prompt prefix, facets, caption])``; the model
fingerprint covers the weights' identity, the layer, the compute dtype and ``max_tokens``. The
cache sits at ``Paths.embed_cache/<fingerprint>/``, one ``.npz`` per forward batch, each written
atomically, so a stage killed half-way resumes from its last finished batch. The cache holds
the raw L2-normalised vectors as float16 (half the bytes of float32; the stored embeddings are
float16 as well) and hands them back as float32; post-processing comes after
(``postprocess.py``). ``CACHE_VERSION`` enters the fingerprint, so a cache of another version
(version 1 held float32) is never mixed with this one.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from flame_pipeline.config import EmbedConfig
from flame_pipeline.files import atomic_path
from flame_pipeline.llm_files import llm_identity
from flame_pipeline.text.llm import device_and_dtype

CACHE_VERSION = 2   # 2: float16 vectors


def content_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def model_fingerprint(embed_cfg: EmbedConfig) -> str:
    """Everything about the model run that changes a vector, hashed. The facet positions, the
    quantization and the device_map enter only when they are not the default, so the default's
    cached vectors keep their keys."""
    _, dtype = device_and_dtype(embed_cfg)
    run = {"v": CACHE_VERSION, "llm": llm_identity(embed_cfg), "layer": embed_cfg.layer,
           "dtype": str(dtype), "max_tokens": embed_cfg.max_tokens}
    if embed_cfg.positions != "restart":
        run["positions"] = embed_cfg.positions
    if embed_cfg.quantization != "none":
        run["quantization"] = embed_cfg.quantization
    if embed_cfg.device_map is not None:
        run["device_map"] = embed_cfg.device_map
    return content_hash(run)[:16]


class EmbeddingCache:
    """Raw facet vectors by content key: ``<root>/<fingerprint>/<batch>.npz`` with arrays
    ``keys [n]``, ``emb [n, K, d] float16``, ``truncated [n] bool``. A file appears whole or not
    at all; a killed writer leaves only an ignored temp directory."""

    def __init__(self, root: str | Path, fingerprint: str):
        self.dir = Path(root) / fingerprint
        self._where: dict[str, tuple[Path, int]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Index the batch files on disk (e.g. those other ranks wrote)."""
        for f in sorted(self.dir.glob("*.npz")):
            with np.load(f) as z:
                for i, key in enumerate(z["keys"].tolist()):
                    self._where[key] = (f, i)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def put(self, keys: list[str], emb: np.ndarray, truncated: list[bool]) -> None:
        target = self.dir / (hashlib.sha256("".join(keys).encode()).hexdigest()[:32] + ".npz")
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=np.array(keys), emb=emb.astype(np.float16),
                     truncated=np.array(truncated, dtype=bool))
        for i, key in enumerate(keys):
            self._where[key] = (target, i)

    def get(self, keys: list[str]) -> tuple[list[np.ndarray], list[bool]]:
        """The [K, d] float32 vectors and truncated flags of ``keys`` (all must be present)."""
        by_file: dict[Path, list[int]] = defaultdict(list)
        for j, key in enumerate(keys):
            by_file[self._where[key][0]].append(j)
        emb: list[np.ndarray | None] = [None] * len(keys)
        trunc = [False] * len(keys)
        for f, js in by_file.items():
            with np.load(f) as z:
                e, t = z["emb"], z["truncated"]
            for j in js:
                i = self._where[keys[j]][1]
                emb[j], trunc[j] = e[i].astype(np.float32), bool(t[i])
        return emb, trunc
