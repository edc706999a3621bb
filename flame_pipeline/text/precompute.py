"""The embed stage: frozen-LLM facet embeddings for every curated caption, cached by content.

Every (prompt set, normalised caption) is one unit of work whose key is
sha256(model fingerprint, prompt text, caption); the model fingerprint covers the weights'
identity, the layer, the compute dtype and ``max_tokens``. Computed units land in the
content-addressed cache (``Paths.embed_cache/<fingerprint>/``, one ``.npz`` per forward batch,
each written atomically), so an unchanged caption is never computed again and a stage killed
half-way resumes from its last finished batch. The cache holds the raw (L2-normalised,
float32) vectors; the stage output applies ``embed.postprocess`` and stores float16.

Post-processing ``center``: the raw last-token vectors of these LLMs share one dominant
direction (high mean cosine between unrelated captions); the mean of each facet over the
TRAIN split is subtracted and the vector renormalised. ``whiten`` then also maps each prompt
set's centred vectors through ``C^-1/2`` of their TRAIN-split covariance ``C`` (eigenvalues
floored at ``embed.whiten_floor`` x the largest, so noise directions are not blown up), which
spreads the few directions that dominate the cosine over all of them. The statistics live in
``embed/postprocess.npz`` so ``TextEncoder`` applies the same to evaluation queries.

Under torchrun each rank computes its share of the missing units; rank 0 writes the outputs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from flame_pipeline.config import EmbedConfig, Profile
from flame_pipeline import distributed
from flame_pipeline.files import atomic_path, write_json, write_parquet
from flame_pipeline.paths import Paths
from flame_pipeline.shards import write_shards
from flame_pipeline.stage import StageOutput
from flame_pipeline.text.facets import facet_embeddings
from flame_pipeline.llm_files import llm_identity
from flame_pipeline.text.llm import device_and_dtype, load_llm
from flame_pipeline.text.prompts import EmptyCaptionError, PromptBuilder, PromptTokens, prepare_caption

log = logging.getLogger(__name__)

CACHE_VERSION = 1
COLUMNS = {"key": "str", "emb": "ndarray:float16", "valid": "ndarray:uint8"}
REQUIRED = ("key", "split", "caption", "long_caption")
ROW_CHUNK = 4096   # rows assembled at a time when writing the outputs
LOG_EVERY = 50     # forward batches between progress lines


def embedding_names(embed_cfg: EmbedConfig) -> list[str]:
    """Names of the E stored embeddings, in order: ``set`` for a one-facet set, else ``set/k``."""
    sets = [ps for _, ps in embed_cfg.plan]
    if len(set(sets)) != len(sets):
        raise ValueError(f"embed.plan uses a prompt set twice: {sets}")
    names = []
    for ps in sets:
        if ps not in embed_cfg.prompt_sets:
            raise ValueError(f"embed.plan names prompt set {ps!r}, not in embed.prompt_sets "
                             f"{sorted(embed_cfg.prompt_sets)}")
        k = len(embed_cfg.prompt_sets[ps].facets)
        names += [ps] if k == 1 else [f"{ps}/{i}" for i in range(k)]
    return names


def postprocess_path(paths: Paths) -> Path:
    return paths.embed / "postprocess.npz"


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def model_fingerprint(embed_cfg: EmbedConfig) -> str:
    """Everything about the model run that changes a vector, hashed."""
    _, dtype = device_and_dtype(embed_cfg)
    return _sha({"v": CACHE_VERSION, "llm": llm_identity(embed_cfg), "layer": embed_cfg.layer,
                 "dtype": str(dtype), "max_tokens": embed_cfg.max_tokens})[:16]


# ------------------------------------------------------------------ the content-addressed cache
class EmbeddingCache:
    """Raw facet vectors by content key: ``<root>/<fingerprint>/<batch>.npz`` with arrays
    ``keys [n]``, ``emb [n, K, d] float32``, ``truncated [n] bool``. A file appears whole or not
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
            np.savez(f, keys=np.array(keys), emb=emb.astype(np.float32),
                     truncated=np.array(truncated, dtype=bool))
        for i, key in enumerate(keys):
            self._where[key] = (target, i)

    def get(self, keys: list[str]) -> tuple[list[np.ndarray], list[bool]]:
        """The [K, d] vectors and truncated flags of ``keys`` (all must be present)."""
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
                emb[j], trunc[j] = e[i], bool(t[i])
        return emb, trunc


