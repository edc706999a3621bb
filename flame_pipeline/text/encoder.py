"""``TextEncoder``: frozen-LLM text embeddings through the facet code, the content-addressed
cache (``cache.py``) and the embed stage's post-processing statistics (``postprocess.py``).
The embed stage computes the training captions with it, evaluation its test queries.

``ensure`` reads its units as a stream and holds at most ``ENSURE_CHUNK`` missing ones at a
time (their token ids, sorted by length within the chunk), so its memory does not grow with
the number of texts. Under torchrun every rank may read the same stream: each computes only
the units it owns (``owner``: by key), none twice.
"""
from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from flame_pipeline.config import EmbedConfig, Profile
from flame_pipeline.paths import Paths
from flame_pipeline.progress import progress
from flame_pipeline.text.cache import EmbeddingCache, content_hash, model_fingerprint
from flame_pipeline.text.facets import facet_embeddings
from flame_pipeline.text.llm import load_llm
from flame_pipeline.text.postprocess import Postprocess
from flame_pipeline.text.prompts import PromptBuilder, PromptTokens, prepare_caption

ENSURE_CHUNK = 16_384   # missing units tokenised and length-sorted at a time by ``ensure``


def owner(key: str, world: int) -> int:
    """The rank of ``world`` processes that computes the unit of ``key``: fixed by the key
    alone, so the ranks agree without talking and each missing unit is computed once."""
    return int(key[:8], 16) % world


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
        return cls(cfg.embed, paths.embed_cache, paths.embed_postprocess)

    def key(self, prompt_set: str, text: str) -> str:
        ps = self.cfg.prompt_sets[prompt_set]
        return content_hash([self.fingerprint, ps.prefix, ps.facets, text])

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

    def ensure(self, units: Iterable[tuple[str, str]], rank: int = 0, world: int = 1, *,
               total: int | None = None, chunk: int = ENSURE_CHUNK) -> int:
        """Compute the (prompt set, normalised text) units missing from the cache that this rank
        owns (``owner``), reading ``units`` as a stream: the missing ones are gathered ``chunk``
        at a time, then tokenised, sorted by length and run in forward batches, so memory does
        not grow with the stream. Rank 0 shows a progress bar once there is something to
        compute (``total``: how many texts it expects). Returns how many this call computed."""
        chunks = self._missing(units, rank, world, chunk)
        first = next(chunks, None)
        if first is None:
            return 0
        model, builder = self.load()
        before, start_time, tokens = self.computed, time.perf_counter(), 0
        with progress(total, f"embed {self.cfg.llm}", "text", enabled=rank == 0) as bar:
            for todo in itertools.chain([first], chunks):
                for ps, batch in self._forward_batches(todo, builder):
                    emb = facet_embeddings(model, [tok for _, tok in batch], self.cfg.layer,
                                           self.cfg.positions)
                    self.forward_passes += 1
                    self.cache.put([k for k, _ in batch], torch.stack(emb).numpy(),
                                   [tok.truncated for _, tok in batch])
                    self.computed += len(batch)
                    tokens += sum(tok.n_tokens for _, tok in batch)
                    bar.set_postfix_str(f"prompt set {ps}, "
                                        f"{tokens / (time.perf_counter() - start_time):.0f} tokens/s",
                                        refresh=False)
                    bar.update(len(batch))
        return self.computed - before

    def _missing(self, units: Iterable[tuple[str, str]], rank: int, world: int,
                 chunk: int) -> Iterator[list[tuple[str, tuple[str, str]]]]:
        """The units of the stream that are not cached and that this rank owns, each once, as
        (key, unit) lists of at most ``chunk`` in key order. A chunk is computed before the
        next is gathered, so a unit repeated after its chunk is found in the cache."""
        pending: dict[str, tuple[str, str]] = {}
        for ps, text in units:
            key = self.key(ps, text)
            if key in pending or key in self.cache or owner(key, world) != rank:
                continue
            pending[key] = (ps, text)
            if len(pending) == chunk:
                yield sorted(pending.items())
                pending = {}
        if pending:
            yield sorted(pending.items())

    def _forward_batches(self, todo: list[tuple[str, tuple[str, str]]],
                         builder: PromptBuilder) -> Iterator[tuple[str, list]]:
        """(prompt set, batch of (key, tokens)) for the units of ``todo``: per prompt set in
        name order, sorted by length (less padding), cut by ``_batches``."""
        by_set: dict[str, list] = defaultdict(list)
        for key, (ps, text) in todo:
            by_set[ps].append((key, builder.build(text, ps)))
        for ps in sorted(by_set):
            items = sorted(by_set[ps], key=lambda kv: (kv[1].n_tokens, kv[0]))
            for batch in self._batches(items):
                yield ps, batch

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
        keys = [self.key(ps, t) for ps, t in units]
        self.ensure(units, total=len({k for k in keys if k not in self.cache}))
        return self.cache.get(keys)

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
