"""The report stage: the evaluation report as Markdown generated from the DuckDB results store,
never by hand.

FLAME and CLIP are rows, benchmarks are columns, as in the paper's tables; numbers come
from the latest successful ``evaluate`` run of the profile, with its provenance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import polars as pl

from flame_pipeline.config import Profile
from flame_pipeline.files import atomic_path
from flame_pipeline.eval.headline import metric_value, targets, targets_markdown
from flame_pipeline.paths import Paths
from flame_pipeline.stage import StageOutput
from flame_pipeline.store import ResultsStore

MODEL_ORDER = ["clip", "flame"]          # the paper lists the baseline first
MODEL_NAMES = {"clip": "CLIP (text tower from scratch)", "flame": "FLAME (frozen LLM)"}
SHORT = {"i2t_R@1": "I2T R@1", "i2t_R@5": "I2T R@5", "i2t_R@10": "I2T R@10",
         "t2i_R@1": "T2I R@1", "t2i_R@5": "T2I R@5", "t2i_R@10": "T2I R@10",
         "top1": "top-1", "top5": "top-5"}

# the chance level of a metric: the benchmark's metric a random ranking scores
CHANCE = {"i2t_R@1": "chance_R@1", "t2i_R@1": "chance_R@1", "top1": "chance_top1",
          "accuracy": "chance_accuracy"}
# the metrics a comparison table shows, in this order, where a benchmark has them
COMPARED = ["top1", "top5", "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10",
            "accuracy"]

# (title, benchmark family, metrics shown per benchmark, note)
SECTIONS = [
    ("Zero-shot classification", "zeroshot", ["top1", "top5"],
     "Class names in templates, single prompt, template embeddings averaged per class."),
    ("Image-text retrieval", "retrieval", ["i2t_R@1", "i2t_R@5", "i2t_R@10",
                                           "t2i_R@1", "t2i_R@5", "t2i_R@10"],
     "Duplicate-aware: identical images (sha256) and identical captions are one gallery item."),
    ("Long-caption retrieval", "long_retrieval", ["i2t_R@1", "t2i_R@1"],
     "Long captions with hard negatives in the gallery."),
    ("Long-caption retrieval without hard negatives", "long_retrieval_no_hn", ["i2t_R@1", "t2i_R@1"],
     "The same test scenes with their hard negatives left out of the gallery."),
    ("Long-caption retrieval, captions truncated to 77 tokens", "long_retrieval_77",
     ["i2t_R@1", "t2i_R@1"], "The same rows with every caption cut to its first 77 tokens."),
    ("Linear probe", "linear_probe", ["top1"],
     "Logistic regression on average-pooled vision features without the projector."),
    ("Compositional probe (SugarCrepe's seven kinds)", "compositional", ["accuracy"],
     "Generated scenes never trained on; % of images closer to their true caption than to the "
     "kind's hard negative (replace / swap / add an object, an attribute or the relation)."),
]


def latest_run(store: ResultsStore, profile: str) -> dict:
    runs = store.query(
        "SELECT run_id, params_hash, code_version, started_at, ended_at FROM runs "
        "WHERE profile = ? AND stage = 'evaluate' AND status = 'succeeded' "
        "ORDER BY ended_at DESC LIMIT 1", [profile])
    if runs.is_empty():
        raise LookupError(f"no successful evaluate run for profile {profile!r} in {store.path}")
    return runs.row(0, named=True)


def upstream_artifacts(store: ResultsStore, profile: str, before) -> pl.DataFrame:
    """The latest artifact hashes of each earlier stage's last successful run before ``before``:
    the data, embeddings and models the evaluation read."""
    return store.query(
        "SELECT r.stage, a.name, a.content_hash, a.run_id FROM artifacts a "
        "JOIN runs r ON r.run_id = a.run_id "
        "WHERE r.profile = ? AND r.status = 'succeeded' "
        "AND r.stage NOT IN ('evaluate', 'report', 'benchmark') "
        "AND r.ended_at <= ? "
        "QUALIFY row_number() OVER (PARTITION BY r.stage, a.name ORDER BY r.ended_at DESC) = 1 "
        "ORDER BY r.stage, a.name", [profile, before])


def benchmark_runs(store: ResultsStore, profile: str) -> pl.DataFrame:
    """The metric rows of each benchmark's latest successful ``flame benchmark`` run, with the
    run's id and end (a benchmark is ``manifest/<name>``)."""
    return store.query(
        "SELECT m.model, m.benchmark, m.metric, m.value, r.run_id, r.ended_at FROM metrics m "
        "JOIN runs r ON r.run_id = m.run_id "
        "WHERE r.profile = ? AND r.stage = 'benchmark' AND r.status = 'succeeded' "
        "QUALIFY r.ended_at = max(r.ended_at) OVER (PARTITION BY split_part(m.benchmark, '/', 2)) "
        "ORDER BY m.benchmark, m.metric, m.model", [profile])


