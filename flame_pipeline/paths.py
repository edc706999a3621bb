"""Where each stage's files live under a profile's data_dir: the contract between stages.

Every file and directory a stage reads or writes is named here. Inside some of them the
layout is their format's: an MDS shard dir's ``index.json``, a model dir's weights and config
(``train/flame.py``, ``train/clip.py``, ``train/checkpoint.py``), the download stage's
resumable chunks under ``raw/work/`` and the embedding cache's batch files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flame_pipeline.config import Profile


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def of(cls, cfg: Profile) -> "Paths":
        return cls(Path(cfg.data_dir))

    # store
    @property
    def results_db(self) -> Path: return self.root / "results.duckdb"

    # download
    @property
    def raw(self) -> Path: return self.root / "raw"
    @property
    def raw_shards(self) -> Path: return self.raw / "shards"          # MDS, merged index.json
    @property
    def manifest(self) -> Path: return self.raw / "manifest.parquet"  # every input row
    @property
    def download_work(self) -> Path: return self.raw / "work"          # resumable chunk state
    @property
    def url_cache(self) -> Path: return self.download_work / "urls"    # fetched bodies per URL
    @property
    def download_lock(self) -> Path: return self.download_work / ".lock"  # one download at a time

    # curate
    @property
    def curated(self) -> Path: return self.root / "curated"
    @property
    def captions(self) -> Path: return self.curated / "captions.parquet"
    @property
    def dropped(self) -> Path: return self.curated / "dropped.parquet"
    @property
    def curate_stats(self) -> Path: return self.curated / "stats.json"
    @property
    def token_histogram(self) -> Path: return self.curated / "token_lengths.png"
    @property
    def train_shards(self) -> Path:
        # MDS: key, image, caption, long_caption of the train split, what training streams
        return self.curated / "train_shards"
    @property
    def stream_cache(self) -> Path:
        # where training caches shards it streams from a remote copy (train.remote)
        return self.root / "stream_cache"

    # embed
    @property
    def embed(self) -> Path: return self.root / "embed"
    @property
    def embed_shards(self) -> Path: return self.embed / "shards"     # MDS: key, emb, valid
    @property
    def embed_index(self) -> Path: return self.embed / "index.parquet"
    @property
    def embed_meta(self) -> Path: return self.embed / "meta.json"
    @property
    def embed_postprocess(self) -> Path: return self.embed / "postprocess.npz"  # fitted statistics
    @property
    def embed_cache(self) -> Path:
        # content-addressed by (model, layer, dtype, prompt, caption): safe to share between
        # profiles and ablation runs beside this one, so it sits next to the data dir
        return self.root.parent / "cache" / "embed"

    # train
    @property
    def models(self) -> Path: return self.root / "models"
    def model(self, kind: str) -> Path: return self.models / kind   # kind: "flame" or "clip"
    @property
    def flame_model(self) -> Path: return self.model("flame")
    @property
    def clip_model(self) -> Path: return self.model("clip")
    def model_lock(self, kind: str) -> Path: return self.models / f".{kind}.lock"  # one trainer
    def curve(self, kind: str) -> Path: return self.model(kind) / "curve.csv"  # step, loss, lr, images_per_s
    def loss_plot(self, kind: str) -> Path: return self.model(kind) / "loss.png"
    def tensorboard(self, kind: str) -> Path:
        # training's TensorBoard event files, beside the model dirs, not in them: they hold wall
        # times, and a model dir's bytes are its stage's recorded hash and DVC output
        return self.models / "tensorboard" / kind

    # evaluate
    @property
    def eval(self) -> Path: return self.root / "eval"
    @property
    def metrics(self) -> Path: return self.eval / "metrics.json"
    @property
    def plots(self) -> Path: return self.eval / "plots"
    @property
    def recall_plot(self) -> Path: return self.plots / "recall_at_k.png"
    @property
    def multilingual_plot(self) -> Path: return self.plots / "multilingual_r1.png"
    @property
    def token_map_plot(self) -> Path: return self.plots / "interpretability.png"
    @property
    def report(self) -> Path: return self.eval / "report.md"
    def benchmark_result(self, name: str) -> Path:
        # `flame benchmark`'s result document of one benchmark (its run's artifact in DuckDB)
        return self.eval / "benchmarks" / f"{name}.json"
