"""The training curve as files: ``curve.csv`` (step, loss, lr, images_per_s, and with
``train.eval_every`` the retrieval check's ``eval_<split>/i2t_R@1`` and ``.../t2i_R@1``, empty
between checks) and ``loss.png`` (the check's R@1 on a second axis)."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from flame_pipeline.files import atomic_path

FIELDS = ("step", "loss", "lr", "images_per_s")


def write_curve(csv_path: Path, png_path: Path, curve: list[dict], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks = sorted({k for point in curve for k in point} - set(FIELDS))
    frame = pl.DataFrame(curve, schema={"step": pl.Int64, "loss": pl.Float64, "lr": pl.Float64,
                                        "images_per_s": pl.Float64,
                                        **{k: pl.Float64 for k in checks}})
    with atomic_path(csv_path) as tmp:
        frame.write_csv(tmp)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(frame["step"].to_list(), frame["loss"].to_list(), lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if checks:
        right = ax.twinx()
        for name in checks:
            points = frame.drop_nulls(name)
            right.plot(points["step"].to_list(), points[name].to_list(), "o--", ms=3, lw=0.8, label=name)
        right.set_ylabel("R@1 (%)")
        right.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
