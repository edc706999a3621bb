"""Spread of the headline figures over training seeds (issue 7): on the test sets, or on
validation scenes to judge a setting.

Seed 0 without ``--set`` is the default run itself, read from its data dir. Every other run
retrains both models on the same data (``train.seed=N`` plus the ``--set`` overrides: the
default run's download and curation outputs are linked in and its embedding cache is shared) in
``<data>/seeds/<name>-seed-N/``. Prints, per headline figure, FLAME and CLIP for each seed, their
mean and standard deviation, and on how many seeds FLAME meets the target. On the test sets it
reports and chooses nothing; ``--validation N`` scores N validation scenes instead
(``experiments/validation.py``), which is where a setting is judged: one seed moves the figures by
a few points.

    .venv/bin/python experiments/seeds.py                  # test sets, seeds 0 1 2 (~6 min per new seed)
    .venv/bin/python experiments/seeds.py --validation 200 --name pos11 --set train.positives=11
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import polars as pl
from ablations import prepare
from validation import validation_metrics

from flame_pipeline.config import load_profile
from flame_pipeline.eval.headline import RULES, figures
from flame_pipeline.eval.report import latest_run, run_metrics
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import run_stage
from flame_pipeline.store import ResultsStore


def seed_metrics(params: str, seed: int, overrides: list[str], name: str,
                 validation: int, profile: str = "scenes") -> pl.DataFrame:
    """The metric rows of the profile trained with ``train.seed=seed`` and ``overrides``
    (trained if missing): on ``validation`` validation scenes, or on the test sets when 0."""
    base = load_profile(profile, params)
    if seed == base.seed and not overrides:
        cfg = base
    else:
        root = Path(base.data_dir).parent / "seeds" / f"{name}-seed-{seed}"
        cfg = load_profile(profile, params, [f"data_dir={root}", f"train.seed={seed}", *overrides])
        prepare(Paths.of(base), root, linked=("raw", "curated"))
        stages = ["embed", "train", "train_baseline"] + ([] if validation else ["evaluate"])
        for stage in stages:
            run_stage(cfg, stage)
    if validation:
        return validation_metrics(cfg, validation)
    store = ResultsStore(Path(cfg.data_dir) / "results.duckdb")
    return run_metrics(store, latest_run(store, profile)["run_id"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default="scenes")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="an override of the profile, as for `flame --set`")
    ap.add_argument("--name", default="seeds", help="label of the runs' data dirs")
    ap.add_argument("--validation", type=int, default=0, metavar="N",
                    help="score N validation scenes instead of the test sets")
    args = ap.parse_args()
    runs = {s: seed_metrics(args.params, s, args.overrides, args.name, args.validation, args.profile)
            for s in args.seeds}
    flame = {s: figures(m, "flame") for s, m in runs.items()}
    clip = {s: figures(m, "clip") for s, m in runs.items()}
    where = f"{args.validation} validation scenes" if args.validation else "held-out test"
    print(f"headline figures over training seeds {args.seeds}, overrides {args.overrides} "
          f"({where}, FLAME / CLIP)")
    print(f"| figure | {' | '.join(f'seed {s}' for s in args.seeds)} | mean (sd) | target | met |")
    print("|---|" + "---|" * (len(args.seeds) + 3))
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)  # noqa: E731
    for name, (rule, ok) in RULES.items():
        f = [flame[s][name] for s in args.seeds]
        c = [clip[s][name] for s in args.seeds]
        if None in f or None in c:
            continue
        cells = [f"{a:.1f} / {b:.1f}" for a, b in zip(f, c)]
        mean = f"{statistics.mean(f):.1f} ({sd(f):.1f}) / {statistics.mean(c):.1f} ({sd(c):.1f})"
        met = sum(bool(ok(a, b)) for a, b in zip(f, c))
        print(f"| {name} | {' | '.join(cells)} | {mean} | {rule} | {met} of {len(args.seeds)} |")


if __name__ == "__main__":
    sys.exit(main())
