"""The train and train_baseline stages end to end on a small fixture data_dir."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

import flame_pipeline.train.flame as flame
from flame_pipeline.paths import Paths
from flame_pipeline.train.checkpoint import CheckpointError, read_state
from flame_pipeline.train.clip import LONG_CAPTION_P, CaptionTexts, load_clip, tokenize, train_baseline
from flame_pipeline.train.data import DataError
from flame_pipeline.train.flame import load_flame, train
from flame_pipeline.train.loop import TrainingDiverged
from profiles import profile_at

# one torch thread, like the child runs they are compared with; restored after each test
pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_train_streams_the_train_shards_and_writes_model_and_curve(tmp_path, monkeypatch, make_data):
    cfg = make_data(tmp_path)
    import flame_pipeline.text.llm as llm

    def no_llm(*_):
        raise AssertionError("training loaded the LLM")
    monkeypatch.setattr(llm, "load_llm", no_llm)            # training reads stored embeddings only
    out = train(cfg)
    d = tmp_path / "models" / "flame"
    assert out.artifacts["model"] == d
    assert out.rows == {"train_samples": 24}
    curve = pl.read_csv(d / "curve.csv")
    assert curve.columns == ["step", "loss", "lr", "images_per_s"]
    assert curve["step"].to_list() == [1, 2, 3, 4, 5, 6]
    assert curve["lr"][1] == pytest.approx(cfg.train.lr)             # end of the 2-step warm-up
    assert (d / "loss.png").read_bytes()[:4] == b"\x89PNG"
    state = json.loads((d / "state.json").read_text())
    assert state["step"] == 6 and state["curve"][-1]["loss"] == pytest.approx(curve["loss"][-1])

    model = load_flame(d)
    x = torch.randn(3, 3, 32, 32)
    emb = model.encode_image(x)
    assert emb.shape == (3, 64) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert model.projected_tokens(x).shape == (3, 16, 64)            # 4x4 grid of patches
    assert model.pooled_features(x).shape == (3, cfg.vision.hidden_size)
    from transformers import ViTModel
    vit = ViTModel.from_pretrained(d / "vision", add_pooling_layer=False)
    with torch.no_grad():
        assert torch.allclose(vit(pixel_values=x).last_hidden_state[:, 1:], model.patch_features(x))


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_lost_shard_file_is_a_clear_error_before_training(tmp_path, damage, make_data):
    cfg = make_data(tmp_path, shard_bytes=20_000)
    shards = sorted((tmp_path / "curated" / "train_shards").glob("shard.*.mds"))
    assert len(shards) >= 3
    size = shards[1].stat().st_size
    if damage == "missing":
        shards[1].unlink()
    else:
        shards[1].write_bytes(shards[1].read_bytes()[: size // 2])
    problem = "is missing" if damage == "missing" else f"has {size // 2} bytes, index.json says {size}"
    with pytest.raises(DataError, match=f"unreadable shards in .*train_shards: {shards[1].name} "
                                        f"{problem} .*re-run the curate stage"):
        train(cfg)
    assert not (tmp_path / "models" / "flame" / "state.json").exists()


def test_an_undecodable_stored_image_stops_training_naming_its_key(tmp_path, make_data):
    cfg = make_data(tmp_path, corrupt_image=("s007",), overrides={"train.steps": 3})
    with pytest.raises(DataError, match="s007: undecodable image"):
        train(cfg)


CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from flame_pipeline.config import load_profile
    from flame_pipeline.train import checkpoint, clip, flame
    save = checkpoint.save_state
    def save_then_die(out_dir, model, optimizer, scheduler, info, rng):
        save(out_dir, model, optimizer, scheduler, info, rng)
        if info["step"] == int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save_state = save_then_die
    cfg = load_profile("tiny", sys.argv[1], {"data_dir": sys.argv[2], **json.loads(sys.argv[5])})
    (clip.train_baseline if sys.argv[3] == "clip" else flame.train)(cfg)
""")


# the tiny profile: 24 samples, batch 8, so 3 steps an epoch; step 3 ends the first epoch, step 4
# is one batch into the second, with 2 DataLoader workers decoding
@pytest.mark.parametrize("kind, kill_at, over", [
    ("flame", 3, {}), ("flame", 4, {"train.checkpoint_every": 1, "train.num_workers": 2}),
    pytest.param("clip", 4, {"train.checkpoint_every": 1}, marks=pytest.mark.slow)])
