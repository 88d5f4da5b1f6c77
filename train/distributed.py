"""Single-process and torchrun multi-process training with the same code path.

``torchrun --nproc_per_node N -m train.train_detector ...`` sets ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK``; :func:`init_distributed` then joins the process group (NCCL on CUDA, gloo on CPU)
and every rank gets its own device. Without those variables everything is a no-op and rank 0 is
the only process. Rank 0 alone logs, plots and writes checkpoints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` uses this process's local rank."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid options: {DEVICES}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1; returns this process's info."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        logger.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, dev)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def wrap(module: nn.Module, info: DistInfo, find_unused_parameters: bool = True) -> nn.Module:
    """DistributedDataParallel around ``module`` when running multi-process; else ``module``."""
    if not info.distributed:
        return module
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids,
                                   find_unused_parameters=find_unused_parameters)


def mean_across(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar logs over ranks. Ranks may log different keys (e.g. a loss only some
    batches have): each key is averaged over the ranks that have it. Every rank must call it."""
    if not info.distributed:
        return values
    gathered: list[dict[str, float] | None] = [None] * info.world_size
    dist.all_gather_object(gathered, values)
    keys = sorted({k for d in gathered if d for k in d})
    return {k: sum(d[k] for d in gathered if d and k in d) / sum(1 for d in gathered if d and k in d)
            for k in keys}


def any_across(flag: bool, info: DistInfo) -> bool:
    """True on every rank when any rank says True (stop decisions stay in lock-step)."""
    if not info.distributed:
        return flag
    device = info.device if info.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
