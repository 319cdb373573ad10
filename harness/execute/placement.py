"""Where runs go on this machine: how many workers, how many threads each, which GPU.

One worker per visible GPU times `execution.runs_per_device`, each seeing only its own GPU
(CUDA_VISIBLE_DEVICES); on a CPU, as many workers as the usable cores allow at
`execution.threads` each (at least one). Threads are never oversubscribed: on a shared 2-core
machine, one busy process next to a 2-thread run took a step from 33 ms to about 1000 ms
(OpenMP threads spin-wait; docs/performance.md), so workers x threads <= cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from harness.config import ExecutionConfig

__all__ = ["Slot", "plan_slots", "usable_cores", "visible_gpus"]


@dataclass(frozen=True)
class Slot:
    """One worker's share of the machine."""

    index: int
    threads: int
    """torch threads (OMP_NUM_THREADS); 0 = torch's default."""
    cuda_visible_devices: str | None
    """The GPU this worker sees (devices_per_run of them for runs on several), or None on a
    CPU."""

    @property
    def label(self) -> str:
        where = f"GPU {self.cuda_visible_devices}" if self.cuda_visible_devices else "CPU"
        threads = (
            "default threads"
            if not self.threads
            else f"{self.threads} thread" + ("s" if self.threads > 1 else "")
        )
        return f"worker {self.index} ({where}, {threads})"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: a SLURM allocation, taskset, cgroup)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES' entries where it is set, else
    0..n-1 for the n devices torch counts (0 without CUDA)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable torch CUDA: a CPU machine
        return []


def plan_slots(
    execution: ExecutionConfig,
    *,
    n_units: int,
    gpus: list[str] | None = None,
    cores: int | None = None,
) -> list[Slot]:
    """The workers for ``n_units`` units of work (never more workers than units).

    Parameters
    ----------
    execution : ExecutionConfig
        device, threads, workers, runs_per_device.
    n_units : int
        Units of work to place.
    gpus, cores : optional
        The machine (default: `visible_gpus`, `usable_cores`); tests pass fakes.
    """
    if execution.device == "cpu":
        gpus = []
    elif gpus is None:
        gpus = visible_gpus()
    cores = usable_cores() if cores is None else cores
    k = execution.devices_per_run
    if gpus:
        # A run on k devices takes k GPUs of its own: "0,1", "2,3", ... (its ranks' cuda:0..k-1).
        groups = [",".join(gpus[i : i + k]) for i in range(0, len(gpus) - k + 1, k)]
        devices = [g for g in groups for _ in range(execution.runs_per_device if k == 1 else 1)]
        n = len(devices) if execution.workers == "auto" else int(execution.workers)
        n = max(1, min(n, n_units))
        # Worker i on device i mod (number of slots): more workers than slots share GPUs.
        threads = execution.threads or max(1, cores // (n * k))
        return [Slot(i, threads, devices[i % len(devices)]) for i in range(n)]
    if execution.workers == "auto":
        per = max(1, execution.threads) * k  # a run's k processes, threads each
        n = max(1, cores // per)
    else:
        n = int(execution.workers)
    n = max(1, min(n, n_units))
    # One worker keeps torch's default (all cores) unless told; several get one thread each
    # unless told, so that workers x threads stays within the cores. A run on k processes
    # shares its worker's cores among them.
    if k > 1:
        threads = execution.threads or max(1, cores // (n * k))
    else:
        threads = execution.threads if (execution.threads or n == 1) else max(1, cores // n)
    return [Slot(i, threads, None) for i in range(n)]
