"""Training building blocks: losses against brute force, preprocessing, optimizer groups and
schedule, the step -> batch map, and the positives drawn per step."""
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from flame_pipeline.train.data import DataError, StoredEmbeddings, TrainStream, step_batches
from flame_pipeline.train.loss import info_nce, sigmoid_loss
from flame_pipeline.train.optim import build_optimizer, build_scheduler, lr_factor
from flame_pipeline.vision import preprocess
from flame_pipeline.vision.towers import FlameModel
from profiles import profile_at

# one torch thread, like the child runs they are compared with; restored after each test
pytestmark = pytest.mark.usefixtures("one_thread")


def test_sigmoid_loss_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    b, m, d = 3, 2, 5
    img = torch.randn(b, d, generator=g)
    txt = torch.randn(b, m, d, generator=g)
    scale, bias = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    total = 0.0
    for i in range(b):
        x = img[i] / img[i].norm()
        for j in range(b):
            for k in range(m):
                y = txt[j, k] / txt[j, k].norm()
                logit = 10.0 * float(x @ y) - 10.0
                label = 1.0 if i == j else -1.0
                total += math.log(1.0 + math.exp(-label * logit))
    expected = total / (m * b)
    assert float(sigmoid_loss(img, txt, scale, bias)) == pytest.approx(expected, rel=1e-5)


def test_masked_sigmoid_loss_matches_a_direct_computation():
    """Empty text slots (a sample with fewer valid embeddings than M) are neither positives nor
    negatives, and the sum is divided by the number of real texts: a direct loop over the real
    (image, text) pairs gives the same number, and a sample's repeated text is not counted twice."""
    g = torch.Generator().manual_seed(3)
    b, m, d = 3, 4, 5
    img = torch.randn(b, d, generator=g)
    txt = torch.randn(b, m, d, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    txt[~mask] = 0.0
    t, bias = 7.0, -3.0
    total, texts = 0.0, [(j, k) for j in range(b) for k in range(m) if mask[j, k]]
    for i in range(b):
        x = img[i] / img[i].norm()
        for j, k in texts:
            y = txt[j, k] / txt[j, k].norm()
            label = 1.0 if i == j else -1.0
            total += math.log(1.0 + math.exp(-label * (t * float(x @ y) + bias)))
    expected = total / len(texts)
    got = sigmoid_loss(img, txt, torch.tensor(math.log(t)), torch.tensor(bias), mask)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # the old draw, with replacement, filled the empty slots with repeats: another loss
    repeated = txt.clone()
    repeated[1, 2:], repeated[2, 1:] = txt[1, :2], txt[2, 0]
    assert float(sigmoid_loss(img, repeated, torch.tensor(math.log(t)), torch.tensor(bias))) \
        != pytest.approx(expected, rel=1e-3)


def test_both_losses_clamp_the_logit_scale_at_100():
    g = torch.Generator().manual_seed(4)
    img, txt = torch.randn(4, 6, generator=g), torch.randn(4, 2, 6, generator=g)
    bias = torch.tensor(-5.0)
    at_100 = float(sigmoid_loss(img, txt, torch.tensor(math.log(100.0)), bias))
    assert float(sigmoid_loss(img, txt, torch.tensor(math.log(1000.0)), bias)) == pytest.approx(at_100)
    assert float(sigmoid_loss(img, txt, torch.tensor(math.log(50.0)), bias)) != pytest.approx(at_100)
    scale = torch.tensor(math.log(1000.0), requires_grad=True)   # past the clamp: no gradient
    sigmoid_loss(img, txt, scale, bias).backward()
    assert scale.grad == 0
    assert float(info_nce(img, txt[:, 0], torch.tensor(10.0))) == pytest.approx(
        float(info_nce(img, txt[:, 0], torch.tensor(math.log(100.0)))), rel=1e-6)


def test_info_nce_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    b, d = 4, 6
    img, txt = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    scale = torch.tensor(math.log(1 / 0.07))
    s = 1 / 0.07
    x = [v / v.norm() for v in img]
    y = [v / v.norm() for v in txt]
    i2t = t2i = 0.0
    for i in range(b):
        row = [s * float(x[i] @ y[j]) for j in range(b)]
        col = [s * float(y[i] @ x[j]) for j in range(b)]
        i2t += -row[i] + math.log(sum(math.exp(r) for r in row))
        t2i += -col[i] + math.log(sum(math.exp(c) for c in col))
    expected = (i2t / b + t2i / b) / 2
    assert float(info_nce(img, txt, scale)) == pytest.approx(expected, rel=1e-5)


def _png(w, h, colour=(128, 128, 128)):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_crop_box_area_ratio_and_determinism():
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        l, t, r, b = preprocess.crop_box(40, 30, (0.9, 1.0), g)
        assert 0 <= l < r <= 40 and 0 <= t < b <= 30
        area = (r - l) * (b - t) / (40 * 30)
        assert 0.85 <= area <= 1.0    # 0.9-1.0 up to rounding, or the centred fallback
    a = preprocess.crop_box(64, 64, (0.9, 1.0), torch.Generator().manual_seed(3))
    assert a == preprocess.crop_box(64, 64, (0.9, 1.0), torch.Generator().manual_seed(3))
    # a very wide image cannot fit the ratio range: the fallback is the centred 4/3 box
    assert preprocess.crop_box(400, 10, (0.9, 1.0), torch.Generator().manual_seed(0)) == (193, 0, 206, 10)


def test_pixels_normalised_with_reference_stats():
    x = preprocess.eval_pixels(_png(50, 30, (255, 0, 128)), 16)
    assert x.shape == (3, 16, 16)
    expected = [(1.0 - preprocess.MEAN[0]) / preprocess.STD[0], (0.0 - preprocess.MEAN[1]) / preprocess.STD[1],
                (128 / 255 - preprocess.MEAN[2]) / preprocess.STD[2]]
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-4)
    # the training view leaves the workers as uint8 and is normalised on the device: the same
    # values for an image of one colour
    y = preprocess.train_pixels(_png(50, 30, (255, 0, 128)), 16, (0.9, 1.0), torch.Generator().manual_seed(0))
    assert y.shape == (3, 16, 16) and y.dtype == torch.uint8
    assert y.flatten(1).unique(dim=1).tolist() == [[255], [0], [128]]
    assert torch.allclose(preprocess.normalise(y[None]).mean(dim=(0, 2, 3)), torch.tensor(expected), atol=1e-6)
    with pytest.raises(ValueError, match="undecodable image"):
        preprocess.eval_pixels(b"not a png", 16)


