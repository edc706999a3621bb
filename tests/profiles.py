"""The one way tests and benchmarks load a params.yaml profile whose data lives elsewhere."""
from __future__ import annotations

from pathlib import Path

from flame_pipeline.config import EvalConfig, Profile, load_profile

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


def profile_at(root: str | Path, overrides: dict | None = None, profile: str = "tiny") -> Profile:
    """The ``profile`` (tiny by default) of the project's params.yaml with its data_dir at
    ``root`` and the dotted ``overrides`` (``{"train.steps": 2}``) applied."""
    return load_profile(profile, PARAMS, {"data_dir": str(root), **(overrides or {})})


def with_eval(cfg: Profile, **settings) -> Profile:
    """``cfg`` with ``eval`` settings replaced, validated as params are (``model_copy`` alone
    would keep ``benchmarks: ["retrieval"]`` as bare strings)."""
    return cfg.model_copy(update={"eval": EvalConfig.model_validate({**cfg.eval.model_dump(), **settings})})
