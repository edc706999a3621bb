"""Training state: saved every ``train.checkpoint_every`` steps, restored to resume, in
safetensors only (no pickle anywhere). The finished models' files are their own modules'
(``flame.py``, ``clip.py``).

``state.safetensors`` holds every tensor needed to resume (model weights,
AdamW moments and step counts, RNG states of every rank) and, in its header metadata, one JSON
document with the scalars (step, scheduler state, optimizer param groups, loss curve so far,
and the config fields the run depends on). One file, written atomically, so a checkpoint is
never half old, half new. ``state.json`` is a readable copy of that JSON, written after it.

With ``train.keep_checkpoints`` N > 1 the N - 1 checkpoints before the latest stay in
``checkpoints/step_<step>.safetensors`` (same format; copy one over ``state.safetensors`` to
resume from it instead).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from flame_pipeline.files import atomic_path, write_json

STATE = "state.safetensors"
STATE_JSON = "state.json"
KEPT = "checkpoints"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint or model dir that cannot be used; the message names the reason/field."""


def _dotted(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_dotted(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def mismatches(saved: dict, current: dict) -> list[str]:
    """Dotted fields whose values differ between two config trees, with both values."""
    a, b = _dotted(saved), _dotted(current)
    return [f"{k}: checkpoint {a.get(k, '<absent>')!r}, this run {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# ------------------------------------------------------------------ optimizer <-> tensors
def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in info["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in info["param_groups"]]
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------ training state
def save_state(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, info: dict,
               rng: dict[str, torch.Tensor]) -> Path:
    """Write the resumable state atomically; ``info`` holds step, identity, curve (JSON-able)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_info = _flatten_optimizer(optimizer)
    tensors.update({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()})
    tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in rng.items()})
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    doc = dict(info, format=FORMAT, optimizer=opt_info, scheduler=sched)
    text = json.dumps(doc, sort_keys=True)
    target = Path(out_dir) / STATE
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"state": text})
    write_json(Path(out_dir) / STATE_JSON, doc)
    return target


def _read(path: Path, tensors: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """A checkpoint file's JSON document, and its tensors when asked."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        doc = json.loads(meta["state"])
        loaded = load_file(str(path)) if tensors else {}
    except (KeyError, ValueError, OSError, SafetensorError) as err:
        raise CheckpointError(f"unreadable checkpoint {path}: {err}") from None
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {doc.get('format')}, expected {FORMAT}")
    return loaded, doc


def read_state(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The tensors and JSON of ``out_dir``'s checkpoint, or None when there is none."""
    path = Path(out_dir) / STATE
    return _read(path, tensors=True) if path.is_file() else None


def retain(out_dir: Path, keep: int) -> None:
    """Before a new checkpoint replaces ``state.safetensors``: with ``keep`` > 1 the current one
    stays as ``checkpoints/step_<step>.safetensors`` (a hard link, no copy); of those, all but the
    ``keep`` - 1 latest are deleted."""
    state, kept = Path(out_dir) / STATE, Path(out_dir) / KEPT
    if keep > 1 and state.is_file():
        target = kept / f"step_{_read(state, tensors=False)[1]['step']:08d}.safetensors"
        kept.mkdir(exist_ok=True)
        if not target.exists():
            os.link(state, target)
    older = sorted(kept.glob("step_*.safetensors")) if kept.is_dir() else []
    for path in older[:max(0, len(older) - (keep - 1))]:
        path.unlink()
    if kept.is_dir() and not any(kept.iterdir()):
        kept.rmdir()


def restore_state(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LRScheduler,
                  identity: dict) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """Load the checkpoint into model/optimizer/scheduler after checking it was made with the
    same config (``identity``); returns its JSON and RNG tensors, or None without a checkpoint."""
    found = read_state(out_dir)
    if found is None:
        return None
    tensors, doc = found
    diff = mismatches(doc["identity"], identity)
    if diff:
        raise CheckpointError(
            f"checkpoint {Path(out_dir) / STATE} was made with another config; mismatched: "
            + "; ".join(diff) + ". Use another data_dir or delete the checkpoint to start over.")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, doc["optimizer"]))
    scheduler.load_state_dict(dict(doc["scheduler"], lr_lambdas=[None] * len(scheduler.lr_lambdas)))
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return doc, rng