# ------------------------------------------------------------------ post-processing
@dataclass(frozen=True)
class Postprocess:
    """``none``; ``center``: subtract a per-(prompt set, facet) mean of the train split;
    ``whiten``: centre, then multiply by the prompt set's whitening matrix."""
    kind: str
    fingerprint: str
    means: dict[str, np.ndarray]    # prompt set -> [K, d]
    floor: float = 0.0              # whiten: eigenvalue floor, as a fraction of the largest
    whiteners: dict[str, np.ndarray] = field(default_factory=dict)   # prompt set -> [d, d]

    def apply(self, prompt_set: str, x: np.ndarray) -> np.ndarray:
        """[n, K, d] raw unit vectors -> post-processed unit vectors (float32)."""
        x = x.astype(np.float32)
        if self.kind != "none":
            if prompt_set not in self.means:
                raise KeyError(f"no {self.kind} statistics for prompt set {prompt_set!r} "
                               f"(have {sorted(self.means)}); it is not in embed.plan")
            x = x - self.means[prompt_set][None]
        if self.kind == "whiten":
            x = x @ self.whiteners[prompt_set]
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    def save(self, path: Path) -> None:
        arrays = {f"mean/{k}": v for k, v in sorted(self.means.items())}
        arrays.update({f"whiten/{k}": v for k, v in sorted(self.whiteners.items())})
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, kind=np.array(self.kind), fingerprint=np.array(self.fingerprint),
                     floor=np.array(self.floor), **arrays)

    @classmethod
    def load(cls, path: Path) -> "Postprocess":
        if not path.is_file():
            raise FileNotFoundError(f"post-processing statistics not found: {path} "
                                    "(run the embed stage first)")
        with np.load(path) as z:
            part = lambda name: {k.split("/", 1)[1]: z[k] for k in z.files  # noqa: E731
                                 if k.startswith(name + "/")}
            return cls(str(z["kind"]), str(z["fingerprint"]), part("mean"),
                       float(z["floor"]) if "floor" in z.files else 0.0,
                       part("whiten"))


def whitening_matrix(cov: np.ndarray, floor: float) -> np.ndarray:
    """Symmetric ``(C + floor * lambda_max * I)^-1/2``, scaled so its largest gain is 1."""
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, 0.0) + floor * max(float(w.max()), 1e-12)
    gain = 1.0 / np.sqrt(w)
    return ((v * (gain / gain.max())) @ v.T).astype(np.float32)


class CosineMeter:
    """Mean cosine over distinct pairs of unit vectors, per stored name, from running sums:
    for n unit vectors with sum s it is (|s|^2 - n) / (n (n - 1))."""

    def __init__(self, names: list[str], dim: int):
        self.names = names
        self.sum = np.zeros((len(names), dim), np.float64)
        self.n = np.zeros(len(names), np.int64)

    def add(self, x: np.ndarray, valid: np.ndarray) -> None:
        ok = valid.astype(bool)
        self.sum[ok] += x[ok]
        self.n += ok

    def result(self) -> dict[str, float | None]:
        sq = (self.sum ** 2).sum(-1)
        return {name: (round(float((sq[i] - n) / (n * (n - 1))), 4) if n > 1 else None)
                for i, (name, n) in enumerate(zip(self.names, self.n))}


