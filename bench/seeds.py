"""Spread of the headline figures over training seeds (issue 7), on the held-out test sets.

Seed 0 is the default run itself, read from its data dir. Every other seed retrains both models
on the same data (``train.seed=N``: the default run's download and curation outputs are linked
in and its embedding cache is shared) in ``<data>/seeds/seed-N/``, and evaluates them. Prints,
per headline figure, FLAME and CLIP for each seed, their mean and standard deviation, and on how
many seeds FLAME meets the target. It measures how much of a FLAME-CLIP gap one run can show;
it chooses nothing.

    .venv/bin/python bench/seeds.py                  # seeds 0 1 2 (about 6 min per new seed)
    .venv/bin/python bench/seeds.py --seeds 0 1 2 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from ablations import prepare

from flame_pipeline.config import load_profile
from flame_pipeline.eval.headline import RULES, figures
from flame_pipeline.eval.report import latest_run, run_metrics
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import run_stage
from flame_pipeline.store import ResultsStore


def seed_metrics(params: str, seed: int):
    """The metric rows of the default profile trained with ``train.seed=seed`` (run if missing)."""
    base = load_profile("default", params)
    root = Path(base.data_dir) if seed == base.seed else Path(base.data_dir).parent / "seeds" / f"seed-{seed}"
    if seed != base.seed:
        cfg = load_profile("default", params, [f"data_dir={root}", f"train.seed={seed}"])
        prepare(Paths.of(base), root, linked=("raw", "curated"))
        for stage in ("embed", "train", "train_baseline", "evaluate"):
            run_stage(cfg, stage)
    store = ResultsStore(root / "results.duckdb")
    return run_metrics(store, latest_run(store, "default")["run_id"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    runs = {seed: seed_metrics(args.params, seed) for seed in args.seeds}
    flame = {s: figures(m, "flame") for s, m in runs.items()}
    clip = {s: figures(m, "clip") for s, m in runs.items()}
    print(f"headline figures over training seeds {args.seeds} (held-out test, FLAME / CLIP)")
    print(f"| figure | {' | '.join(f'seed {s}' for s in args.seeds)} | mean (sd) | target | met |")
    print("|---|" + "---|" * (len(args.seeds) + 3))
    for name, (rule, ok) in RULES.items():
        f = [flame[s][name] for s in args.seeds]
        c = [clip[s][name] for s in args.seeds]
        if None in f or None in c:
            continue
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)  # noqa: E731
        cells = [f"{a:.1f} / {b:.1f}" for a, b in zip(f, c)]
        mean = (f"{statistics.mean(f):.1f} ({sd(f):.1f}) / {statistics.mean(c):.1f} ({sd(c):.1f})")
        met = sum(bool(ok(a, b)) for a, b in zip(f, c))
        print(f"| {name} | {' | '.join(cells)} | {mean} | {rule} | {met} of {len(args.seeds)} |")


if __name__ == "__main__":
    sys.exit(main())
