"""The ``flame`` command line: one sub-command per stage, ``run`` for the chain."""
# The stage sub-commands and their help come from the stage spec, flame_pipeline/pipeline.py.
# Each stage run is reported to the project's Dagster instance (assets/history.py), so the UI
# shows the runs of the CLI and of `dvc repro` (which runs the CLI) beside its own; a run that a
# Dagster asset launched under torchrun is reported to that Dagster run alone, through Pipes.
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

from flame_pipeline.config import DATA_FORMATS, ConfigError, load_profile
from flame_pipeline.eval.prompt_sets import PROMPT_SETS
from flame_pipeline.paths import Paths
from flame_pipeline.pipeline import STAGES, run_chain, run_stage, stage_table


def _common(top: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the sub-command (after wins; defaults live on top)."""
    def dflt(value):
        return value if top else argparse.SUPPRESS
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", default=dflt(os.environ.get("FLAME_PROFILE", "default")),
                        help="params.yaml profile: tiny, default or paper (default: default)")
    common.add_argument("--params", default=dflt("params.yaml"),
                        help="params file (default: params.yaml)")
    common.add_argument("--set", dest="overrides", action="append", default=dflt([]),
                        metavar="KEY=VALUE",
                        help="override one parameter, e.g. --set train.steps=200 (repeatable)")
    common.add_argument("--debug", action="store_true", default=dflt(False),
                        help="show the full traceback on failure")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common(top=False)
    p = argparse.ArgumentParser(prog="flame", description=__doc__.splitlines()[0],
                                parents=[_common(top=True)])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES.values():
        sub.add_parser(stage.command, help=stage.description, description=stage.description,
                       parents=[common])
    run = sub.add_parser("run", help="run the chain of stages in order", parents=[common])
    run.add_argument("--from", dest="start", choices=list(STAGES), help="first stage")
    run.add_argument("--to", dest="stop", choices=list(STAGES), help="last stage")
    bench = sub.add_parser("benchmark", parents=[common],
                           help="score both trained models on your own benchmark and record it")
    bench.add_argument("manifest", metavar="PATH",
                       help="a manifest (CSV/Parquet/JSONL), a folder of class folders, a Karpathy "
                            "JSON, a long-caption set or XM3600 JSONL")
    bench.add_argument("--format", dest="fmt", choices=DATA_FORMATS, help="the format (default: detected)")
    bench.add_argument("--name", help="its name in the metrics, manifest/NAME/... (default: from PATH)")
    bench.add_argument("--image-dir", help="the folder inside PATH's folder the image paths start "
                                           "in (karpathy, long_captions, xm3600)")
    bench.add_argument("--prompt-set", choices=list(PROMPT_SETS), default="auto",
                       help="the prompt set of FLAME's text queries; auto (default): long for long "
                            "texts, single for non-English texts and labels, else short")
    bench.add_argument("--model", choices=["flame", "clip"], help="score one model (default: both)")
    bench.add_argument("--json", action="store_true", help="print the result document as JSON")
    sub.add_parser("stages", help="print the stage graph: what each stage reads and writes",
                   parents=[common])
    return p


def _summary_line(name: str, out) -> str:
    parts = [f"{k}={v}" for k, v in out.rows.items()]
    if "rejected" in out.summary:   # download: the rejected rows, counted by reason
        reasons = ", ".join(f"{r}: {n}" for r, n in out.summary["reasons"].items())
        parts.append(f"rejected={out.summary['rejected']}" + (f" ({reasons})" if reasons else ""))
        missing = [f"{source} {c['no_short_caption']}/{c['no_long_caption']}"
                   for source, c in out.summary["per_source"].items() if "no_short_caption" in c]
        if missing:   # kept rows without recaptions, per source: never silent
            parts.append(f"no short/long caption: {', '.join(missing)}")
    return f"[{name}] done: " + ", ".join(parts + [f"{k}: {v}" for k, v in out.artifacts.items()])


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _finished(cfg):
    """What the CLI does with each finished stage run: print its summary line and report it to
    the project's Dagster instance, or to the Dagster run that launched this process (under
    torchrun); a run Dagster cannot take is a warning, not a failure."""
    instance = None

    def finished(name: str, out) -> None:
        nonlocal instance
        print(_summary_line(name, out), flush=True)
        if out.run_id is None:   # a torchrun rank other than 0: rank 0 records and reports
            return
        from assets.history import (launched_by_dagster, project_instance,   # dagster: after
                                    report_run, report_to_launcher)          # a stage ran
        try:
            if launched_by_dagster():
                report_to_launcher(cfg, name, out)
            else:
                instance = instance or project_instance()
                report_run(cfg, name, out, instance)
        except Exception as err:  # the stage's work is done and recorded in the results store
            print(f"flame: warning: stage {name} not reported to Dagster: {type(err).__name__}: "
                  f"{_first_line(err)}", file=sys.stderr)

    return finished


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_profile(args.profile, args.params, args.overrides)
        if args.command == "run":
            t0 = time.monotonic()
            run_chain(cfg, args.start, args.stop, on_stage=_finished(cfg))
            paths = Paths.of(cfg)
            print(f"chain finished in {time.monotonic() - t0:.0f} s\n"
                  f"  report:        {paths.report}\n"
                  f"  results store: {paths.results_db}\n"
                  f"  UI:            bash scripts/dagster_dev.sh   (then open http://127.0.0.1:3000)")
        elif args.command == "benchmark":
            from flame_pipeline.eval.user_benchmark import comparison, evaluate_manifest
            result = evaluate_manifest(cfg, args.manifest, model=args.model, fmt=args.fmt,
                                       name=args.name, image_dir=args.image_dir,
                                       prompt_set=args.prompt_set)
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                problems = ", ".join(f"{r}: {n}" for r, n in result["problems"].items())
                print(f"{result['benchmark']} ({result['format']}): {result['used']} of "
                      f"{result['rows']} rows scored" + (f", rejected: {problems}" if problems else "")
                      + f"\n\n{comparison(result)}\n\nrecorded: run {result['run_id']} in "
                      f"{Paths.of(cfg).results_db} (flame report shows it)")
            for warning in result["warnings"]:
                print(f"flame: warning: {warning}", file=sys.stderr)
        elif args.command == "stages":
            print(stage_table(), end="")
        else:
            name = args.command.replace("-", "_")
            _finished(cfg)(name, run_stage(cfg, name))
    except KeyboardInterrupt:
        print("flame: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line for people, the traceback with --debug
        if args.debug:
            traceback.print_exc()
        label = "" if isinstance(err, ConfigError) else f"{type(err).__name__}: "
        print(f"flame: error: {label}{_first_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
