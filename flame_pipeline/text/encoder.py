"""``TextEncoder``: frozen-LLM text embeddings through the facet code, the content-addressed
cache (``cache.py``) and the embed stage's post-processing statistics (``postprocess.py``).
The embed stage computes the training captions with it, evaluation its test queries.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
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

    def ensure(self, units: list[tuple[str, str]], rank: int = 0, world: int = 1) -> int:
        """Compute the (prompt set, normalised text) units missing from the cache (this rank's
        share of them, with a progress bar on rank 0); returns how many this call computed."""
        todo = sorted({self.key(ps, t): (ps, t) for ps, t in units}.items())
        todo = [(k, u) for k, u in todo if k not in self.cache][rank::world]
        if not todo:
            return 0
        model, builder = self.load()
        by_set: dict[str, list] = defaultdict(list)
        for key, (ps, text) in todo:
            by_set[ps].append((key, builder.build(text, ps)))
        start_time, tokens = time.perf_counter(), 0
        with progress(len(todo), f"embed {self.cfg.llm}", "text", enabled=rank == 0) as bar:
            for ps in sorted(by_set):
                items = sorted(by_set[ps], key=lambda kv: (kv[1].n_tokens, kv[0]))  # less padding
                for chunk in self._batches(items):
                    emb = facet_embeddings(model, [tok for _, tok in chunk], self.cfg.layer,
                                           self.cfg.positions)
                    self.forward_passes += 1
                    self.cache.put([k for k, _ in chunk], torch.stack(emb).numpy(),
                                   [tok.truncated for _, tok in chunk])
                    self.computed += len(chunk)
                    tokens += sum(tok.n_tokens for _, tok in chunk)
                    bar.set_postfix_str(f"prompt set {ps}, "
                                        f"{tokens / (time.perf_counter() - start_time):.0f} tokens/s",
                                        refresh=False)
                    bar.update(len(chunk))
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