def test_eval_centre_crop_keeps_the_middle():
    im = Image.new("RGB", (60, 20), (0, 0, 0))
    im.paste((255, 255, 255), (20, 0, 40, 20))   # white middle third
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    x = preprocess.eval_pixels(buf.getvalue(), 20)
    white = (1.0 - preprocess.MEAN[0]) / preprocess.STD[0]
    assert torch.allclose(x[0], torch.full((20, 20), white), atol=1e-3)


def test_no_weight_decay_on_biases_norms_and_logit_params(tmp_path, make_data):
    cfg = make_data(tmp_path)
    model = FlameModel(cfg.vision, 64)
    opt = build_optimizer(model, cfg.train)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == cfg.train.weight_decay and no_decay["weight_decay"] == 0.0
    nd = {names[id(p)] for p in no_decay["params"]}
    assert {"logit_scale", "logit_bias", "projector.3.weight", "projector.0.bias"} <= nd
    assert all(p.ndim >= 2 for p in decay["params"])
    assert "projector.0.weight" in {names[id(p)] for p in decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert opt.defaults["betas"] == cfg.train.betas and opt.defaults["eps"] == cfg.train.eps
    assert opt.defaults["fused"] is True                      # CPU here: the fused kernel


def test_warmup_then_cosine():
    assert [lr_factor(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(8, 4, 12) == pytest.approx(0.5)
    assert lr_factor(12, 4, 12) == pytest.approx(0.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    from flame_pipeline.config import TrainConfig
    sched = build_scheduler(opt, TrainConfig(steps=12, warmup_steps=4, lr=2.0))
    lrs = []
    for _ in range(12):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:4] == [0.5, 1.0, 1.5, 2.0] and lrs[8] == pytest.approx(1.0)


def test_step_batches_resume_mid_epoch_where_a_straight_run_is(tmp_path, make_data):
    """24 samples, batch 8: 3 steps an epoch; from the state after step 4 (one batch into the
    second epoch) steps 5, 6 are the straight run's, and an epoch shows every sample once."""
    cfg = make_data(tmp_path, overrides={"train.batch_size": 8})
    data = TrainStream(cfg, StoredEmbeddings(cfg), 8)
    straight = list(step_batches(data, 8, 0, 6, 0, False))
    assert [s for s, _, _ in straight] == [1, 2, 3, 4, 5, 6]
    assert [(st["epoch"], st["sample_in_epoch"]) for _, _, st in straight] == \
        [(0, 8), (0, 16), (1, 0), (1, 8), (1, 16), (2, 0)]
    resumed = list(step_batches(data, 8, 4, 6, 0, False, resume=straight[3][2]))
    assert [s for s, _, _ in resumed] == [5, 6]
    for (_, a, _), (_, b, _) in zip(straight[4:], resumed):
        assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["texts"], b["texts"])
    first_epoch = torch.cat([b["pixels"] for _, b, _ in straight[:3]])
    assert len({tuple(p.flatten()[:64].tolist()) for p in first_epoch}) == 24     # no sample twice
    with pytest.raises(DataError, match="only 24 train samples, fewer than train.batch_size 32"):
        next(step_batches(data, 32, 0, 1, 0, False))


def test_positives_drawn_from_valid_embeddings(tmp_path, make_data):
    cfg = make_data(tmp_path, overrides={"train.positives": 6})
    texts = StoredEmbeddings(cfg)
    row = texts.shards.get_item(int(texts.rows[0]))          # s000, a long caption: 11 valid
    got = texts.texts(0, {"key": "s000"}, torch.Generator().manual_seed(0))["texts"]
    matches = [int(np.argmin(np.abs(row["emb"].astype(np.float32) - e.numpy()).sum(1))) for e in got]
    assert got.shape == (6, 64) and len(set(matches)) == 6
    row = texts.shards.get_item(int(texts.rows[1]))          # s001, no long caption: 4 valid
    for seed in range(5):   # each of the 4 once (no repeat), then 2 empty slots
        item = texts.texts(1, {"key": "s001"}, torch.Generator().manual_seed(seed))
        got, mask = item["texts"], item["text_mask"]
        assert got.shape == (6, 64) and mask.tolist() == [True] * 4 + [False] * 2
        matches = [int(np.argmin(np.abs(row["emb"].astype(np.float32) - e.numpy()).sum(1)))
                   for e in got[:4]]
        assert sorted(matches) == [0, 1, 2, 3] and not got[4:].any()
    with pytest.raises(DataError, match="train sample 1 is 's000' in the train shards but 's001'"):
        texts.texts(1, {"key": "s000"}, torch.Generator())


def test_paper_profile_builds_vit_b16_towers():
    """The paper profile's towers, built on the meta device (shapes only, no memory)."""
    from transformers import CLIPModel
    from flame_pipeline.train.clip import clip_config
    cfg = profile_at("data/paper", profile="paper")
    with torch.device("meta"):
        flame = FlameModel(cfg.vision, 5120)             # Mistral-Nemo's hidden size
        clip = CLIPModel(clip_config(cfg, eot=131072))
    vit = sum(p.numel() for p in flame.vit.parameters())
    assert 85_000_000 < vit < 87_000_000                 # ViT-B/16 at 224 px without a pooler
    assert flame.grid == 14 and flame.vit.is_gradient_checkpointing
    proj = sum(p.numel() for p in flame.projector.parameters())
    assert proj == 768 * 5120 + 5120 + 5120 * 5120 + 5120 + 2 * 5120
    assert sum(p.numel() for p in clip.vision_model.parameters()) == pytest.approx(vit, rel=0.01)
    assert clip.config.text_config.max_position_embeddings == 77


def test_projector_hidden_width_is_at_least_projector_min_width():
    """d_llm by default; max(d_llm, 4096) under reference_compat, as the reference code builds it."""
    def widths(overrides: dict) -> list[tuple[int, int]]:
        model = FlameModel(profile_at("data/tiny", overrides).vision, 64)
        return [tuple(m.weight.shape) for m in model.projector if isinstance(m, torch.nn.Linear)]
    assert widths({}) == [(64, 32), (64, 64)]
    assert widths({"reference_compat": True}) == [(4096, 32), (64, 4096)]
    assert widths({"vision.projector_min_width": 16}) == [(64, 32), (64, 64)]


def test_pool_restricts_the_drawn_embeddings(tmp_path, make_data):
    cfg = make_data(tmp_path, overrides={"train.pool": ["long", "single"]})
    texts = StoredEmbeddings(cfg)
    assert texts.texts(1, {"key": "s001"}, torch.Generator())["text_mask"].sum() == 1   # its "single"
    with pytest.raises(DataError, match=r"12 train samples have no stored embedding in train.pool "
                                        r"\['long'\] \(e.g. \['s001', 's003', 's005'\]\)"):
        StoredEmbeddings(profile_at(tmp_path, {"train.pool": ["long"]}))
    row = texts.shards.get_item(int(texts.rows[0]))
    for seed in range(5):
        got = texts.texts(0, {"key": "s000"}, torch.Generator().manual_seed(seed))["texts"]
        picked = {int(np.argmin(np.abs(row["emb"].astype(np.float32) - e.numpy()).sum(1))) for e in got}
        assert picked <= {0, 4, 5, 6, 7, 8, 9, 10}
    with pytest.raises(ValueError, match=r"train.pool entries \['medium'\] name no stored embedding"):
        StoredEmbeddings(profile_at(tmp_path, {"train.pool": ["medium"]}))


def test_sigmoid_logit_scale_and_bias_start_from_the_train_config(tmp_path, make_data):
    from flame_pipeline.train.flame import flame_recipe

    paper = flame_recipe(make_data(tmp_path / "a")).model
    assert math.isclose(paper.logit_scale.exp().item(), 10.0, rel_tol=1e-6)
    assert paper.logit_bias.item() == -10.0
    cfg = make_data(tmp_path / "b", overrides={"train.logit_scale_init": 20.0,
                                               "train.logit_bias_init": -8.0})
    model = flame_recipe(cfg).model
    assert math.isclose(model.logit_scale.exp().item(), 20.0, rel_tol=1e-6)
    assert model.logit_bias.item() == -8.0