def run_metrics(store: ResultsStore, run_id: str) -> pl.DataFrame:
    return store.query("SELECT model, benchmark, metric, value, inputs FROM metrics "
                       "WHERE run_id = ? ORDER BY model, benchmark, metric", [run_id])


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def family_table(metrics: pl.DataFrame, family: str, shown: Sequence[str]) -> str | None:
    """One Markdown table: a row per model of the run, a column per (benchmark, metric)."""
    rows = metrics.filter(pl.col("benchmark").str.starts_with(family + "/")
                          & pl.col("metric").is_in(list(shown)))
    if rows.is_empty():
        return None
    benches = sorted(rows["benchmark"].unique())
    columns = [(b, m) for b in benches for m in shown
               if not rows.filter((pl.col("benchmark") == b) & (pl.col("metric") == m)).is_empty()]
    lookup = {(r["model"], r["benchmark"], r["metric"]): r["value"] for r in rows.iter_rows(named=True)}
    present = set(metrics["model"])
    models = [m for m in MODEL_ORDER if m in present] + sorted(present - set(MODEL_ORDER))
    heads = [f"{b.removeprefix(family + '/')} {SHORT.get(m, m)}" for b, m in columns]
    lines = ["| model | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(columns)]
    for model in models:
        cells = [_cell(lookup.get((model, b, m))) for b, m in columns]
        lines.append(f"| {MODEL_NAMES.get(model, model)} | " + " | ".join(cells) + " |")
    if {"flame", "clip"} <= present:
        deltas = []
        for b, m in columns:
            f, c = lookup.get(("flame", b, m)), lookup.get(("clip", b, m))
            deltas.append("–" if f is None or c is None else f"{f - c:+.1f}")
        lines.append("| *FLAME − CLIP* | " + " | ".join(deltas) + " |")
    chance = [_chance(metrics, b, m) for b, m in columns]
    if any(c is not None for c in chance):
        lines.append("| *chance* | " + " | ".join("–" if c is None else f"{c:.2f}" for c in chance) + " |")
    return "\n".join(lines)


def comparison_table(metrics: pl.DataFrame, prefix: str = "") -> str | None:
    """A Markdown table of the benchmarks under ``prefix``: a row per benchmark and metric of
    ``COMPARED`` it has, a column per model (FLAME, then CLIP), their difference when both
    are there, and chance; cells padded so that it reads as plain text too."""
    rows = metrics.filter(pl.col("benchmark").str.starts_with(prefix) & pl.col("metric").is_in(COMPARED))
    if rows.is_empty():
        return None
    models = [m for m in ("flame", "clip") if m in set(rows["model"])]
    lookup = {(r["model"], r["benchmark"], r["metric"]): r["value"] for r in rows.iter_rows(named=True)}
    head = ["benchmark", "metric", *(MODEL_NAMES[m].split(" ")[0] for m in models)]
    head += ["FLAME − CLIP"] * (len(models) == 2) + ["chance"]
    body = []
    for b in sorted(set(rows["benchmark"])):
        for k in (k for k in COMPARED if any((m, b, k) in lookup for m in models)):
            vals = [lookup.get((m, b, k)) for m in models]
            cells = [b.removeprefix(prefix) or b, SHORT.get(k, k), *map(_cell, vals)]
            if len(models) == 2:
                cells.append("–" if None in vals else f"{vals[0] - vals[1]:+.1f}")
            chance = _chance(metrics, b, k)
            body.append(cells + ["–" if chance is None else f"{chance:.2f}"])
    width = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, width))) + " |"
    rule = "|" + "|".join("-" * (w + 2) if i < 2 else "-" * (w + 1) + ":" for i, w in enumerate(width)) + "|"
    return "\n".join([line(head), rule, *map(line, body)])


def _chance(metrics: pl.DataFrame, benchmark: str, metric: str) -> float | None:
    hit = metrics.filter((pl.col("benchmark") == benchmark) & (pl.col("metric") == CHANCE.get(metric, "")))
    return float(hit["value"][0]) if hit.height else None


