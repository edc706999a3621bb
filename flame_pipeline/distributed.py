"""torchrun's processes: joining the process group, this process's rank and world size, and
its device. The only module that reads torchrun's environment.

Launched by torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment), a stage joins
the group torchrun describes: NCCL when CUDA is present, gloo on the CPU. Started any other way
a process is rank 0 of a world of 1 and no group is started.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
import torch.distributed as dist


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
