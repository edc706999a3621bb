"""Ablations of the scenes profile (issue 7), tabulated from DuckDB.

Each variant is the scenes chain with a few overrides (the ``base`` row is the scenes run
itself, read from its own data dir), run in ``<data>/ablations/<variant>/``
beside the base data dir: the base's download/curate outputs and CLIP baseline are linked in
(the baseline does not depend on any FLAME setting), the embedding cache is shared, and the
FLAME stages (embed, train, evaluate) run for real. The table is read back from every variant's
``results.duckdb`` (latest successful evaluation) and written to ``<data>/ablations/ablations.md``.

    .venv/bin/python experiments/ablations.py                  # all variants, then the table
    .venv/bin/python experiments/ablations.py facets-1 center  # some variants
    .venv/bin/python experiments/ablations.py --table          # only rebuild the table
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from flame_pipeline.config import load_profile
from flame_pipeline.eval.headline import figures
from flame_pipeline.eval.report import latest_run, run_metrics
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import run_stage
from flame_pipeline.store import ResultsStore

# variant -> (what it changes, overrides of the scenes profile)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "base": ("scenes profile (all 11 stored embeddings, whitened, layer -2, Qwen2.5-0.5B)", []),
    "facets-1": ("positives drawn from the single prompt only", ["train.pool=[single]"]),
    "facets-3": ("positives from the 3 short facets only", ["train.pool=[short]"]),
    "facets-7": ("positives from the 7 long facets only", ["train.pool=[long]"]),
    "lr-5e-4": ("the reference's lr 5e-4 (default 1e-3)", ["train.lr=0.0005"]),
    "logit-init-10": ("sigmoid loss starts at the reference's scale 10, bias -10",
                      ["train.logit_scale_init=10.0", "train.logit_bias_init=-10.0"]),
    "center": ("embeddings centred, not whitened", ["embed.postprocess=center"]),
    "no-postprocess": ("raw last-token vectors (no centring, no whitening)", ["embed.postprocess=none"]),
    "layer-4": ("embeddings from hidden_states[-4]", ["embed.layer=-4"]),
    "smollm2-135m": ("SmolLM2-135M as the frozen LLM", ["embed.llm=smollm2-135m"]),
    "gemma3-270m": ("Gemma-3-270M as the frozen LLM", ["embed.llm=gemma3-270m"]),
    "positions-continue": ("facet positions continue across facets, as the reference lays them out",
                           ["embed.positions=continue"]),
    "projector-4096": ("projector hidden width max(d_llm, 4096), the reference's",
                       ["vision.projector_min_width=4096"]),
    "reference-compat": ("the reference code's choices: continued positions, raw vectors, "
                         "projector width 4096", ["reference_compat=true"]),
}
LINKED = ("raw", "curated", "models/clip")


def prepare(base: Paths, root: Path, linked: tuple[str, ...] = LINKED) -> None:
    """Link the base's outputs that no variant changes (``linked``) into ``root``, and the base's
    embedding cache beside it (``Paths.embed_cache`` is ``<data_dir>/../cache/embed``)."""
    links = [(root / rel, base.root / rel) for rel in linked]
    links.append((root.parent / "cache", base.embed_cache.parent))
    for link, target in links:
        if not target.exists():
            raise SystemExit(f"ablations: run the profile's chain first ({target} is missing)")
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)


def run_variant(name: str, params: str, profile: str = "scenes") -> float:
    base_cfg = load_profile(profile, params)
    root = Path(base_cfg.data_dir).parent / "ablations" / name
    cfg = load_profile(profile, params, [f"data_dir={root}"] + VARIANTS[name][1])
    prepare(Paths.of(base_cfg), root)
    t0 = time.monotonic()
    for stage in ("embed", "train", "evaluate"):
        run_stage(cfg, stage)
    return time.monotonic() - t0


def table(base: Path, ablations: Path, profile: str = "scenes") -> str:
    heads = ["long I2T R@1", "long T2I R@1", "long (no hard negatives) R@1",
             "multilingual non-en R@1", "zero-shot scenes top-1", "zero-shot Fashion-MNIST top-1",
             "short retrieval R@1"]
    lines = ["| variant | what | " + " | ".join(heads) + " |", "|---|---|" + "---:|" * len(heads)]
    clip = None
    for name, (what, _) in VARIANTS.items():
        db = (base if name == "base" else ablations / name) / "results.duckdb"
        if not db.exists():
            continue
        store = ResultsStore(db)
        try:
            metrics = run_metrics(store, latest_run(store, profile)["run_id"])
        except LookupError:
            continue
        fig = figures(metrics, "flame")
        clip = clip or figures(metrics, "clip")
        cells = ["–" if fig[h] is None else f"{fig[h]:.1f}" for h in heads]
        lines.append(f"| {name} | {what} | " + " | ".join(cells) + " |")
    if clip:
        cells = ["–" if clip[h] is None else f"{clip[h]:.1f}" for h in heads]
        lines.append("| CLIP baseline | text tower from scratch, same data and budget | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*", metavar="VARIANT",
                    help="some of: " + ", ".join(VARIANTS) + " (default: all)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default="scenes", help="the profile whose run is the base")
    ap.add_argument("--table", action="store_true", help="only rebuild the table")
    args = ap.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variant(s) {sorted(unknown)}; known: {list(VARIANTS)}")
    base = Path(load_profile(args.profile, args.params).data_dir)
    ablations = base.parent / "ablations"
    if not args.table:
        for name in [v for v in args.variants or list(VARIANTS) if v != "base"]:
            print(f"[ablation {name}] {run_variant(name, args.params, args.profile):.0f} s",
                  flush=True)
    text = (f"# Ablations of the {args.profile} profile (FLAME figures; generated from DuckDB)\n\n"
            + table(base, ablations, args.profile) + "\n")
    ablations.mkdir(parents=True, exist_ok=True)
    (ablations / "ablations.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
