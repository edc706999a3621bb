"""The training loop both models share.

A ``Recipe`` says what differs between FLAME (``flame.py``) and the CLIP baseline (``clip.py``):
model, texts, loss, export, the config fields a checkpoint must match; ``run`` does the rest
the same way for both:
torch.distributed when launched by torchrun (gloo on CPU, NCCL on GPU; DDP averages gradients),
bf16 autocast where supported, AdamW + warm-up/cosine, a checkpoint every
``train.checkpoint_every`` steps, resume from the last one, a NaN guard that stops before a bad
state can be saved, and the curve files.
"""
from __future__ import annotations

import contextlib
import math
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import polars as pl
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from flame_pipeline.config import Profile
from flame_pipeline.distributed import process_group, world
from flame_pipeline.files import write_parquet
from flame_pipeline.paths import Paths
from flame_pipeline.stage import StageOutput, stage_lock
from flame_pipeline.train import checkpoint as ckpt
from flame_pipeline.train.curve import write_curve
from flame_pipeline.train.data import StepBatches, TrainSamples
from flame_pipeline.train.optim import build_optimizer, build_scheduler

# train fields that do not change the computation, so a checkpoint may differ in them
NOT_IDENTITY = {"train": {"checkpoint_every", "log_every", "num_workers", "seed"},
                "vision": {"gradient_checkpointing"}}


class TrainingDiverged(RuntimeError):
    """The loss or the weights became non-finite; the last good checkpoint is kept."""


@dataclass
class Recipe:
    kind: str                                             # "flame" or "clip": the model dir name
    paths: Paths
    model: nn.Module
    data: TrainSamples
    loss: Callable[[nn.Module, nn.Module, dict], torch.Tensor]  # (wrapped, bare model, batch)
    identity: dict                                        # config a checkpoint must match (+ data)
    export: Callable[[nn.Module, Path], None]             # writes the finished model files

    @property
    def out_dir(self) -> Path:
        return self.paths.model(self.kind)


def identity_of(cfg: Profile, **extra) -> dict:
    """The config fields a run's weights depend on (checkpoint compatibility)."""
    def section(name: str) -> dict:
        dump = getattr(cfg, name).model_dump(mode="json")
        return {k: v for k, v in dump.items() if k not in NOT_IDENTITY.get(name, set())}
    return {"seed": cfg.train_seed, "vision": section("vision"), "train": section("train"), **extra}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 when asked, or on ``auto`` when the device is a GPU that supports it; else None (fp32)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if precision == "bf16" else None


def _rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """Every rank's RNG states, as ``{"cpu.<rank>": ..., "cuda.<rank>": ...}``."""
    local = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        local["cuda"] = torch.cuda.get_rng_state(device)
    _, size = world()
    out = {}
    for name, state in local.items():
        parts = [state]
        if size > 1:
            wire = state.to(device)
            parts = [torch.empty_like(wire) for _ in range(size)]
            dist.all_gather(parts, wire)
        out.update({f"{name}.{r}": p.cpu() for r, p in enumerate(parts)})
    return out


def _restore_rng(rng: dict[str, torch.Tensor], device: torch.device) -> None:
    rank, _ = world()
    if f"cpu.{rank}" in rng:
        torch.set_rng_state(rng[f"cpu.{rank}"])
    if device.type == "cuda" and f"cuda.{rank}" in rng:
        torch.cuda.set_rng_state(rng[f"cuda.{rank}"], device)


def _mean_over_ranks(value: torch.Tensor) -> float:
    value = value.detach().float().clone()
    if world()[1] > 1:
        dist.all_reduce(value)
        value /= world()[1]
    return float(value)