# ------------------------------------------------------------------ the encoder
class TextEncoder:
    """Frozen-LLM text embeddings through the facet code and the content-addressed cache.

    The LLM loads lazily, on the first cache miss. ``forward_passes`` and ``computed`` count
    the work done (tests and the stage summary read them).
    """

    def __init__(self, embed_cfg: EmbedConfig, cache_dir: str | Path,
                 stats_path: str | Path | None = None):
        self.cfg = embed_cfg
        self.fingerprint = model_fingerprint(embed_cfg)
        self.cache = EmbeddingCache(cache_dir, self.fingerprint)
        self.stats_path = Path(stats_path) if stats_path is not None else None
        self._model = None
        self._builder: PromptBuilder | None = None
        self._post: Postprocess | None = None
        self.forward_passes = 0
        self.computed = 0

    @classmethod
    def of(cls, cfg: Profile) -> "TextEncoder":
        """The encoder of a profile, with the statistics its embed stage wrote."""
        paths = Paths.of(cfg)
        return cls(cfg.embed, paths.embed_cache, postprocess_path(paths))

    def key(self, prompt_set: str, text: str) -> str:
        ps = self.cfg.prompt_sets[prompt_set]
        return _sha([self.fingerprint, ps.prefix, ps.facets, text])

    def load(self) -> tuple[torch.nn.Module, PromptBuilder]:
        """The model and prompt builder, loaded on first use."""
        if self._model is None:
            self._model, tokenizer = load_llm(self.cfg)
            self._builder = PromptBuilder(tokenizer, self.cfg.prompt_sets, self.cfg.max_tokens)
            context = getattr(self._model.config, "max_position_embeddings", None)
            if context is not None and self._builder.max_length() > context:
                raise ValueError(
                    f"embed.max_tokens={self.cfg.max_tokens}: prompt + caption can reach "
                    f"{self._builder.max_length()} positions, beyond the {context}-token context "
                    f"of {self.cfg.llm!r}; lower embed.max_tokens")
        return self._model, self._builder

    def ensure(self, units: list[tuple[str, str]], rank: int = 0, world: int = 1) -> int:
        """Compute the (prompt set, normalised text) units missing from the cache (this rank's
        share of them); returns how many this call computed."""
        todo = sorted({self.key(ps, t): (ps, t) for ps, t in units}.items())
        todo = [(k, u) for k, u in todo if k not in self.cache][rank::world]
        if not todo:
            return 0
        model, builder = self.load()
        by_set: dict[str, list] = defaultdict(list)
        for key, (ps, text) in todo:
            by_set[ps].append((key, builder.build(text, ps)))
        for ps in sorted(by_set):
            items = sorted(by_set[ps], key=lambda kv: (kv[1].n_tokens, kv[0]))  # less padding
            start_time, tokens, done = time.perf_counter(), 0, 0
            for n, chunk in enumerate(self._batches(items), 1):
                emb = facet_embeddings(model, [tok for _, tok in chunk], self.cfg.layer)
                self.forward_passes += 1
                self.cache.put([k for k, _ in chunk], torch.stack(emb).numpy(),
                               [tok.truncated for _, tok in chunk])
                self.computed += len(chunk)
                done += len(chunk)
                tokens += sum(tok.n_tokens for _, tok in chunk)
                if n % LOG_EVERY == 0 or done == len(items):
                    log.info("embedded %d/%d %r texts, %.0f tokens/s", done, len(items), ps,
                             tokens / (time.perf_counter() - start_time))
        return len(todo)

    def _batches(self, items: list[tuple[str, PromptTokens]]) -> Iterator[list]:
        """Consecutive runs of the length-sorted ``items``: at most ``embed.batch_size`` prompts
        and (``embed.batch_tokens`` > 0) at most that many padded tokens, at least one prompt."""
        rows, limit, chunk = self.cfg.batch_size, self.cfg.batch_tokens, []
        for item in items:      # sorted by length: this item is the chunk's longest so far
            if chunk and (len(chunk) == rows or (limit and (len(chunk) + 1) * item[1].n_tokens > limit)):
                yield chunk
                chunk = []
            chunk.append(item)
        if chunk:
            yield chunk

    def raw(self, units: list[tuple[str, str]]) -> tuple[list[np.ndarray], list[bool]]:
        """Cached raw [K, d] vectors and truncated flags of units (computing what is missing)."""
        self.ensure(units)
        return self.cache.get([self.key(ps, t) for ps, t in units])

    def postprocess(self) -> Postprocess:
        if self._post is None:
            if self.cfg.postprocess == "none":
                self._post = Postprocess("none", self.fingerprint, {})
            else:
                if self.stats_path is None:
                    raise ValueError(f"embed.postprocess={self.cfg.postprocess!r} needs the embed "
                                     "stage's statistics: use TextEncoder.of(cfg) or pass "
                                     "stats_path")
                post = Postprocess.load(self.stats_path)
                want = (self.cfg.postprocess, self.fingerprint,
                         self.cfg.whiten_floor if self.cfg.postprocess == "whiten" else post.floor)
                if (post.kind, post.fingerprint, post.floor) != want:
                    raise ValueError(f"{self.stats_path} holds {post.kind!r} statistics "
                                     f"(floor {post.floor}) of model {post.fingerprint}, not "
                                     f"{want[0]!r} (floor {want[2]}) of {want[1]}: "
                                     "re-run the embed stage")
                self._post = post
        return self._post

    def encode(self, texts: list[str], prompt_set: str = "single") -> np.ndarray:
        """[n, d] float32: the mean of each text's post-processed facet vectors, L2-normalised."""
        if not texts:
            raise ValueError("TextEncoder.encode: no texts")
        if prompt_set not in self.cfg.prompt_sets:
            raise KeyError(f"unknown prompt set {prompt_set!r}; embed.prompt_sets has "
                           f"{sorted(self.cfg.prompt_sets)}")
        units = [(prompt_set, prepare_caption(t)) for t in texts]
        emb, _ = self.raw(units)
        x = self.postprocess().apply(prompt_set, np.stack(emb)).mean(axis=1)
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ------------------------------------------------------------------ the stage
def _read_captions(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"curated captions not found: {path} (run the curate stage)")
    table = pl.read_parquet(path)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return table.select(REQUIRED)


