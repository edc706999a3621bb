"""The report is generated from a DuckDB results store that the test fills; plots are real PNGs."""
import numpy as np
import pytest
from PIL import Image

from flame_pipeline.eval import plots
from flame_pipeline.eval.report import write_report
from flame_pipeline.paths import Paths
from flame_pipeline.store import ResultsStore, recorded_run


def fill(store: ResultsStore, tiny_cfg, rows, status_ok=True):
    try:
        with recorded_run(store, tiny_cfg.name, "evaluate", tiny_cfg.params_hash()) as run_id:
            store.add_metrics(run_id, tiny_cfg.name, tiny_cfg.params_hash(), rows, "metrics=abc123")
            if not status_ok:
                raise RuntimeError("boom")
    except RuntimeError:
        pass
    return run_id


def test_report_puts_models_side_by_side_from_duckdb(tiny_cfg):
    store = ResultsStore(Paths.of(tiny_cfg).results_db)
    with recorded_run(store, tiny_cfg.name, "train", tiny_cfg.params_hash()) as train_run:
        store.add_artifact(train_run, "train", "model", "models/flame", "f" * 64, None)
    fill(store, tiny_cfg, [("flame", "retrieval/scenes", "i2t_R@1", 1.0)])          # older run
    run_id = fill(store, tiny_cfg, [
        ("flame", "retrieval/scenes", "i2t_R@1", 42.5), ("clip", "retrieval/scenes", "i2t_R@1", 12.25),
        ("flame", "retrieval/scenes", "t2i_R@1", 40.0), ("clip", "retrieval/scenes", "t2i_R@1", 10.0),
        ("flame", "retrieval/scenes", "n_images", 16), ("clip", "retrieval/scenes", "n_images", 16),
        ("flame", "retrieval/scenes", "n_texts", 15), ("clip", "retrieval/scenes", "n_texts", 15),
        ("flame", "retrieval/scenes", "chance_R@1", 6.25), ("clip", "retrieval/scenes", "chance_R@1", 6.25),
        ("flame", "multilingual/emoji/de", "i2t_R@1", 30.0), ("clip", "multilingual/emoji/de", "i2t_R@1", 5.0),
        ("flame", "multilingual/emoji/de", "t2i_R@1", 20.0), ("clip", "multilingual/emoji/de", "t2i_R@1", 7.0),
        ("flame", "multilingual/emoji/de", "chance_R@1", 2.0), ("clip", "multilingual/emoji/de", "chance_R@1", 2.0),
        ("flame", "zeroshot/scenes/shape", "top1", 77.0),
    ])
    fill(store, tiny_cfg, [("flame", "retrieval/scenes", "i2t_R@1", 99.0)], status_ok=False)  # failed run
    report = write_report(tiny_cfg).read_text()
    assert f"`{run_id}`" in report
    lines = report.splitlines()
    head = lines.index("## Image-text retrieval")
    table = lines[head + 4: head + 10]
    assert table[0] == "| model | scenes I2T R@1 | scenes T2I R@1 |"
    assert table[2] == "| CLIP (text tower from scratch) | 12.2 | 10.0 |"
    assert table[3] == "| FLAME (frozen LLM) | 42.5 | 40.0 |"
    assert table[4] == "| *FLAME − CLIP* | +30.2 | +30.0 |"
    assert table[5] == "| *chance* | 6.25 | 6.25 |"
    assert "## Per-language retrieval: emoji" in report
    assert "| de | 30.0 | 5.0 | 20.0 | 7.0 | +19.0 | 2.00 |" in report
    assert "| CLIP (text tower from scratch) | – |" in report     # zero-shot missing for CLIP
    assert "| *FLAME − CLIP* | – |" in report
    assert "| retrieval/scenes | 16 | 15 |" in report
    assert "99.0" not in report and "| 1.0 |" not in report       # failed and older runs ignored
    assert "Long-caption" not in report                             # no rows, no section
    assert f"| train | model | `{'f' * 16}` | `{train_run}` |" in report   # provenance


def test_report_without_a_run_is_a_clear_error(tiny_cfg):
    with pytest.raises(LookupError, match="no successful evaluate run"):
        write_report(tiny_cfg)


def test_plots_are_written_and_linked(tiny_cfg):
    paths = Paths.of(tiny_cfg)
    metrics = {m: {"retrieval/scenes": {f"{d}_R@{k}": float(k * s) for d in ("i2t", "t2i")
                                        for k in (1, 5, 10)}} for m, s in (("flame", 8), ("clip", 3))}
    plots.recall_curves(metrics, ["retrieval/scenes"], paths.plots / "recall.png")
    plots.language_bars({"flame": {"en": {"i2t_R@1": 50, "t2i_R@1": 40}, "de": {"i2t_R@1": 20}},
                         "clip": {"en": {"i2t_R@1": 30, "t2i_R@1": 20}}}, paths.plots / "lang.png")
    image = np.zeros((32, 32, 3), np.uint8)
    image[:16] = 255
    plots.token_map_figure([image], [[["sky", "sky"], ["ground", "ground"]]], paths.plots / "map.png")
    for name in ("recall", "lang", "map"):
        with Image.open(paths.plots / f"{name}.png") as im:
            assert im.format == "PNG" and im.width > 100
    store = ResultsStore(paths.results_db)
    fill(store, tiny_cfg, [("flame", "retrieval/scenes", "i2t_R@1", 8.0)])
    report = write_report(tiny_cfg).read_text()
    for name in ("lang", "map", "recall"):
        assert f"](plots/{name}.png)" in report
