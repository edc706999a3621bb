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


KEY = "S32"          # a key as its 32-byte sha256 digest (the hex string is 64 characters)
MERGE_EVERY = 1 << 16   # keys put since the last merge into the sorted index, at most


def digests(keys: list[str]) -> np.ndarray:
    """Hex keys -> their binary digests (dtype ``KEY``)."""
    return np.frombuffer(bytes.fromhex("".join(keys)), KEY) if keys else np.empty(0, KEY)


class EmbeddingCache:
    """Raw facet vectors by content key: ``<root>/<fingerprint>/<batch>.npz`` with arrays
    ``keys [n]``, ``emb [n, K, d] float16``, ``truncated [n] bool``. A file appears whole or not
    at all; a killed writer leaves only an ignored temp directory.

    The index of where each key is sits in memory as sorted arrays, 40 bytes a key (its digest,
    its file and row), so that it stays small beside a large cache: the keys put since the last
    merge wait in a dict of at most ``MERGE_EVERY``."""

    def __init__(self, root: str | Path, fingerprint: str):
        self.dir = Path(root) / fingerprint
        self.refresh()

    def refresh(self) -> None:
        """Index the batch files on disk (e.g. those other ranks wrote)."""
        self._files = sorted(self.dir.glob("*.npz"))
        keys, at = [np.empty(0, KEY)], [np.empty(0, np.int64)]
        for n, f in enumerate(self._files):
            with np.load(f) as z:
                keys.append(digests(z["keys"].tolist()))
            at.append((n << 32) + np.arange(len(keys[-1]), dtype=np.int64))
        self._keys, first = np.unique(np.concatenate(keys), return_index=True)
        self._at = np.concatenate(at)[first]    # file << 32 | row, in key order
        self._new: dict[str, int] = {}

    def _merge(self) -> None:
        """Fold the keys put since the last merge into the sorted arrays."""
        if self._new:
            keys = digests(list(self._new))
            order = np.argsort(keys)
            where = np.searchsorted(self._keys, keys[order])
            self._keys = np.insert(self._keys, where, keys[order])
            self._at = np.insert(self._at, where, np.fromiter(self._new.values(), np.int64)[order])
            self._new = {}

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """Positions of the digests ``keys`` in the sorted arrays; -1 where absent."""
        pos = np.searchsorted(self._keys, keys)
        found = pos < len(self._keys)
        found[found] = self._keys[pos[found]] == keys[found]
        return np.where(found, pos, -1)

    def __contains__(self, key: str) -> bool:
        return key in self._new or self._find(digests([key]))[0] >= 0

    def __len__(self) -> int:
        return len(self._keys) + len(self._new)

    def keys(self) -> list[str]:
        """Every cached key, sorted."""
        self._merge()
        return [k.hex() for k in self._keys.view(np.dtype((np.void, 32))).tolist()]

    def put(self, keys: list[str], emb: np.ndarray, truncated: list[bool]) -> None:
        target = self.dir / (hashlib.sha256("".join(keys).encode()).hexdigest()[:32] + ".npz")
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=np.array(keys), emb=emb.astype(np.float16),
                     truncated=np.array(truncated, dtype=bool))
        self._files.append(target)
        n = len(self._files) - 1
        self._new.update((key, (n << 32) + i) for i, key in enumerate(keys) if key not in self)
        if len(self._new) >= MERGE_EVERY:
            self._merge()

    def get(self, keys: list[str]) -> tuple[list[np.ndarray], list[bool]]:
        """The [K, d] float32 vectors and truncated flags of ``keys`` (all must be present)."""
        self._merge()
        pos = self._find(digests(keys))
        if (pos < 0).any():
            raise KeyError(f"not in the embedding cache {self.dir}: {keys[int(np.argmin(pos))]}")
        at = self._at[pos]
        by_file: dict[int, list[int]] = defaultdict(list)
        for j, n in enumerate((at >> 32).tolist()):
            by_file[n].append(j)
        emb: list[np.ndarray | None] = [None] * len(keys)
        trunc = [False] * len(keys)
        for n, js in by_file.items():
            with np.load(self._files[n]) as z:
                e, t = z["emb"], z["truncated"]
            for j in js:
                i = int(at[j] & 0xFFFFFFFF)
                emb[j], trunc[j] = e[i].astype(np.float32), bool(t[i])
        return emb, trunc