def _row_units(table: pl.DataFrame, embed_cfg: EmbedConfig) -> list[list[tuple[str, str] | None]]:
    """Per row, per plan entry: (prompt set, normalised text), or None where the text is null.
    Every empty text is reported at once, naming its key, before anything is computed."""
    out, bad = [], []
    for row in table.iter_rows(named=True):
        units = []
        for field, ps in embed_cfg.plan:
            if row[field] is None and field == "long_caption":
                units.append(None)
                continue
            try:
                units.append((ps, prepare_caption(row[field] or "")))
            except EmptyCaptionError:
                bad.append(f"{row['key']} ({field})")
        out.append(units)
    if bad:
        raise EmptyCaptionError(f"{len(bad)} empty caption(s) in the curated table, e.g. "
                                f"{bad[:10]}; nothing was embedded")
    return out


def fit_postprocess(enc: TextEncoder, table: pl.DataFrame, rows: list) -> Postprocess:
    """``embed.postprocess``'s statistics from the train split, in one pass over its vectors:
    per (prompt set, facet) means, and for ``whiten`` each prompt set's whitening matrix of the
    centred vectors (all facets pooled: sum of x x^T minus n * sum_k mean_k mean_k^T)."""
    kind = enc.cfg.postprocess
    if kind == "none":
        return Postprocess("none", enc.fingerprint, {})
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    train = [r for r, split in zip(rows, table["split"].to_list()) if split == "train"]
    for start in range(0, len(train), ROW_CHUNK):
        units = [u for r in train[start:start + ROW_CHUNK] for u in r if u is not None]
        emb, _ = enc.raw(units)
        for (ps, _), e in zip(units, emb):
            e = e.astype(np.float64)
            sums[ps] = sums.get(ps, 0) + e
            counts[ps] += 1
            if kind == "whiten":
                squares[ps] = squares.get(ps, 0) + e.T @ e
    used = {u[0] for r in rows for u in r if u is not None}
    missing = sorted(used - set(sums))
    if missing:
        raise ValueError(f"embed.postprocess={kind}: prompt set(s) {missing} embed test texts "
                         "but no train-split text; cannot compute their statistics")
    means = {ps: s / counts[ps] for ps, s in sums.items()}
    stored = {ps: m.astype(np.float32) for ps, m in means.items()}
    if kind == "center":
        return Postprocess("center", enc.fingerprint, stored)
    floor = enc.cfg.whiten_floor
    whiteners = {ps: whitening_matrix((squares[ps] - counts[ps] * m.T @ m) / (counts[ps] * len(m)),
                                      floor) for ps, m in means.items()}
    return Postprocess("whiten", enc.fingerprint, stored, floor, whiteners)


def _assemble(enc: TextEncoder, table: pl.DataFrame, rows: list, post: Postprocess,
              names: list[str], dim: int):
    """Yield (shard row, truncated, raw [E, d], processed [E, d]) per caption row, in order."""
    plan = enc.cfg.plan
    k_of = [len(enc.cfg.prompt_sets[ps].facets) for _, ps in plan]
    keys = table["key"].to_list()
    for start in range(0, len(rows), ROW_CHUNK):
        chunk = rows[start:start + ROW_CHUNK]
        units = [u for r in chunk for u in r if u is not None]
        emb, trunc = enc.raw(units)
        it = iter(zip(emb, trunc))
        for j, r in enumerate(chunk):
            raw = np.zeros((len(names), dim), np.float32)
            done = np.zeros((len(names), dim), np.float32)
            valid = np.zeros(len(names), np.uint8)
            truncated, at = False, 0
            for u, k in zip(r, k_of):
                if u is not None:
                    e, t = next(it)
                    raw[at:at + k] = e
                    done[at:at + k] = post.apply(u[0], e[None])[0]
                    valid[at:at + k] = 1
                    truncated |= t
                at += k
            yield ({"key": keys[start + j], "emb": done.astype(np.float16), "valid": valid},
                   truncated, raw, done)


