"""The training loop both models share.

A ``Recipe`` says what differs between FLAME (``flame.py``) and the CLIP baseline (``clip.py``):
model, texts, features, loss, export, the config fields a checkpoint must match; ``run`` does
the rest the same way for both:
torch.distributed when launched by torchrun (gloo on CPU, NCCL on GPU; DDP averages gradients),
mixed precision (``train.precision``: bf16 autocast, or fp16 autocast with a gradient scaler on
GPUs without bf16), gradient accumulation (``train.grad_accum_steps``) and clipping
(``train.grad_clip_norm``), AdamW + warm-up/cosine, a checkpoint every
``train.checkpoint_every`` steps (the last ``train.keep_checkpoints`` kept, each with the data
stream's state), resume from the latest (mid-epoch, exactly: ``train/data.py``), a NaN guard
that stops before a bad state can be saved, the curve files, a progress bar and TensorBoard
scalars.

Gradient accumulation splits each step's batch into micro-batches and still optimises the whole
batch's loss, as open_clip's ``accum_freq`` does: the contrastive losses couple every sample
with every other, so the mean of the micro-batches' own losses would be another loss. First the
features of every micro-batch are computed without gradients; then, one micro-batch at a time,
its features are recomputed with gradients and put among the others, the whole batch's loss is
computed and back-propagated: each pass gives the gradient through its micro-batch's features,
and their sum is the whole batch's gradient. The loss's own parameters (logit scale and bias)
take part with gradients in one pass only, the last (open_clip counts their gradient in every
pass, ``grad_accum_steps`` times over). Under DDP the passes before the last skip the gradient
all-reduce (``no_sync``).
"""
from __future__ import annotations

import contextlib
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

from flame_pipeline.config import Profile
from flame_pipeline.distributed import process_group, world
from flame_pipeline.paths import Paths
from flame_pipeline.progress import progress
from flame_pipeline.stage import StageOutput, stage_lock
from flame_pipeline.train import checkpoint as ckpt
from flame_pipeline.train.curve import write_curve
from flame_pipeline.train.data import TrainStream, step_batches
from flame_pipeline.train.optim import build_optimizer, build_scheduler
from flame_pipeline.vision.preprocess import normalise

Tensors = dict[str, torch.Tensor]

# train fields that do not change the computation (beyond the order of float sums), so a
# checkpoint may differ in them
NOT_IDENTITY = {"train": {"checkpoint_every", "log_every", "num_workers", "seed", "remote",
                          "grad_accum_steps", "keep_checkpoints", "eval_every", "eval_rows"},
                "vision": {"gradient_checkpointing"}}


class TrainingDiverged(RuntimeError):
    """The loss or the weights became non-finite; the last good checkpoint is kept."""


@dataclass
class Recipe:
    kind: str                                             # "flame" or "clip": the model dir name
    paths: Paths
    model: nn.Module
    data: TrainStream
    # (wrapped model, batch) -> per-sample features [n, ...] that the loss couples, e.g. images, texts
    features: Callable[[nn.Module, dict], Tensors]
    head: Callable[[nn.Module], Tensors]                  # bare model -> the loss's own parameters
    loss: Callable[[Tensors, Tensors], torch.Tensor]      # (features of the batch, head) -> loss
    identity: dict                                        # config a checkpoint must match (+ data)
    export: Callable[[nn.Module, Path], None]             # writes the finished model files
    # bare model -> the retrieval check's figures (check.py), with train.eval_every > 0
    check: Callable[[nn.Module], dict[str, float]] | None = None

    @property
    def out_dir(self) -> Path:
        return self.paths.model(self.kind)


def identity_of(cfg: Profile, **extra) -> dict:
    """The config fields a run's weights depend on (checkpoint compatibility)."""
    def section(name: str) -> dict:
        dump = getattr(cfg, name).model_dump(mode="json")
        return {k: v for k, v in dump.items() if k not in NOT_IDENTITY.get(name, set())}
    return {"seed": cfg.train_seed, "vision": section("vision"), "train": section("train"), **extra}


