"""Evaluation figures: recall@K curves, per-language bars, the interpretability map.

Each function takes plain data (no model, no store) and writes one PNG atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import functools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import font_manager, ft2font, patheffects  # noqa: E402
from PIL import Image  # noqa: E402

from flame_pipeline.files import atomic_path  # noqa: E402

# metrics layout used throughout evaluation: model -> benchmark -> metric -> value
Metrics = Mapping[str, Mapping[str, Mapping[str, float]]]
COLORS = {"flame": "tab:red", "clip": "tab:blue"}
# the token map's fonts, in fallback order: matplotlib's DejaVu Sans (Latin, Greek, Cyrillic) and
# Noto Sans CJK (Chinese, Japanese, Korean; Debian fonts-noto-cjk, which scripts/setup.sh installs)
CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
TOKEN_CHARS = 10   # a token is cut to this many characters in its cell


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _recalls(values: Mapping[str, float], direction: str) -> tuple[list[int], list[float]]:
    pairs = sorted((int(k.split("@")[1]), v) for k, v in values.items()
                   if k.startswith(f"{direction}_R@"))
    return [k for k, _ in pairs], [v for _, v in pairs]


def recall_curves(metrics: Metrics, benchmarks: Sequence[str], path: str | Path) -> Path:
    """R@K against K, image->text and text->image, one panel per benchmark, one line per model."""
    if not benchmarks:
        raise ValueError("no retrieval benchmark to plot")
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(4 * len(benchmarks), 3.4), squeeze=False,
                             layout="constrained")
    for ax, bench in zip(axes[0], benchmarks):
        for model, by_bench in sorted(metrics.items()):
            if bench not in by_bench:
                continue
            for direction, style in (("i2t", "-o"), ("t2i", "--s")):
                ks, vs = _recalls(by_bench[bench], direction)
                ax.plot(ks, vs, style, color=COLORS.get(model), label=f"{model} {direction}")
        ax.set(title=bench, xlabel="K", ylabel="recall@K (%)", ylim=(0, 101))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def language_bars(per_language: Mapping[str, Mapping[str, Mapping[str, float]]],
                  path: str | Path, metric_names: Sequence[str] = ("i2t_R@1", "t2i_R@1")) -> Path:
    """Grouped bars: ``per_language[model][language][metric]``, one panel per metric."""
    models = sorted(per_language)
    langs = sorted({lang for m in models for lang in per_language[m]})
    if not langs:
        raise ValueError("no language to plot")
    fig, axes = plt.subplots(1, len(metric_names), squeeze=False, layout="constrained",
                             figsize=(1.2 * len(langs) * len(metric_names) + 2, 3.4))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(langs))
    for ax, metric in zip(axes[0], metric_names):
        for i, model in enumerate(models):
            vals = [per_language[model].get(lang, {}).get(metric, np.nan) for lang in langs]
            ax.bar(x + i * width, vals, width, label=model, color=COLORS.get(model))
        ax.set_xticks(x + width * (len(models) - 1) / 2, langs)
        ax.set(title=f"multilingual {metric}", ylabel="%", ylim=(0, 101))
        ax.legend(fontsize=7)
    return _save(fig, path)


@functools.lru_cache(maxsize=1)
def token_fonts() -> tuple[tuple[str, ...], tuple[frozenset[int], ...]]:
    """The families of the token map's fonts that are installed, and the code points each has."""
    files = [Path(font_manager.findfont("DejaVu Sans")), CJK_FONT]
    families, charmaps = [], []
    for f in (f for f in files if f.is_file()):
        font_manager.fontManager.addfont(str(f))
        families.append(font_manager.FontProperties(fname=str(f)).get_name())
        charmaps.append(frozenset(ft2font.FT2Font(str(f)).get_charmap()))
    return tuple(families), tuple(charmaps)


def drawable(token: str) -> str:
    """A token cut to ``TOKEN_CHARS`` characters, each character that no font draws (or that is
    a control character) written plainly as ``<U+XXXX>`` instead of a box."""
    _, charmaps = token_fonts()
    return "".join(c if c.isprintable() and any(ord(c) in m for m in charmaps) else f"<U+{ord(c):04X}>"
                   for c in token[:TOKEN_CHARS])


def token_map_figure(images: Sequence[np.ndarray], grids: Sequence[Sequence[Sequence[str]]],
                     path: str | Path, side: int = 256) -> Path:
    """Each image upscaled to ``side`` px with its top-1 token written in every grid cell, in
    fonts that cover Latin, Greek, Cyrillic and CJK scripts (``drawable``)."""
    if not images or len(images) != len(grids):
        raise ValueError("one token grid per image is required")
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.2), squeeze=False)
    for ax, image, grid in zip(axes[0], images, grids):
        big = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
                         .resize((side, side), Image.Resampling.NEAREST))
        ax.imshow(big)
        cells = len(grid)
        step = side / cells
        for r, row in enumerate(grid):
            for c, token in enumerate(row):
                ax.text((c + 0.5) * step, (r + 0.5) * step, drawable(token), ha="center",
                        va="center", fontsize=max(5, 40 // cells), color="white",
                        fontfamily=list(token_fonts()[0]),
                        path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
        for i in range(1, cells):
            ax.axhline(i * step, color="white", lw=0.5, alpha=0.6)
            ax.axvline(i * step, color="white", lw=0.5, alpha=0.6)
        ax.axis("off")
    return _save(fig, path)
