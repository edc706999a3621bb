"""Variants of a profile judged on its validation split (``eval.split: val``): how the settings
of the default profile were chosen on the real corpus without looking at its test concepts.

Each variant runs in ``<data>/variants/<name>/`` beside the profile's data dir. The base run's
download and curate outputs are linked in and the embedding cache is shared; the variant's
overrides, plus ``eval.split=val``, then drive the embed, train, train_baseline and evaluate
stages. ``base`` (no overrides) links the base run's models too and only evaluates them on the
validation split; ``--flame-only`` links the CLIP baseline of ``--clip-from`` (default: base)
instead of training it, for variants that change nothing the baseline sees. ``--table`` prints
the headline targets (``flame_pipeline/eval/headline.py``, FLAME / CLIP, chance) of variants.

    .venv/bin/python experiments/variants.py base
    .venv/bin/python experiments/variants.py pool-single --set 'train.pool=[single]' --flame-only
    .venv/bin/python experiments/variants.py --table base pool-single
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ablations import prepare
from flame_pipeline.config import load_profile
from flame_pipeline.eval.headline import targets
from flame_pipeline.eval.report import latest_run, run_metrics
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import run_stage
from flame_pipeline.store import ResultsStore

BASE_LINKED = ("raw", "curated", "embed", "models/flame", "models/clip")


def variant_root(profile: str, params: str, name: str) -> Path:
    return Path(load_profile(profile, params).data_dir).parent / "variants" / name


def run_variant(name: str, overrides: list[str], params: str, profile: str = "default",
                flame_only: bool = False, clip_from: str = "base") -> float:
    """Train (as asked) and evaluate one variant on the validation split; seconds taken."""
    base = load_profile(profile, params)
    root = variant_root(profile, params, name)
    cfg = load_profile(profile, params, [f"data_dir={root}", *overrides, "eval.split=val"])
    if name == "base":
        if overrides:
            raise SystemExit("variants: 'base' is the profile's own run, without overrides")
        prepare(Paths.of(base), root, BASE_LINKED)
        stages = ["evaluate"]
    else:
        prepare(Paths.of(base), root, ("raw", "curated"))
        stages = ["embed", "train", "train_baseline", "evaluate"]
        if flame_only:
            prepare(Paths(variant_root(profile, params, clip_from)), root, ("models/clip",))
            stages.remove("train_baseline")
    t0 = time.monotonic()
    for stage in stages:
        run_stage(cfg, stage)
    return time.monotonic() - t0


def table(profile: str, params: str, names: list[str]) -> str:
    """One row per variant, one column per headline target: FLAME / CLIP (chance)."""
    rows, heads = [], []
    for name in names:
        store = ResultsStore(variant_root(profile, params, name) / "results.duckdb")
        found = {t.name: t for t in targets(run_metrics(store, latest_run(store, profile)["run_id"]))}
        heads += [h for h in found if h not in heads]
        rows.append((name, found))
    lines = ["| variant | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for name, found in rows:
        cells = []
        for h in heads:
            t = found.get(h)
            cells.append("–" if t is None else f"{t.flame:.0f} of {t.clip:.0f}" if t.count else
                         f"{t.flame:.1f} / {t.clip:.1f}" + ("" if t.chance is None else f" ({t.chance:.2f})"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", metavar="NAME", help="the variant (with --table: variants)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--flame-only", action="store_true", help="link the baseline, train FLAME only")
    ap.add_argument("--clip-from", default="base", help="the variant whose baseline --flame-only links")
    ap.add_argument("--table", action="store_true", help="print the variants' validation targets")
    args = ap.parse_args()
    if not args.table:
        if len(args.names) != 1:
            ap.error("one variant at a time (or --table NAME...)")
        seconds = run_variant(args.names[0], args.overrides, args.params, args.profile,
                              args.flame_only, args.clip_from)
        print(f"[variant {args.names[0]}] {seconds:.0f} s", flush=True)
    print(table(args.profile, args.params, args.names))


if __name__ == "__main__":
    sys.exit(main())
