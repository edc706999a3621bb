"""The product's claim, checked on the metric rows of one evaluation run (as stored in DuckDB):
FLAME vs the CLIP baseline on the held-out test sets (the issue 7 targets)."""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Target:
    name: str
    flame: float
    clip: float
    rule: str           # how FLAME must compare with CLIP
    met: bool


def _value(m: pl.DataFrame, model: str, benchmark: str, metric: str) -> float | None:
    hit = m.filter((pl.col("model") == model) & (pl.col("benchmark") == benchmark)
                   & (pl.col("metric") == metric))
    return float(hit["value"][0]) if hit.height else None


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(values) else None


def figures(m: pl.DataFrame, model: str) -> dict[str, float | None]:
    """The headline figures of one model (None where the run lacks the benchmark)."""
    langs = sorted({b.rsplit("/", 1)[1] for b in m["benchmark"]
                    if b.startswith("multilingual/scenes/")} - {"en"})
    scene_tasks = sorted(b for b in set(m["benchmark"]) if b.startswith("zeroshot/scenes/"))
    v = lambda b, k: _value(m, model, b, k)  # noqa: E731
    return {
        "long I2T R@1": v("long_retrieval/scenes", "i2t_R@1"),
        "long T2I R@1": v("long_retrieval/scenes", "t2i_R@1"),
        "long (no hard negatives) R@1": _mean([v("long_retrieval_no_hn/scenes", "i2t_R@1"),
                                               v("long_retrieval_no_hn/scenes", "t2i_R@1")]),
        "multilingual non-en R@1": _mean([v(f"multilingual/scenes/{lang}", d)
                                          for lang in langs for d in ("i2t_R@1", "t2i_R@1")])
        if langs else None,
        "zero-shot scenes top-1": _mean([v(b, "top1") for b in scene_tasks]) if scene_tasks else None,
        "zero-shot Fashion-MNIST top-1": v("zeroshot/fashion_mnist/class", "top1"),
        "short retrieval R@1": _mean([v("retrieval/scenes", "i2t_R@1"),
                                      v("retrieval/scenes", "t2i_R@1")]),
    }


# figure -> (rule text, test on (flame, clip))
RULES = {
    "long I2T R@1": (">= 2x CLIP", lambda f, c: f >= 2 * c and f > 0),
    "long T2I R@1": (">= 2x CLIP", lambda f, c: f >= 2 * c and f > 0),
    "multilingual non-en R@1": (">= CLIP + 10", lambda f, c: f >= c + 10),
    "zero-shot scenes top-1": ("> CLIP", lambda f, c: f > c),
    "zero-shot Fashion-MNIST top-1": ("> CLIP", lambda f, c: f > c),
    "short retrieval R@1": (">= CLIP", lambda f, c: f >= c),
}


def targets(m: pl.DataFrame) -> list[Target]:
    fl, cl = figures(m, "flame"), figures(m, "clip")
    out = []
    for name, (rule, ok) in RULES.items():
        f, c = fl[name], cl[name]
        if f is not None and c is not None:
            out.append(Target(name, f, c, rule, bool(ok(f, c))))
    return out


def targets_markdown(m: pl.DataFrame) -> str:
    lines = ["| target (held-out test) | FLAME | CLIP | FLAME must be | met |",
             "|---|---:|---:|---|---|"]
    for t in targets(m):
        lines.append(f"| {t.name} | {t.flame:.1f} | {t.clip:.1f} | {t.rule} | "
                     f"{'yes' if t.met else '**no**'} |")
    return "\n".join(lines)