@dataclass(frozen=True)
class Precision:
    """How a step computes: autocast to ``dtype`` (None: fp32), and a gradient scaler for fp16."""
    device: torch.device
    dtype: torch.dtype | None

    @classmethod
    def of(cls, precision: str, device: torch.device) -> "Precision":
        """``auto``: bf16 on a GPU that supports it, fp16 on a GPU that does not, fp32 on the CPU;
        ``bf16``, ``fp16`` (with a gradient scaler), ``fp32``: as named, on any device."""
        if precision == "auto" and device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return cls(device, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision))

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                              enabled=self.dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        """fp16 gradients underflow without loss scaling; the scaler is a no-op otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


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


def _split(batch: Tensors, parts: int) -> list[Tensors]:
    """``batch`` cut into ``parts`` micro-batches along the sample dimension, in order."""
    pieces = {k: v.tensor_split(parts) for k, v in batch.items()}
    return [{k: p[i] for k, p in pieces.items()} for i in range(parts)]


def backward(recipe: Recipe, wrapped: nn.Module, model: nn.Module, batch: Tensors, accum: int,
             precision: Precision, scaler: torch.amp.GradScaler) -> torch.Tensor:
    """Back-propagate the loss of ``batch`` in ``accum`` micro-batches (module doc: the sum of
    the passes' gradients is the whole batch's); returns the loss, detached."""
    if accum == 1:
        with precision.autocast():
            loss = recipe.loss(recipe.features(wrapped, batch), recipe.head(model))
        scaler.scale(loss).backward()
        return loss.detach()
    micro = _split(batch, accum)
    with torch.no_grad(), precision.autocast():
        cached = [recipe.features(wrapped, m) for m in micro]
    head = recipe.head(model)
    for j, m in enumerate(micro):
        last = j == accum - 1
        quiet = wrapped.no_sync() if isinstance(wrapped, DistributedDataParallel) and not last \
            else contextlib.nullcontext()
        with quiet:
            with precision.autocast():
                fresh = recipe.features(wrapped, m)
                feats = {k: torch.cat([c[k] for c in cached[:j]] + [v] + [c[k] for c in cached[j + 1:]])
                         for k, v in fresh.items()}
                loss = recipe.loss(feats, head if last else {k: v.detach() for k, v in head.items()})
            scaler.scale(loss).backward()
    return loss.detach()


def _diverged(recipe: Recipe, what: str, last_good: int | None) -> TrainingDiverged:
    kept = f"the checkpoint of step {last_good}" if last_good else "no checkpoint yet"
    return TrainingDiverged(f"{recipe.kind}: {what}; stopped without saving. Kept: {kept} in "
                            f"{recipe.out_dir}")


def _finish(recipe: Recipe, model: nn.Module, curve: list[dict]) -> None:
    """The finished model's files (rank 0): weights, curve, plot."""
    recipe.export(model, recipe.out_dir)
    paths, kind = recipe.paths, recipe.kind
    write_curve(paths.curve(kind), paths.loss_plot(kind), curve, f"{kind} training loss")


