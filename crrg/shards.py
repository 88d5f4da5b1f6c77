"""Sharding a report run over ``torchrun`` ranks, and one exit status for the whole job.

Each rank takes every WORLD_SIZE-th input (:func:`shard`). torchrun ends the job as soon as one
rank exits non-zero: it sends SIGTERM to the others, and their unwritten images are lost. So a
rank never exits on its own verdict: when its shard is done (or it failed to start), it waits in
:func:`agree` until every rank has finished, and all ranks leave with the job's status: the
counts summed over the ranks, the highest exit code.

    status = agree(JobStatus(code=1 if failed else 0, total=n, written=w, failed=failed))
    sys.exit(status.code)   # the same on every rank
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import timedelta

logger = logging.getLogger(__name__)

#: how long a rank that has finished waits for the others; torchrun itself ends the job if a rank
#: dies, so this only bounds a hung rank (the process group's default, 30 min, is far too short:
#: a shard may finish hours before another)
SHARD_WAIT = timedelta(days=7)


def dist_rank() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as torchrun sets them; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shard(paths: Sequence[str], rank: int, world_size: int) -> list[str]:
    """This rank's share: every ``world_size``-th path from ``rank`` (disjoint, covering all)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return list(paths[rank::world_size])


@dataclass(frozen=True)
class JobStatus:
    """One rank's outcome, or after :func:`agree` the whole job's."""

    code: int  # exit status: 0 every image reported, 1 some failed (or a rank crashed), 2 usage error
    total: int = 0  # images
    written: int = 0  # report lines written
    failed: int = 0  # error lines, the rejected ones included
    rejected: int = 0  # of which the input check rejected
    ranks: int = 1  # how many ranks the counts cover


def agree(status: JobStatus) -> JobStatus:
    """The job's status, the same on every rank.

    Under torchrun (``WORLD_SIZE`` > 1 and ``MASTER_ADDR`` set) every rank calls this once, on
    every path, when its shard is done: it joins a gloo process group, waits at a barrier for the
    others (up to :data:`SHARD_WAIT`), and all-reduces the counts (sum) and the exit code (max).
    Elsewhere it returns ``status`` as it is.
    """
    _, world_size = dist_rank()
    if world_size <= 1 or "MASTER_ADDR" not in os.environ:
        return status
    if os.environ.get("MASTER_PORT", "0") == "0":  # `torchrun --master-port 0` tells workers port 0
        logger.warning("MASTER_PORT is 0 (torchrun --master-port 0?): the ranks cannot meet, so each "
                       "exits with its own status and a failing rank may end the job early; give a port")
        return status
    import torch
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=SHARD_WAIT)
    try:
        dist.barrier()  # every rank has finished its shard
        counts = torch.tensor(astuple(status)[1:], dtype=torch.int64)  # total, written, failed, rejected, ranks
        code = torch.tensor([status.code], dtype=torch.int64)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
    finally:
        if created:
            dist.destroy_process_group()
    return JobStatus(int(code.item()), *(int(v) for v in counts.tolist()))
