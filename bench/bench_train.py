"""Training speed on the ``default`` profile's sizes, with synthetic data of those sizes.

    .venv/bin/python bench/bench_train.py [--steps 8] [--online-steps 2] [--threads 2]

1. Throughput (images/s, median over steps after the first) of the train stage (FLAME) and
   the train_baseline stage (CLIP), each run for real through ``loop.run`` on a fixture
   data_dir (64 px PNGs streamed from its train shards, the default LLM's hidden size, 11
   stored embeddings per sample).
2. The FLAME vision step (forward + backward + AdamW on one batch, data already in memory):
   FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``, achieved FLOP/s, and that
   as a fraction of this machine's matmul peak measured in the same run (fp32 2048^3 matmul,
   timed alternately with the step; the best of each, since the cores are shared).
3. The offline-embedding design vs a loop that runs the frozen LLM (``embed.llm`` through
   ``text.llm.load_llm``, all facets of the plan in one pass per prompt set with
   ``text.facets.facet_embeddings``) on each batch's captions: step-time ratio. Both loops
   load the same images the same way and take the same optimizer step.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from profiles import profile_at  # noqa: E402
from train_data import write_training_data  # noqa: E402
from flame_pipeline.paths import Paths  # noqa: E402
from flame_pipeline.text.llm import hidden_size  # noqa: E402
from flame_pipeline.train import flame  # noqa: E402
from flame_pipeline.train.clip import train_baseline  # noqa: E402
from flame_pipeline.train.data import StoredEmbeddings, TrainStream, step_batches, train_keys  # noqa: E402
from flame_pipeline.train.loss import sigmoid_loss  # noqa: E402
from flame_pipeline.train.optim import build_optimizer  # noqa: E402
from flame_pipeline.vision.preprocess import normalise  # noqa: E402
from flame_pipeline.vision.towers import FlameModel  # noqa: E402


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def stage_throughput(cfg, stage) -> float:
    out = stage(cfg)
    kind = out.artifacts["model"].name
    curve = pl.read_csv(Paths.of(cfg).models / kind / "curve.csv")
    return statistics.median(curve["images_per_s"].to_list()[1:])


def vision_step(cfg, data: TrainStream, rounds: int) -> tuple[float, float, float]:
    """(FLOPs of one FLAME training step, best seconds per step, best matmul FLOP/s) on one
    in-memory batch; step and matmul timings alternate so both see the same machine load."""
    torch.manual_seed(0)
    model = FlameModel(cfg.vision, data.text_source.dim)
    opt = build_optimizer(model, cfg.train)
    batch = next(step_batches(data, cfg.train.batch_size, 0, 1, 0, False))[1]
    pixels = normalise(batch["pixels"])

    def step():
        loss = sigmoid_loss(model(pixels), batch["texts"], model.logit_scale, model.logit_bias,
                            batch["text_mask"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    with FlopCounterMode(display=False) as counter:
        step()
    times, peaks = [], []
    for _ in range(rounds):
        times.append(_timed(step))
        peaks.append(matmul_peak(repeats=3))
    return counter.get_total_flops(), min(times), max(peaks)


def loop_step_times(cfg, data: TrainStream, steps: int, online) -> list[float]:
    """Seconds per step of a FLAME training loop; ``online`` is None (stored embeddings) or a
    function keys -> texts [B, M, d] that runs the LLM."""
    torch.manual_seed(0)
    model = FlameModel(cfg.vision, data.text_source.dim)
    opt = build_optimizer(model, cfg.train)
    times, keys = [], train_keys(Paths.of(cfg))
    t0 = time.perf_counter()           # a step's time includes loading its batch
    for _, batch, _ in step_batches(data, cfg.train.batch_size, 0, steps, 0, False):
        texts = batch["texts"] if online is None else online([keys[i] for i in batch["sample"]])
        loss = sigmoid_loss(model(normalise(batch["pixels"])), texts, model.logit_scale,
                            model.logit_bias)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    return times

def llm_texts(cfg):
    """keys -> [B, M, d]: the plan's facet embeddings computed by the frozen LLM now."""
    from flame_pipeline.text.embed import plan_fields
    from flame_pipeline.text.facets import facet_embeddings
    from flame_pipeline.text.llm import load_llm
    from flame_pipeline.text.prompts import PromptBuilder, prepare_caption

    llm, tokenizer = load_llm(cfg.embed)
    builder = PromptBuilder(tokenizer, cfg.embed.prompt_sets, cfg.embed.max_tokens)
    table = {r["key"]: r for r in pl.read_parquet(Paths.of(cfg).captions).iter_rows(named=True)}
    m = cfg.train.positives

    def text(key: str, entry: tuple) -> str | None:   # the entry's field, else its fallback
        return next((table[key][f] for f in plan_fields(entry) if table[key][f] is not None), None)

    def texts(keys: list[str]) -> torch.Tensor:
        per_key: list[list[torch.Tensor]] = [[] for _ in keys]
        for entry in cfg.embed.plan:
            idx = [i for i, k in enumerate(keys) if text(k, entry) is not None]
            rows = [builder.build(prepare_caption(text(keys[i], entry)), entry[1]) for i in idx]
            for i, emb in zip(idx, facet_embeddings(llm, rows, cfg.embed.layer, cfg.embed.positions)):
                per_key[i].extend(emb)
        return torch.stack([torch.stack(v)[torch.randperm(len(v))[:m]] if len(v) >= m
                            else torch.stack(v)[torch.randint(len(v), (m,))] for v in per_key])

    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="training steps per throughput run")
    ap.add_argument("--online-steps", type=int, default=2, help="steps of the offline/online loops (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        probe = profile_at(tmp, profile="default")
        dim = hidden_size(probe.embed)
        over = {"train.steps": args.steps, "train.warmup_steps": 2, "train.checkpoint_every": 10_000,
                "train.log_every": 1}
        cfg = profile_at(tmp, over, profile="default")
        write_training_data(cfg, n_train=2 * probe.train.batch_size, n_test=8, dim=dim, classes=8,
                            image_size=probe.vision.image_size)
        b = cfg.train.batch_size
        print(f"profile default: vision {cfg.vision.hidden_size}x{cfg.vision.layers} @ "
              f"{cfg.vision.image_size}px/{cfg.vision.patch_size}, batch {b}, d_llm {dim} "
              f"({cfg.embed.llm}), {args.threads} threads")
        flame_ips = stage_throughput(cfg, flame.train)
        clip_ips = stage_throughput(cfg, train_baseline)
        print(f"train throughput: FLAME {flame_ips:.1f} images/s, CLIP {clip_ips:.1f} images/s "
              f"(FLAME/CLIP = {flame_ips / clip_ips:.2f}x)")

        data = TrainStream(cfg, StoredEmbeddings(cfg), cfg.train.batch_size)
        flops, seconds, peak = vision_step(cfg, data, rounds=3)
        print(f"FLAME vision step: {flops / 1e9:.1f} GFLOP per step of {b} images, {seconds:.3f} s "
              f"-> {flops / seconds / 1e9:.1f} GFLOP/s = {flops / seconds / peak:.1%} of the matmul "
              f"peak ({peak / 1e9:.1f} GFLOP/s, best of rounds alternating with the step)")

        if args.online_steps == 0:
            return
        offline = loop_step_times(cfg, data, args.online_steps, None)
        online = loop_step_times(cfg, data, args.online_steps, llm_texts(cfg))
        off, on = statistics.median(offline), statistics.median(online)
        print(f"step time: offline embeddings {off:.2f} s, frozen LLM run per batch {on:.2f} s "
              f"-> online/offline = {on / off:.1f}x")


if __name__ == "__main__":
    main()
