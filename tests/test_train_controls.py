"""Training controls (gradient accumulation, clipping, kept checkpoints, fp16 with a gradient
scaler), TensorBoard event files and the progress lines of the training loop."""
import copy
import shutil

import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from flame_pipeline import progress as progress_module
from flame_pipeline.files import sha256_tree
from flame_pipeline.paths import Paths
from flame_pipeline.train import loop
from flame_pipeline.train.checkpoint import read_state
from flame_pipeline.train.clip import clip_recipe, train_baseline
from flame_pipeline.train.data import step_batches
from flame_pipeline.train.flame import flame_recipe, train

pytestmark = pytest.mark.usefixtures("one_thread")
RECIPES = {"flame": flame_recipe, "clip": clip_recipe}


def _grads(recipe, model, batch, accum: int) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    precision = loop.Precision.of("fp32", torch.device("cpu"))
    loop.backward(recipe, model, model, batch, accum, precision, precision.scaler())
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _first_batch(recipe, cfg) -> dict[str, torch.Tensor]:
    return next(step_batches(recipe.data, cfg.train.batch_size, 0, 1, 0, False))[1]


@pytest.mark.parametrize("kind", ["flame", "clip"])
def test_accumulated_gradients_are_the_whole_batch_gradients(tmp_path, kind, make_data):
    # logit bias 0: the negatives weigh in FLAME's loss from the start, as later in training
    cfg = make_data(tmp_path, overrides={"train.logit_bias_init": 0.0})
    torch.manual_seed(0)
    recipe = RECIPES[kind](cfg)
    batch = _first_batch(recipe, cfg)
    whole = _grads(recipe, recipe.model, batch, 1)
    for accum in (2, 3, 8):                 # 8 x 1 sample; 3 micro-batches of 3, 3 and 2
        parts = _grads(recipe, recipe.model, batch, accum)
        assert parts.keys() == whole.keys()
        # float tolerance: 1e-4 of each parameter's largest gradient entry (seen: <= 7e-6; the
        # attention key biases, whose exact gradient is 0, differ by float noise alone)
        for name, g in whole.items():
            assert (parts[name] - g).abs().max() <= 1e-4 * g.abs().max() + 1e-7, (accum, name)
    # the loss's own parameters count once, not once per pass (open_clip's accum_freq would
    # give accum x their gradient here)
    assert whole["logit_scale"].abs() > 1e-4
    # and the mean of the micro-batches' own losses is another loss: its gradient differs
    naive = copy.deepcopy(recipe.model)
    naive.zero_grad()
    for micro in loop._split(batch, 2):
        (recipe.loss(recipe.features(naive, micro), recipe.head(naive)) / 2).backward()
    assert not torch.allclose(naive.logit_scale.grad, whole["logit_scale"], rtol=0.1)


@pytest.mark.parametrize("kind", ["flame", "clip"])
def test_training_with_accumulation_matches_the_whole_batch(tmp_path, kind, make_data):
    stage = train if kind == "flame" else train_baseline
    stage(make_data(tmp_path / "a"))
    out = stage(make_data(tmp_path / "b", overrides={"train.grad_accum_steps": 4}))
    a = pl.read_csv(tmp_path / "a" / "models" / kind / "curve.csv")["loss"].to_list()
    b = pl.read_csv(tmp_path / "b" / "models" / kind / "curve.csv")["loss"].to_list()
    assert len(b) == 6 and b == pytest.approx(a, rel=1e-4)
    wa = load_file(str(tmp_path / "a" / "models" / kind / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "models" / kind / "model.safetensors"))
    # the same weights (seen: within 2e-7), but for the attention key biases: softmax ignores
    # them, their exact gradient is 0, and Adam moves them by up to lr a step on float noise
    keys = {k for k in wa if k.endswith(("k_proj.bias", "attention.key.bias"))}
    assert keys and all((wa[k] - wb[k]).abs().max() <= 6 * 5e-4 for k in keys)
    assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=1e-5) for k in set(wa) - keys)
    assert out.summary["resumed_from"] == 0