def test_sigkill_after_checkpoint_then_resume_gives_the_same_weights(tmp_path, kind, kill_at, over,
                                                                     make_data):
    stage = train if kind == "flame" else train_baseline
    straight = make_data(tmp_path / "a")
    stage(straight)
    killed = make_data(tmp_path / "b", overrides=over)
    child = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "params.yaml"), str(tmp_path / "b"),
                            kind, str(kill_at), json.dumps(over)],
                           cwd=REPO, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert child.returncode == -9, child.stderr[-2000:]
    d = tmp_path / "b" / "models" / kind
    doc = read_state(d)[1]
    assert doc["step"] == kill_at and not (d / "model.safetensors").exists()
    assert (doc["stream"]["epoch"], doc["stream"]["sample_in_epoch"]) == divmod(kill_at, 3)[0:1] + (8 * (kill_at % 3),)
    (d / ".state.safetensors.x1.tmp" / "state.safetensors").mkdir(parents=True)  # a write cut short
    out = stage(killed)
    assert not list(d.glob(".*.tmp"))
    assert out.summary["resumed_from"] == kill_at
    a, b = _weights(tmp_path / "a" / "models" / kind), _weights(d)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the exported model files are byte-identical (curve/state files also hold timings)
    from flame_pipeline.files import sha256_tree
    for name in ("model.safetensors", "config.json", "vision"):
        assert sha256_tree(tmp_path / "a" / "models" / kind / name) == sha256_tree(d / name)
    curve_a = pl.read_csv(tmp_path / "a" / "models" / kind / "curve.csv")
    curve_b = pl.read_csv(d / "curve.csv")
    assert curve_a["loss"].to_list() == curve_b["loss"].to_list()
    # a finished run is not redone
    assert stage(killed).summary["resumed_from"] == 6


def test_checkpoint_from_another_config_is_refused(tmp_path, make_data):
    cfg = make_data(tmp_path)
    train(cfg)
    other = profile_at(tmp_path, {"vision.hidden_size": 16})
    with pytest.raises(CheckpointError, match=r"vision\.hidden_size: checkpoint 32, this run 16"):
        train(other)
    # other training data (a sample fewer) is refused too
    make_data(tmp_path / "fewer", n_train=23)
    (tmp_path / "fewer" / "models").symlink_to(tmp_path / "models")
    with pytest.raises(CheckpointError, match=r"data\.samples: checkpoint 24, this run 23"):
        train(profile_at(tmp_path / "fewer"))
    # fields that do not change the computation may differ
    assert train(profile_at(tmp_path, {"train.log_every": 2})).summary["resumed_from"] == 6


def test_train_seed_retrains_on_the_same_data(tmp_path, make_data):
    cfg = make_data(tmp_path)
    train(cfg)
    first = _weights(tmp_path / "models" / "flame")
    # train.seed equal to the profile's seed is the same run: its checkpoint is accepted
    same = profile_at(tmp_path, {"train.seed": cfg.seed})
    assert train(same).summary["resumed_from"] == cfg.train.steps
    other = profile_at(tmp_path, {"train.seed": cfg.seed + 1})
    with pytest.raises(CheckpointError, match=r"seed: checkpoint 0, this run 1"):
        train(other)
    shutil.rmtree(tmp_path / "models" / "flame")
    train(other)
    second = _weights(tmp_path / "models" / "flame")
    assert first.keys() == second.keys()
    assert not all(torch.equal(first[k], second[k]) for k in first)
    shutil.rmtree(tmp_path / "models" / "flame")
    train(cfg)                                     # and the profile's seed gives the first run again
    assert all(torch.equal(first[k], v) for k, v in _weights(tmp_path / "models" / "flame").items())


def test_one_training_run_per_model_dir(tmp_path, make_data):
    import fcntl
    cfg = make_data(tmp_path)
    (tmp_path / "models").mkdir()
    with open(tmp_path / "models" / ".flame.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match="another process is training"):
            train(cfg)
    assert train(cfg).summary["resumed_from"] == 0


def test_embeddings_of_another_llm_or_layer_are_refused(tmp_path, make_data):
    cfg = make_data(tmp_path)
    for change in ({"layer": -3}, {"llm": "smollm2-135m"}):
        other = cfg.model_copy(update={"embed": cfg.embed.model_copy(update=change)})
        with pytest.raises(DataError, match=r"were made with .*re-run the embed stage"):
            train(other)
    assert not Paths.of(cfg).flame_model.exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, make_data):
    cfg = make_data(tmp_path)
    calls = []
    real = flame.sigmoid_loss

    def poisoned(*args):
        calls.append(1)
        loss = real(*args)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(flame, "sigmoid_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 5; stopped without saving\. "
                                               r"Kept: the checkpoint of step 3"):
        train(cfg)
    d = tmp_path / "models" / "flame"
    tensors, doc = read_state(d)
    assert doc["step"] == 3
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))
    assert not (d / "model.safetensors").exists()