def _summary(recipe: Recipe, cfg: Profile, start: int, curve: list[dict], size: int) -> StageOutput:
    speeds = sorted(c["images_per_s"] for c in curve[1:]) or [c["images_per_s"] for c in curve]
    speed = speeds[len(speeds) // 2] if speeds else float("nan")
    final = curve[-1]["loss"] if curve else float("nan")
    return StageOutput(
        artifacts={"model": recipe.out_dir},
        rows={"train_samples": int(recipe.data.size)},
        summary={"steps": cfg.train.steps, "resumed_from": start, "final_loss": final,
                 "images_per_s": speed, "world_size": size},
        metrics=[(recipe.kind, "train", "final_loss", final),
                 (recipe.kind, "train", "images_per_s", speed)])


@contextlib.contextmanager
def _events(recipe: Recipe, start: int, rank: int) -> Iterator[SummaryWriter | None]:
    """Rank 0's TensorBoard writer under ``Paths.tensorboard(kind)``: a run from step 0 starts
    the folder anew; a resumed one hides (``purge_step``) what a killed run logged after its
    checkpoint. None on other ranks."""
    if rank != 0:
        yield None
        return
    folder = recipe.paths.tensorboard(recipe.kind)
    if start == 0:
        shutil.rmtree(folder, ignore_errors=True)
    with SummaryWriter(str(folder), purge_step=start + 1 if start else None) as writer:
        yield writer


def _log(writer: SummaryWriter | None, step: int, point: dict, head: Tensors,
         extra: dict[str, float]) -> None:
    """One curve point and the loss's parameters as TensorBoard scalars ``train/*`` (the
    retrieval check's under their own ``eval_<split>/*``); the logit scale as the factor it
    multiplies the cosines by (exp of the stored log)."""
    if writer is None:
        return
    scalars = {k: v for k, v in point.items() if k != "step"}
    scalars.update({k: float(v.detach().exp() if k == "logit_scale" else v.detach())
                    for k, v in head.items()})
    for name, value in {**scalars, **extra}.items():
        writer.add_scalar(name if "/" in name else f"train/{name}", value, step)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
          clip_norm: float | None) -> dict[str, float]:
    """The optimizer step on the gradients ``backward`` left: unscaled and clipped to
    ``clip_norm`` when set, skipped by the scaler when fp16 gradients overflowed (it then halves
    its scale), then the schedule's step. Returns the norm before clipping and the loss scale,
    for TensorBoard, when they apply."""
    figures = {}
    if clip_norm is not None:
        scaler.unscale_(optimizer)
        figures["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(), clip_norm))
    if scaler.is_enabled():
        figures["loss_scale"] = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return figures


def _train(cfg: Profile, recipe: Recipe, device: torch.device) -> tuple[int, list[dict]]:
    """Resume from the checkpoint if any, train to ``train.steps``; (start step, curve)."""
    t = cfg.train
    rank, size = world()
    if t.batch_size // size < t.grad_accum_steps:
        raise ValueError(f"train.grad_accum_steps {t.grad_accum_steps} is more than the "
                         f"{t.batch_size // size} samples per process of a step")
    model = recipe.model.to(device)
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t)
    precision = Precision.of(t.precision, device)
    scaler = precision.scaler()
    identity = dict(recipe.identity, data=recipe.data.fingerprint())
    restored = ckpt.restore_state(recipe.out_dir, model, optimizer, scheduler, identity)
    start, curve, last_good, resume = 0, [], None, None
    if restored is not None:
        doc, rng = restored
        start, curve, last_good, resume = doc["step"], doc["curve"], doc["step"], doc["stream"]
        _restore_rng(rng, device)
        if scaler.is_enabled() and "scaler" in doc:
            scaler.load_state_dict(doc["scaler"])
    if start >= t.steps:
        return start, curve
    wrapped = model
    if size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    batches = step_batches(recipe.data, t.batch_size, start, t.steps, t.num_workers,
                           device.type == "cuda", resume)
    model.train()
    clock = time.perf_counter()
    with _events(recipe, start, rank) as writer, \
            progress(t.steps, f"train {recipe.kind}", "step", initial=start, enabled=rank == 0) as bar:
        for done, batch, stream in batches:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            batch["pixels"] = normalise(batch["pixels"])      # uint8 from the workers
            optimizer.zero_grad(set_to_none=True)
            loss = backward(recipe, wrapped, model, batch, t.grad_accum_steps, precision, scaler)
            value = _mean_over_ranks(loss)
            if not math.isfinite(value):
                raise _diverged(recipe, f"loss is {value} at step {done}", last_good)
            lr = scheduler.get_last_lr()[0]
            extra = _step(model, optimizer, scheduler, scaler, t.grad_clip_norm)
            speed = t.batch_size / max(time.perf_counter() - clock, 1e-9)
            checked = recipe.check(model) if recipe.check and rank == 0 and t.eval_every \
                and done % t.eval_every == 0 else {}
            if done % t.log_every == 0 or done == t.steps or checked:
                curve.append({"step": done, "loss": value, "lr": lr, "images_per_s": speed, **checked})
                _log(writer, done, curve[-1], recipe.head(model), extra)
            bar.set_postfix_str(f"loss {value:.4f}, {speed:.1f} images/s", refresh=False)
            bar.update(1)
            if done % t.checkpoint_every == 0 or done == t.steps:
                if not _all_finite(model):
                    raise _diverged(recipe, f"weights became non-finite by step {done}", last_good)
                rng = _rng_states(device)
                if rank == 0:
                    writer.flush()   # the events up to this checkpoint are on disk before it
                    ckpt.retain(recipe.out_dir, t.keep_checkpoints)
                    info = {"step": done, "identity": identity, "curve": curve, "stream": stream}
                    if scaler.is_enabled():
                        info["scaler"] = scaler.state_dict()
                    ckpt.save_state(recipe.out_dir, model, optimizer, scheduler, info, rng)
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
