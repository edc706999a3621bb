"""The product's claim, checked on the metric rows of one evaluation run (as stored in DuckDB):
FLAME vs the CLIP baseline on the held-out test sets. The scene targets (long captions, the
scene languages, zero-shot, short captions: issue 7) and, for every other source with
per-language retrieval (the real emoji corpus: issue 13), its non-English locales and English."""
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
    chance: float | None = None   # what a random ranking scores on the same benchmark(s)
    count: bool = False           # flame/clip hold a count (locales won / locales), not a score


def metric_value(m: pl.DataFrame, model: str, benchmark: str, metric: str) -> float | None:
    """One metric of one model on one benchmark (None when the run lacks it)."""
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
    v = lambda b, k: metric_value(m, model, b, k)  # noqa: E731
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


# figure -> the benchmarks and metrics whose chance level it has
CHANCE = {
    "long I2T R@1": [("long_retrieval/scenes", "chance_R@1")],
    "long T2I R@1": [("long_retrieval/scenes", "chance_R@1")],
    "zero-shot Fashion-MNIST top-1": [("zeroshot/fashion_mnist/class", "chance_top1")],
    "short retrieval R@1": [("retrieval/scenes", "chance_R@1")],
}


def _chance(m: pl.DataFrame, name: str) -> float | None:
    if name == "multilingual non-en R@1":
        pairs = [(b, "chance_R@1") for b in set(m["benchmark"])
                 if b.startswith("multilingual/scenes/") and not b.endswith("/en")]
    elif name == "zero-shot scenes top-1":
        pairs = [(b, "chance_top1") for b in set(m["benchmark"]) if b.startswith("zeroshot/scenes/")]
    else:
        pairs = CHANCE.get(name, [])
    return _mean([metric_value(m, "flame", b, k) for b, k in pairs]) if pairs else None


def per_language_sources(m: pl.DataFrame) -> list[str]:
    """Sources other than the scenes with retrieval in two or more non-English languages."""
    langs: dict[str, set[str]] = {}
    for b in set(m["benchmark"]):
        parts = b.split("/")
        if parts[0] == "multilingual" and len(parts) == 3 and parts[1] != "scenes" and parts[2] != "en":
            langs.setdefault(parts[1], set()).add(parts[2])
    return sorted(s for s, found in langs.items() if len(found) >= 2)


def source_targets(m: pl.DataFrame, source: str) -> list[Target]:
    """One source's per-language targets: the mean over its non-English locales (R@1, mean of
    both directions) >= CLIP + 10, FLAME ahead on every one of them, and English >= CLIP."""
    langs = sorted(b.rsplit("/", 1)[1] for b in set(m["benchmark"])
                   if b.startswith(f"multilingual/{source}/") and not b.endswith("/en"))
    both = lambda model, b: _mean([metric_value(m, model, b, "i2t_R@1"), metric_value(m, model, b, "t2i_R@1")])  # noqa: E731
    per = {lang: (both("flame", f"multilingual/{source}/{lang}"), both("clip", f"multilingual/{source}/{lang}"))
           for lang in langs}
    out = []
    if per and all(f is not None and c is not None for f, c in per.values()):
        f = sum(v[0] for v in per.values()) / len(per)
        c = sum(v[1] for v in per.values()) / len(per)
        chance = _mean([metric_value(m, "flame", f"multilingual/{source}/{lang}", "chance_R@1") for lang in langs])
        out.append(Target(f"{source}: non-English R@1, mean of {len(per)} locales", f, c,
                          ">= CLIP + 10", f >= c + 10, chance))
        wins = sum(fv > cv for fv, cv in per.values())
        out.append(Target(f"{source}: non-English locales where FLAME > CLIP", wins, len(per),
                          "every locale", wins == len(per), count=True))
    f, c = both("flame", f"retrieval/{source}"), both("clip", f"retrieval/{source}")
    if f is not None and c is not None:
        out.append(Target(f"{source}: English R@1", f, c, ">= CLIP", f >= c,
                          metric_value(m, "flame", f"retrieval/{source}", "chance_R@1")))
    return out


def targets(m: pl.DataFrame) -> list[Target]:
    fl, cl = figures(m, "flame"), figures(m, "clip")
    out = []
    for name, (rule, ok) in RULES.items():
        f, c = fl[name], cl[name]
        if f is not None and c is not None:
            out.append(Target(name, f, c, rule, bool(ok(f, c)), _chance(m, name)))
    for source in per_language_sources(m):
        out += source_targets(m, source)
    return out


def targets_markdown(m: pl.DataFrame) -> str:
    lines = ["| target (held-out test) | FLAME | CLIP | chance | FLAME must be | met |",
             "|---|---:|---:|---:|---|---|"]
    for t in targets(m):
        scores = (f"{t.flame:.0f} of {t.clip:.0f} | – | – " if t.count else
                  f"{t.flame:.1f} | {t.clip:.1f} | {'–' if t.chance is None else f'{t.chance:.2f}'} ")
        lines.append(f"| {t.name} | {scores}| {t.rule} | {'yes' if t.met else '**no**'} |")
    return "\n".join(lines)
