"""One run on several devices: the ranks of its process group, and what they agree on.

`harness.train.train` finds the group through `world`. The ranks are started by
`harness.execute.ranks` on this machine (torch's own launcher, NCCL on GPUs, gloo on a CPU), or
are the tasks of a SLURM job (`harness.execute.job`), where torch's env:// rendezvous is set
from SLURM's variables by submitit (`submitit.helpers.TorchDistributedEnvironment`).

What a k-device run computes is what the 1-device run computes (`harness.train`): each rank
takes a contiguous share of every step's global batch, losses are normalised by the global
batch's targets, and gradients are averaged, so the update is the full batch's. Rank 0 alone
writes metrics, checkpoints and results. A rank that dies ends the run: the launcher stops the
others, and the run resumes from its last checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "World",
    "agree",
    "barrier",
    "from_main",
    "same_everywhere",
    "sum_across",
    "world",
]


@dataclass(frozen=True)
class World:
    """This process's place in its run: rank, how many ranks, its device index on the node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The process group's ranks where torch.distributed is initialised, else one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
    )


def sum_across(t: Any) -> Any:
    """``t`` summed over the ranks (in place, and returned); itself in one process."""
    import torch.distributed as dist

    if world().size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def agree(*flags: bool) -> tuple[bool, ...]:
    """Each flag true on any rank, the same answer on every rank: decisions that end or save a
    run (a signal on one rank, a wall-clock cadence) must be taken by all of them at one step."""
    if world().size == 1:
        return flags
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(x) for x in t.tolist())


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (itself in one process): what rank 0 read from the file
    system, so that ranks on nodes whose views may differ (NFS) act on one answer."""
    if world().size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def same_everywhere(value: int, what: str) -> None:
    """Raise on every rank if ``value`` is not the same on all of them.

    Raises
    ------
    RuntimeError
        The ranks disagree (e.g. they found different checkpoints).
    """
    if world().size == 1:
        return
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value, -value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    high, low = int(t[0]), int(-t[1])
    if high != low:
        raise RuntimeError(f"the ranks disagree on {what}: from {low} to {high}")


def barrier() -> None:
    import torch.distributed as dist

    if world().size > 1:
        dist.barrier()