def test_flame_learns_the_fixture(tmp_path, make_data):
    cfg = make_data(tmp_path, overrides={"train.steps": 30, "train.lr": 2e-3, "train.warmup_steps": 3,
                                         "train.checkpoint_every": 30})
    train(cfg)
    loss = pl.read_csv(tmp_path / "models" / "flame" / "curve.csv")["loss"].to_list()
    assert sum(loss[-5:]) / 5 < 0.4 * sum(loss[:5]) / 5
    # held-out images land nearest to their own class's stored embeddings
    from flame_pipeline.shards import iter_shards
    from flame_pipeline.vision.preprocess import eval_batch
    model = load_flame(tmp_path / "models" / "flame")
    raw = {r["key"]: r["image"] for r in iter_shards(tmp_path / "raw" / "shards")}
    emb = {r["key"]: torch.from_numpy(r["emb"][0].astype("float32")) for r in iter_shards(tmp_path / "embed" / "shards")}
    test_keys = [f"s{i:03d}" for i in range(24, 28)]
    classes = torch.stack([emb[f"s{c:03d}"] for c in range(4)])        # train samples of class 0..3
    img = model.encode_image(eval_batch([raw[k] for k in test_keys], 32))
    assert (img @ classes.T).argmax(1).tolist() == [24 % 4, 25 % 4, 26 % 4, 27 % 4]


def test_clip_baseline_trains_and_encodes(tmp_path, make_data):
    cfg = make_data(tmp_path)
    out = train_baseline(cfg)
    d = tmp_path / "models" / "clip"
    assert out.rows == {"train_samples": 24}
    assert {"model.safetensors", "config.json", "curve.csv", "loss.png", "state.safetensors",
            "state.json", "vision", "tokenizer"} <= set(os.listdir(d))
    clip = load_clip(d)
    t = clip.encode_text(["a red square.", "a blue square drawn flat."])
    i = clip.encode_image(torch.randn(2, 3, 32, 32))
    assert t.shape == i.shape == (2, cfg.baseline.text_hidden_size)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    from transformers import CLIPModel, CLIPVisionModelWithProjection
    vision = CLIPVisionModelWithProjection.from_pretrained(d / "vision")
    full = CLIPModel.from_pretrained(d)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(vision(pixel_values=x).image_embeds, full.get_image_features(pixel_values=x), atol=1e-6)
    assert full.config.vision_config.hidden_size == cfg.vision.hidden_size
    assert full.config.text_config.max_position_embeddings == 77


def test_clip_tokens_end_with_eot_and_long_captions_are_used_half_the_time(tmp_path, make_data):
    cfg = make_data(tmp_path)
    from flame_pipeline.llm_files import load_tokenizer
    texts = CaptionTexts(cfg, load_tokenizer(cfg.embed))
    eot = texts.eot
    batch = tokenize(texts.tokenizer, ["a red square.", "word " * 200], 77, eot)
    assert batch["input_ids"].shape == (2, 77)
    n0 = int(batch["attention_mask"][0].sum())
    assert batch["input_ids"][0, n0 - 1] == eot and batch["input_ids"][0, n0:].eq(0).all()
    assert batch["input_ids"][1, 76] == eot and batch["attention_mask"][1].all()   # truncated to 76 + EOT
    from flame_pipeline.shards import iter_shards
    rows = list(iter_shards(tmp_path / "curated" / "train_shards"))      # s000 has a long caption, s001 none

    def length(source, i, seed):
        return int(source.texts(i, rows[i], torch.Generator().manual_seed(seed))["attention_mask"].sum())
    short_len = length(texts, 0, 0)
    lens = [length(texts, 0, s) for s in range(400)]
    long_share = sum(n != min(lens) for n in lens) / len(lens)
    assert abs(long_share - LONG_CAPTION_P) < 0.08 and short_len in set(lens)
    assert {length(texts, 1, s) for s in range(20)} == {min(lens)}                    # no long caption
    # a plan without long captions: FLAME never sees them, nor does the baseline
    short_plan = cfg.model_copy(update={"embed": cfg.embed.model_copy(update={"plan": [("caption", "single")]})})
    only_short = CaptionTexts(short_plan, texts.tokenizer)
    assert {length(only_short, 0, s) for s in range(40)} == {min(lens)}


