"""Where each stage's files live under a profile's data_dir: the contract between stages."""
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

    # curate
    @property
    def curated(self) -> Path: return self.root / "curated"
    @property
    def captions(self) -> Path: return self.curated / "captions.parquet"
    @property
    def dropped(self) -> Path: return self.curated / "dropped.parquet"
    @property
    def curate_stats(self) -> Path: return self.curated / "stats.json"

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
    @property
    def flame_model(self) -> Path: return self.models / "flame"
    @property
    def clip_model(self) -> Path: return self.models / "clip"

    # evaluate
    @property
    def eval(self) -> Path: return self.root / "eval"
    @property
    def metrics(self) -> Path: return self.eval / "metrics.json"
    @property
    def plots(self) -> Path: return self.eval / "plots"
    @property
    def report(self) -> Path: return self.eval / "report.md"