def test_accumulation_needs_a_sample_per_micro_batch(tmp_path, make_data):
    cfg = make_data(tmp_path, overrides={"train.grad_accum_steps": 9})   # batch of 8
    with pytest.raises(ValueError, match="grad_accum_steps 9 is more than the 8 samples"):
        train(cfg)


def test_gradients_are_clipped_to_the_norm(tmp_path, monkeypatch, make_data):
    real = torch.nn.utils.clip_grad_norm_
    seen = []

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        before = real(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        seen.append((float(before), float(after), max_norm))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train(make_data(tmp_path / "off"))
    assert seen == []                                   # off by default
    cfg = make_data(tmp_path / "on", overrides={"train.grad_clip_norm": 0.05})
    train(cfg)
    assert len(seen) == cfg.train.steps
    assert all(before > 0.05 and after == pytest.approx(0.05, rel=1e-4) and limit == 0.05
               for before, after, limit in seen)
    logged = _scalars(Paths.of(cfg).tensorboard("flame"))["train/grad_norm"]
    assert logged == pytest.approx([b for b, _, _ in seen], rel=1e-5)   # the norm before clipping


def test_precision_choice_per_device(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert loop.Precision.of("auto", cpu).dtype is None
    assert not loop.Precision.of("auto", cpu).scaler().is_enabled()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert loop.Precision.of("auto", gpu).dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert loop.Precision.of("auto", gpu).dtype == torch.float16     # a GPU without bf16
    assert loop.Precision.of("bf16", gpu).dtype == torch.bfloat16
    assert loop.Precision.of("fp32", gpu).dtype is None
    fp16 = loop.Precision.of("fp16", cpu)
    assert fp16.dtype == torch.float16 and fp16.scaler().is_enabled()  # fp16 scales its loss
    assert not loop.Precision.of("bf16", cpu).scaler().is_enabled()


def _resumed_from_kept(make_data, root, overrides: dict, model_dir, step: int):
    """A new data dir at ``root`` whose checkpoint is ``model_dir``'s kept one of ``step``,
    trained to the end from there; its FLAME model dir."""
    cfg = make_data(root, overrides=overrides)
    d = Paths.of(cfg).flame_model
    d.mkdir(parents=True)
    shutil.copy2(model_dir / "checkpoints" / f"step_{step:08d}.safetensors", d / "state.safetensors")
    assert train(cfg).summary["resumed_from"] == step
    return d


def _same_weights(a_dir, b_dir) -> bool:
    a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fp16_trains_with_a_gradient_scaler_and_resumes_it(tmp_path, make_data):
    over = {"train.precision": "fp16", "train.grad_clip_norm": 1.0, "train.checkpoint_every": 3,
            "train.keep_checkpoints": 2}
    cfg = make_data(tmp_path / "a", overrides=over)
    train(cfg)
    d = Paths.of(cfg).flame_model
    curve = pl.read_csv(d / "curve.csv")["loss"].to_list()
    reference = make_data(tmp_path / "fp32", overrides={"train.grad_clip_norm": 1.0})
    train(reference)
    fp32 = pl.read_csv(reference.root / "models" / "flame" / "curve.csv")["loss"].to_list()
    # fp16 matmuls: close to fp32 (Adam's first steps move each weight by +-lr whatever the
    # gradient's size, so a near-zero gradient whose sign fp16 flips moves the other way)
    assert curve == pytest.approx(fp32, rel=0.1) and curve != fp32 and curve[-1] < curve[0]
    # the scaler at work: it starts at 2^16 and halves on a step whose gradients overflowed
    scales = _scalars(Paths.of(cfg).tensorboard("flame"))["train/loss_scale"]
    print("loss scale per step:", scales)
    assert scales[0] == 65536.0 and all(b in (a, a / 2) for a, b in zip(scales, scales[1:]))
    assert read_state(d)[1]["scaler"]["scale"] <= scales[-1]          # saved with the checkpoint
    # resumed from step 3's checkpoint (scaler state included): the same weights
    assert _same_weights(d, _resumed_from_kept(make_data, tmp_path / "b", over, d, 3))


def test_keep_checkpoints_keeps_the_latest_ones_and_each_resumes(tmp_path, make_data):
    over = {"train.checkpoint_every": 1, "train.keep_checkpoints": 3}
    cfg = make_data(tmp_path / "a", overrides=over)
    train(cfg)
    d = Paths.of(cfg).flame_model
    kept = sorted(p.name for p in (d / "checkpoints").iterdir())
    assert kept == ["step_00000004.safetensors", "step_00000005.safetensors"]
    assert read_state(d)[1]["step"] == 6                               # the one the run ends on
    # a kept checkpoint is a state to resume from: the same weights as the straight run
    assert _same_weights(d, _resumed_from_kept(make_data, tmp_path / "b", over, d, 4))
    # the default keeps the latest only, as before
    one = make_data(tmp_path / "c", overrides={"train.checkpoint_every": 1})
    train(one)
    assert not (Paths.of(one).flame_model / "checkpoints").exists()


def _scalars(folder) -> dict[str, list[float]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _steps(folder, tag: str) -> list[int]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


@pytest.mark.parametrize("kind", ["flame", "clip"])
def test_tensorboard_events_beside_the_model_and_a_rerun_changes_nothing(tmp_path, kind, make_data):
    stage = train if kind == "flame" else train_baseline
    cfg = make_data(tmp_path)
    stage(cfg)
    paths = Paths.of(cfg)
    folder = paths.tensorboard(kind)
    assert not folder.is_relative_to(paths.model(kind))       # not in the hashed model dir
    scalars = _scalars(folder)
    heads = {"train/logit_scale", "train/logit_bias"} if kind == "flame" else {"train/logit_scale"}
    assert set(scalars) == {"train/loss", "train/lr", "train/images_per_s"} | heads
    curve = pl.read_csv(paths.curve(kind))
    assert scalars["train/loss"] == pytest.approx(curve["loss"].to_list(), rel=1e-6)
    assert scalars["train/lr"] == pytest.approx(curve["lr"].to_list(), rel=1e-6)
    assert _steps(folder, "train/loss") == list(range(1, 7))
    assert scalars["train/logit_scale"][0] == pytest.approx(
        cfg.train.logit_scale_init if kind == "flame" else 1 / 0.07, rel=0.05)  # the factor, not its log
    # a rerun of the finished run trains nothing and writes nothing: the same bytes
    before = sha256_tree(paths.model(kind)), sha256_tree(folder)
    assert stage(cfg).summary["resumed_from"] == 6
    assert (sha256_tree(paths.model(kind)), sha256_tree(folder)) == before


def test_resumed_training_hides_events_after_its_checkpoint(tmp_path, make_data):
    cfg = make_data(tmp_path, overrides={"train.checkpoint_every": 3, "train.keep_checkpoints": 2})
    train(cfg)
    d = Paths.of(cfg).flame_model
    curve = pl.read_csv(d / "curve.csv")["loss"].to_list()
    # events logged up to step 6, the checkpoint of step 3 to resume from (as after a kill)
    shutil.copy2(d / "checkpoints" / "step_00000003.safetensors", d / "state.safetensors")
    assert train(cfg).summary["resumed_from"] == 3
    folder = Paths.of(cfg).tensorboard("flame")
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2       # the first run's and the resumed one's
    assert _steps(folder, "train/loss") == list(range(1, 7))          # each step once
    assert _scalars(folder)["train/loss"] == pytest.approx(curve, rel=1e-6)


def test_training_progress_lines_when_not_a_terminal(tmp_path, monkeypatch, capsys, make_data):
    monkeypatch.setattr(progress_module, "LINE_EVERY_S", 0.0)
    cfg = make_data(tmp_path)
    train(cfg)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("train flame: ")]
    assert [line.split(" step ")[0] for line in lines] == [f"train flame: {n}/6" for n in range(7)]
    assert "ETA" not in lines[-1] and "<00:00" in lines[-1]              # elapsed<remaining
    assert "loss " in lines[-1] and "images/s" in lines[-1]