def test_bf16_and_gradient_checkpointing_options_run(tmp_path, make_data):
    base = make_data(tmp_path / "a", overrides={"train.steps": 2})
    train(base)
    ckpt = make_data(tmp_path / "b", overrides={"train.steps": 2, "vision.gradient_checkpointing": True})
    train(ckpt)
    a = pl.read_csv(tmp_path / "a" / "models" / "flame" / "curve.csv")["loss"].to_list()
    b = pl.read_csv(tmp_path / "b" / "models" / "flame" / "curve.csv")["loss"].to_list()
    assert b == pytest.approx(a, rel=1e-5)          # recomputation changes memory, not the maths
    bf16 = make_data(tmp_path / "c", overrides={"train.steps": 2, "train.precision": "bf16"})
    train(bf16)
    c = pl.read_csv(tmp_path / "c" / "models" / "flame" / "curve.csv")["loss"].to_list()
    assert c == pytest.approx(a, rel=0.05) and c != a   # bf16 matmuls: close, not identical


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flame", "clip"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, kind, make_data):
    """torchrun --nproc_per_node 2 (gloo) vs 1 process: same global batch of 8 -> same loss curve
    within 1e-5 relative (only the order of float reductions differs). Seen: 1.3e-7 FLAME, 2.3e-7 CLIP."""
    curves = {}
    command = "train" if kind == "flame" else "train-baseline"
    for n in (1, 2):
        root = tmp_path / f"n{n}"
        make_data(root)
        cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(n),
               "--master_port", str(29500 + n + os.getpid() % 1000), "-m", "flame_pipeline.cli", command,
               "--profile", "tiny", "--params", str(REPO / "params.yaml"), "--set", f"data_dir={root}"]
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert run.returncode == 0, run.stderr[-3000:]
        curves[n] = pl.read_csv(root / "models" / kind / "curve.csv")["loss"].to_list()
        ranks = {k.split(".")[-1] for k in read_state(root / "models" / kind)[0] if k.startswith("rng.cpu.")}
        assert ranks == {str(r) for r in range(n)}                    # every rank's RNG state saved
    assert len(curves[1]) == 6
    print("max relative difference:", max(abs(a - b) / abs(a) for a, b in zip(curves[1], curves[2])))
    assert curves[2] == pytest.approx(curves[1], rel=1e-5)


def test_trimming_padding_leaves_text_features_unchanged(tmp_path, make_data):
    from transformers import CLIPModel
    from flame_pipeline.train.clip import clip_config, trim
    cfg = make_data(tmp_path)
    torch.manual_seed(0)
    model = CLIPModel(clip_config(cfg, eot=999)).eval()

    class Words:                                  # a tokenizer stand-in: one id per word
        def __call__(self, texts, add_special_tokens):
            return {"input_ids": [[len(w) + 3 for w in t.split()] for t in texts]}

    batch = tokenize(Words(), ["a red square", "one two three four five six"], 77, 999)
    short = trim(batch)
    assert short["input_ids"].shape == (2, 7)
    with torch.no_grad():
        full = model.get_text_features(**batch)
        cut = model.get_text_features(**short)
    assert torch.allclose(full, cut, atol=1e-5)


def test_unreadable_checkpoint_and_missing_models_are_clear_errors(tmp_path, make_data):
    cfg = make_data(tmp_path)
    d = tmp_path / "models" / "flame"
    d.mkdir(parents=True)
    (d / "state.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="unreadable checkpoint .*state.safetensors"):
        train(cfg)
    with pytest.raises(CheckpointError, match="no trained FLAME model"):
        load_flame(d)
    with pytest.raises(CheckpointError, match="no trained CLIP model"):
        load_clip(tmp_path / "models" / "clip")


def test_training_from_a_remote_copy_of_the_train_shards_caches_them_and_trains_the_same(tmp_path, make_data):
    """train.remote: streaming copies the shards into stream_cache/ and trains on them as on
    the local ones (a folder stands in for object storage)."""
    local = make_data(tmp_path / "a")
    train(local)
    make_data(tmp_path / "b")
    copy = tmp_path / "bucket" / "train_shards"
    shutil.move(tmp_path / "b" / "curated" / "train_shards", copy)
    train(profile_at(tmp_path / "b", {"train.remote": str(copy)}))
    cached = sorted(p.name for p in (tmp_path / "b" / "stream_cache").iterdir())
    assert cached == sorted(p.name for p in copy.iterdir())
    a, b = _weights(tmp_path / "a" / "models" / "flame"), _weights(tmp_path / "b" / "models" / "flame")
    assert all(torch.equal(a[k], b[k]) for k in a)