def language_tables(metrics: pl.DataFrame) -> list[str]:
    """Per-language retrieval, one table per source: a row per language, FLAME and CLIP R@1
    both ways, the difference of their means, and chance."""
    out = []
    names = sorted({b for b in metrics["benchmark"] if b.startswith("multilingual/") and b.count("/") == 2})
    for source in sorted({b.split("/")[1] for b in names}):
        lines = [f"## Per-language retrieval: {source}", "",
                 "Each language's captions of the test images as its own gallery; FLAME embeds every "
                 "language with the single prompt (English template). R@1, %.", "",
                 "| language | FLAME I2T | CLIP I2T | FLAME T2I | CLIP T2I | FLAME − CLIP (mean) | chance |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for b in (b for b in names if b.split("/")[1] == source):
            v = {(m, k): metric_value(metrics, m, b, k) for m in ("flame", "clip") for k in ("i2t_R@1", "t2i_R@1")}
            delta = (None if None in v.values() else
                     (v["flame", "i2t_R@1"] + v["flame", "t2i_R@1"] - v["clip", "i2t_R@1"] - v["clip", "t2i_R@1"]) / 2)
            cells = [_cell(v["flame", "i2t_R@1"]), _cell(v["clip", "i2t_R@1"]), _cell(v["flame", "t2i_R@1"]),
                     _cell(v["clip", "t2i_R@1"]), "–" if delta is None else f"{delta:+.1f}",
                     "–" if (c := _chance(metrics, b, "i2t_R@1")) is None else f"{c:.2f}"]
            lines.append(f"| {b.split('/')[2]} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines) + "\n")
    return out



def benchmark_sections(metrics: pl.DataFrame, runs: pl.DataFrame | None) -> list[str]:
    """The file benchmarks: those of ``eval.benchmarks`` (in the evaluation's metrics) and the
    latest ``flame benchmark`` run of each other one (``runs``, from ``benchmark_runs``)."""
    out = []
    if table := comparison_table(metrics, "manifest/"):
        out += ["## Your benchmarks (`eval.benchmarks`)", "",
                "Benchmarks read from files, scored by the evaluation above; rows read, used and "
                "rejected (with the reasons) are in `eval/metrics.json`.", "", table, ""]
    if runs is None or runs.is_empty():
        return out
    listed = {b.split("/")[1] for b in metrics["benchmark"] if b.startswith("manifest/")}
    runs = runs.filter(~pl.col("benchmark").str.split("/").list.get(1).is_in(list(listed)))
    for name in sorted({b.split("/")[1] for b in runs["benchmark"]}):
        rows = runs.filter(pl.col("benchmark").str.split("/").list.get(1) == name)
        out += [f"## `flame benchmark`: {name}", "",
                f"Run `{rows['run_id'][0]}`, finished {rows['ended_at'][0]}.", "",
                comparison_table(rows, f"manifest/{name}/"), ""]
    return out


def render_report(run: dict, metrics: pl.DataFrame, plots: Sequence[str],
                  upstream: pl.DataFrame | None = None, split: str = "test",
                  benchmarks: pl.DataFrame | None = None) -> str:
    """The report text: provenance, one table per benchmark family, the file benchmarks (with
    ``benchmarks``, the latest ``flame benchmark`` runs), then the plots; ``split`` names the
    curated split the benchmarks ran on."""
    inputs = sorted(set(metrics["inputs"].drop_nulls())) if not metrics.is_empty() else []
    out = ["# Evaluation report", "",
           "Generated from the results store (DuckDB `metrics` table); every number below is a "
           "row of the run named here.", "",
           f"- run: `{run['run_id']}` (params `{run['params_hash']}`, code `{run['code_version']}`)",
           f"- finished: {run['ended_at']}",
           f"- outputs (artifact hashes): `{'; '.join(inputs) or 'none'}`", ""]
    if upstream is not None and not upstream.is_empty():
        out += ["Inputs: the latest successful run of each earlier stage before this evaluation.", "",
                "| stage | artifact | content hash | run |", "|---|---|---|---|"]
        out += [f"| {r['stage']} | {r['name']} | `{r['content_hash'][:16]}` | `{r['run_id']}` |"
                for r in upstream.iter_rows(named=True)] + [""]
    if {"flame", "clip"} <= set(metrics["model"]) and targets(metrics):
        out += [f"## Headline: FLAME vs CLIP on the held-out {split} sets", "",
                "Long = scene long captions with hard negatives in the gallery; multilingual and "
                "per-source language figures = R@1, mean of both directions, over the non-English "
                "languages; chance = what a random ranking scores on the same gallery.", "",
                targets_markdown(metrics), ""]
    for title, family, shown, note in SECTIONS:
        table = family_table(metrics, family, shown)
        if table is None:
            continue
        out += [f"## {title}", ""] + ([note, ""] if note else []) + [table, ""]
    out += language_tables(metrics)
    out += benchmark_sections(metrics, benchmarks)
    sizes = metrics.filter(pl.col("metric").is_in(["n_images", "n_texts"])
                           & (pl.col("model") == metrics["model"].min()))
    if not sizes.is_empty():
        out += ["## Gallery sizes (unique images / unique texts)", "",
                "| benchmark | images | texts |", "|---|---:|---:|"]
        wide = sizes.pivot(on="metric", index="benchmark", values="value").sort("benchmark")
        for r in wide.iter_rows(named=True):
            out.append(f"| {r['benchmark']} | {int(r.get('n_images') or 0)} | {int(r.get('n_texts') or 0)} |")
        out.append("")
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(out)


def write_report(cfg: Profile) -> Path:
    """Write ``eval/report.md`` from the latest successful evaluate run of ``cfg``'s profile."""
    paths = Paths.of(cfg)
    store = ResultsStore(paths.results_db)
    run = latest_run(store, cfg.name)
    plots = sorted(p.relative_to(paths.eval).as_posix() for p in paths.plots.glob("*.png")) \
        if paths.plots.exists() else []
    text = render_report(run, run_metrics(store, run["run_id"]), plots,
                         upstream_artifacts(store, cfg.name, run["started_at"]), cfg.eval.split,
                         benchmark_runs(store, cfg.name))
    with atomic_path(paths.report) as tmp:
        tmp.write_text(text)
    return paths.report


def report(cfg: Profile) -> StageOutput:
    """The report stage: ``eval/report.md`` of the latest evaluate run."""
    return StageOutput(artifacts={"report": write_report(cfg)})
