"""The retrieval check during training (``train.eval_every``): logged beside the loss in the
curve and TensorBoard, on validation rows when they are stored, else on training rows, never
on test rows; training is the same with it as without it, and resumes across the switch."""
import shutil

import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from flame_pipeline.paths import Paths
from flame_pipeline.train.check import check_rows, recall_at_1
from flame_pipeline.train.clip import train_baseline
from flame_pipeline.train.flame import train
from profiles import profile_at

pytestmark = pytest.mark.usefixtures("one_thread")
STAGES = {"flame": train, "clip": train_baseline}


def test_recall_at_1_counts_ties_against():
    eye = torch.eye(4)
    assert recall_at_1(eye, eye) == {"i2t_R@1": 100.0, "t2i_R@1": 100.0}
    swapped = eye[[1, 0, 2, 3]]                     # texts 0 and 1 point at each other's image
    assert recall_at_1(eye, swapped) == {"i2t_R@1": 50.0, "t2i_R@1": 50.0}
    assert recall_at_1(torch.ones(3, 2), torch.ones(3, 2)) == {"i2t_R@1": 0.0, "t2i_R@1": 0.0}


@pytest.mark.parametrize("kind", ["flame", "clip"])
def test_check_is_logged_and_changes_nothing_in_training(tmp_path, kind, make_data):
    off = make_data(tmp_path / "off", classes=8)
    on = make_data(tmp_path / "on", classes=8, overrides={"train.eval_every": 2, "train.eval_rows": 6})
    STAGES[kind](off)
    STAGES[kind](on)
    a, b = (load_file(str(Paths.of(c).model(kind) / "model.safetensors")) for c in (off, on))
    assert all(torch.equal(a[k], b[k]) for k in a)                       # bitwise the same training
    plain, checked = (pl.read_csv(Paths.of(c).curve(kind)) for c in (off, on))
    assert plain.columns == ["step", "loss", "lr", "images_per_s"]       # off: the curve as before
    assert checked["loss"].to_list() == plain["loss"].to_list()
    names = ["eval_train/i2t_R@1", "eval_train/t2i_R@1"]                 # no val split: training rows
    assert checked.columns == plain.columns + names
    logged = checked.drop_nulls(names[0])
    assert logged["step"].to_list() == [2, 4, 6]
    assert all(0.0 <= v <= 100.0 for n in names for v in logged[n])
    events = EventAccumulator(str(Paths.of(on).tensorboard(kind))).Reload()
    assert [e.step for e in events.Scalars(names[0])] == [2, 4, 6]
    assert [e.value for e in events.Scalars(names[1])] == pytest.approx(logged[names[1]].to_list())


def test_resume_switching_the_check_on(tmp_path, make_data):
    """A run without the check, resumed from its step-3 checkpoint with the check on, ends
    with the same weights and checks only the steps it ran."""
    cfg = make_data(tmp_path, classes=8, overrides={"train.keep_checkpoints": 2})
    train(cfg)
    d = Paths.of(cfg).flame_model
    before = load_file(str(d / "model.safetensors"))
    shutil.copyfile(d / "checkpoints" / "step_00000003.safetensors", d / "state.safetensors")
    out = train(profile_at(tmp_path, {"train.keep_checkpoints": 2, "train.eval_every": 3}))
    assert out.summary["resumed_from"] == 3
    after = load_file(str(d / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    curve = pl.read_csv(Paths.of(cfg).curve("flame"))
    assert curve["step"].to_list() == [1, 2, 3, 4, 5, 6]
    assert curve.drop_nulls("eval_train/i2t_R@1")["step"].to_list() == [6]   # 1-3 ran without it


def test_rows_come_from_val_when_stored_else_train_and_never_test(tmp_path, make_data):
    cfg = make_data(tmp_path, classes=8, n_test=8)
    paths = Paths.of(cfg)
    captions = pl.read_parquet(paths.captions)
    val = captions["key"][-8:-4].to_list()          # 4 of the 8 held-out rows become val rows
    captions.with_columns(split=pl.when(pl.col("key").is_in(val)).then(pl.lit("val"))
                          .otherwise("split")).write_parquet(paths.captions)
    test = set(captions.filter(pl.col("split") == "test")["key"]) - set(val)
    rows = check_rows(cfg, lambda key: True)        # embed.splits: train, test (no val stored)
    assert rows.split == "train" and not set(rows.keys) & (test | set(val))
    assert len(set(rows.captions)) == len(rows.keys) == 8          # 8 distinct captions
    stored = make_data(tmp_path / "v", classes=8, n_test=8, overrides={"embed.splits": ["train", "val"]})
    pl.read_parquet(paths.captions).write_parquet(Paths.of(stored).captions)
    rows = check_rows(stored, lambda key: True)
    assert rows.split == "val" and sorted(rows.keys) == sorted(val)
    assert rows.pixels.shape == (4, 3, stored.vision.image_size, stored.vision.image_size)