def embed(cfg: Profile) -> StageOutput:
    """Curated captions -> ``embed/shards`` (key, emb [E, d] fp16, valid [E]),
    ``embed/index.parquet``, ``embed/meta.json`` and ``embed/postprocess.npz``."""
    paths = Paths.of(cfg)
    ecfg = cfg.embed
    names = embedding_names(ecfg)
    # training reads only the train split; evaluation embeds its own test queries through
    # TextEncoder (same cache), so `embed.splits: [train]` skips what it would not read
    table = _read_captions(paths.captions).filter(pl.col("split").is_in(ecfg.splits))
    rows = _row_units(table, ecfg)
    enc = TextEncoder(ecfg, paths.embed_cache, postprocess_path(paths))
    distributed.join()   # under torchrun each rank computes its share of the missing units
    rank, world = distributed.world()
    all_units = [u for r in rows for u in r if u is not None]
    enc.ensure(all_units, rank, world)
    summary = {"rows": table.height, "texts": len(all_units),
               "unique_texts": len({enc.key(*u) for u in all_units}),
               "computed": enc.computed, "forward_passes": enc.forward_passes}
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        enc.cache.refresh()
        if rank != 0:
            return StageOutput(artifacts={}, summary=summary)

    post = fit_postprocess(enc, table, rows)
    dim = enc.cache.get([enc.key(*all_units[0])])[0][0].shape[-1] if all_units else 0
    before, after = CosineMeter(names, dim), CosineMeter(names, dim)
    truncated: list[bool] = []

    def shard_rows():
        for row, t, raw, done in _assemble(enc, table, rows, post, names, dim):
            truncated.append(t)
            before.add(raw, row["valid"])
            after.add(done, row["valid"])
            yield row

    with atomic_path(paths.embed_shards) as tmp:
        write_shards(tmp, COLUMNS, shard_rows())
    index = pl.DataFrame({
        "key": table["key"], "split": table["split"],
        "truncated": pl.Series(truncated, dtype=pl.Boolean),
        "content_hash": [_sha([enc.key(*u) if u else None for u in r]) for r in rows]})
    write_parquet(paths.embed_index, index)
    post.save(postprocess_path(paths))
    aniso = {"before": before.result(), "after": after.result()}
    for when in ("before", "after"):
        vals = [v for v in aniso[when].values() if v is not None]
        aniso[f"mean_{when}"] = round(float(np.mean(vals)), 4) if vals else None
    meta = {"model": ecfg.llm, "identity": llm_identity(ecfg), "fingerprint": enc.fingerprint,
            "layer": ecfg.layer, "dim": int(dim), "dtype": str(device_and_dtype(ecfg)[1]),
            "names": names, "plan": [list(p) for p in ecfg.plan],
            "prompt_sets": {ps: ecfg.prompt_sets[ps].model_dump() for _, ps in ecfg.plan},
            "max_tokens": ecfg.max_tokens, "postprocess": ecfg.postprocess,
            "mean_cosine": aniso, "rows": table.height, "truncated": int(sum(truncated)),
            "valid_per_name": dict(zip(names, before.n.tolist()))}
    write_json(paths.embed_meta, meta)
    summary["truncated"] = int(sum(truncated))
    metrics = [(ecfg.llm, "embed", f"mean_cosine_{w}", float(aniso[f"mean_{w}"]))
               for w in ("before", "after") if aniso.get(f"mean_{w}") is not None]
    return StageOutput(
        artifacts={"embed_shards": paths.embed_shards, "embed_index": paths.embed_index,
                   "embed_meta": paths.embed_meta, "embed_postprocess": postprocess_path(paths)},
        rows={"embed_shards": table.height, "embed_index": table.height},
        summary=summary, metrics=metrics)
