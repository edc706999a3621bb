"""torchrun's processes: joining the process group, this process's rank and world size, its
device, and the few collectives the stages share (sums, broadcasting a small object from rank
0, a directory every rank writes in). The only module that reads torchrun's environment.

Launched by torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment), a stage joins
the group torchrun describes: NCCL when CUDA is present, gloo on the CPU. Started any other way
a process is rank 0 of a world of 1 and no group is started.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from flame_pipeline.files import atomic_path


def launched_rank() -> int:
    """torchrun's rank of this process (0 when torchrun did not start it), known before and
    without joining the group."""
    return int(os.environ.get("RANK", "0"))


def launched_world() -> int:
    """How many processes torchrun started (1 when torchrun did not start this one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def device() -> torch.device:
    """This process's device: the GPU ``LOCAL_RANK`` when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def join() -> bool:
    """Join the process group torchrun describes, unless there is none or it is joined already;
    True when this call joined it."""
    if launched_world() > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(device())   # NCCL's object collectives use this device
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return True
    return False


def world() -> tuple[int, int]:
    """(rank, world size) in the joined process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def process_group() -> Iterator[torch.device]:
    """Join torchrun's group for the block (and leave it after, if the block joined it); yield
    this rank's device, made the current CUDA device on a GPU."""
    here = device()
    if here.type == "cuda":
        torch.cuda.set_device(here)
    joined = join()
    try:
        yield here
    finally:
        if joined:
            dist.destroy_process_group()


def all_sum(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each array summed element-wise over the ranks, in float64, the same on every rank (one
    all_reduce); without a group, the arrays themselves as float64."""
    names = sorted(arrays)
    flat = (np.concatenate([np.asarray(arrays[n], np.float64).ravel() for n in names]) if names
            else np.zeros(0))
    if world()[1] > 1:
        total = torch.from_numpy(flat).to(device())
        dist.all_reduce(total)
        flat = total.cpu().numpy()
    out, at = {}, 0
    for n in names:
        shape = np.shape(arrays[n])
        out[n] = flat[at:at + int(np.prod(shape))].reshape(shape)
        at += out[n].size
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` (small, picklable) on every rank."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


@contextlib.contextmanager
def shared_atomic_dir(target: str | Path) -> Iterator[Path]:
    """A new directory that every rank writes in during the block and that replaces
    ``target`` whole when rank 0 leaves it (``files.atomic_path``): end the block with a
    collective (e.g. ``barrier``) so that rank 0 leaves it after the others wrote. A killed
    run leaves ``target`` as it was."""
    if world()[0] != 0:
        yield Path(broadcast(None))
        return
    with atomic_path(target) as tmp:
        tmp.mkdir()
        yield Path(broadcast(str(tmp)))