@contextlib.contextmanager
def training_lock(recipe: Recipe, rank: int) -> Iterator[None]:
    """One training run per model dir at a time (rank 0 holds its lock, ``stage.stage_lock``);
    temporary files a killed run left in the dir are removed."""
    if rank != 0:
        yield
        return
    out_dir, lock_path = recipe.out_dir, recipe.paths.model_lock(recipe.kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    with stage_lock(lock_path, f"another process is training {out_dir} (it holds {lock_path})"):
        for stale in out_dir.glob(".*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        yield


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _diverged(recipe: Recipe, what: str, last_good: int | None) -> TrainingDiverged:
    kept = f"the checkpoint of step {last_good}" if last_good else "no checkpoint yet"
    return TrainingDiverged(f"{recipe.kind}: {what}; stopped without saving. Kept: {kept} in "
                            f"{recipe.out_dir}")


def _finish(recipe: Recipe, model: nn.Module, curve: list[dict]) -> None:
    """The finished model's files (rank 0): weights, curve, plot, skipped samples."""
    recipe.export(model, recipe.out_dir)
    paths, kind = recipe.paths, recipe.kind
    write_curve(paths.curve(kind), paths.loss_plot(kind), curve, f"{kind} training loss")
    write_parquet(paths.skipped(kind),
                  pl.DataFrame(recipe.data.skipped, schema=["key", "reason"], orient="row"))


def _summary(recipe: Recipe, cfg: Profile, start: int, curve: list[dict], size: int) -> StageOutput:
    speeds = sorted(c["images_per_s"] for c in curve[1:]) or [c["images_per_s"] for c in curve]
    speed = speeds[len(speeds) // 2] if speeds else float("nan")
    final = curve[-1]["loss"] if curve else float("nan")
    reasons = Counter(re.split(r" \(|:", reason)[0] for _, reason in recipe.data.skipped)
    return StageOutput(
        artifacts={"model": recipe.out_dir},
        rows={"train_samples": len(recipe.data), "skipped": len(recipe.data.skipped)},
        summary={"steps": cfg.train.steps, "resumed_from": start, "final_loss": final,
                 "images_per_s": speed, "skipped_reasons": dict(reasons), "world_size": size},
        metrics=[(recipe.kind, "train", "final_loss", final),
                 (recipe.kind, "train", "images_per_s", speed)])


def _train(cfg: Profile, recipe: Recipe, device: torch.device) -> tuple[int, list[dict]]:
    """Resume from the checkpoint if any, train to ``train.steps``; (start step, curve)."""
    t = cfg.train
    rank, size = world()
    model = recipe.model.to(device)
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t)
    identity = dict(recipe.identity, data=recipe.data.fingerprint())
    restored = ckpt.restore_state(recipe.out_dir, model, optimizer, scheduler, identity)
    start, curve, last_good = 0, [], None
    if restored is not None:
        doc, rng = restored
        start, curve, last_good = doc["step"], doc["curve"], doc["step"]
        _restore_rng(rng, device)
    wrapped = model
    if size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    dtype = autocast_dtype(t.precision, device)
    batches = StepBatches(len(recipe.data), t.batch_size, cfg.train_seed, start, t.steps, rank, size)
    loader = DataLoader(recipe.data, batch_sampler=batches, num_workers=t.num_workers,
                        pin_memory=device.type == "cuda")
    model.train()
    clock = time.perf_counter()
    for done, batch in enumerate(loader, start=start + 1):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = recipe.loss(wrapped, model, batch)
        value = _mean_over_ranks(loss)
        if not math.isfinite(value):
            raise _diverged(recipe, f"loss is {value} at step {done}", last_good)
        lr = scheduler.get_last_lr()[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if done % t.log_every == 0 or done == t.steps:
            curve.append({"step": done, "loss": value, "lr": lr,
                          "images_per_s": t.batch_size / max(time.perf_counter() - clock, 1e-9)})
        if done % t.checkpoint_every == 0 or done == t.steps:
            if not _all_finite(model):
                raise _diverged(recipe, f"weights became non-finite by step {done}", last_good)
            rng = _rng_states(device)
            if rank == 0:
                ckpt.save_state(recipe.out_dir, model, optimizer, scheduler,
                                {"step": done, "identity": identity, "curve": curve}, rng)
            if size > 1:
                dist.barrier()
            last_good = done
        clock = time.perf_counter()
    return start, curve


def run(cfg: Profile, build: Callable[[Profile], Recipe]) -> StageOutput:
    """Train the recipe ``build(cfg)`` to ``cfg.train.steps``, resuming from its checkpoint."""
    with process_group() as device:
        rank, size = world()
        torch.manual_seed(cfg.train_seed)
        recipe = build(cfg)
        with training_lock(recipe, rank):
            start, curve = _train(cfg, recipe, device)
            if rank == 0:
                _finish(recipe, recipe.model, curve)
            if size > 1:
                dist.barrier()
    return _summary(recipe, cfg, start, curve, size)
