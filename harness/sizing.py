"""Sizing a run for a named GPU (`harness plan` with execution.gpu): the micro-batch and the
number of GPUs at which it fits, and its GPU-hours, from the shape alone (`harness.memory`).

The rule, per run, with B sequences a step and M the GPU's memory less `memory.HEADROOM`:

- the GPUs: those the run is given (execution.devices_per_run where it is set above 1, else
  what `harness submit` asks for its size: cluster.gpus_per_run x nodes_per_run, with its
  [[cluster.by_size]] table); where a micro-batch of one sequence does not fit on them, under
  FSDP (state shared) the fewest more of 2, 4, .., `MAX_GPUS` that divide B and fit (the plan
  says to give them); under DDP (every GPU holds the whole state) none;
- the micro-batch: execution.micro_batch_size where it is set (checked to fit); else the
  largest divisor of the GPU's share of B that fits: fewer accumulation steps, the same
  result;
- GPU-hours: the run's FLOPs with attention (its training tokens, plus its evaluations at a
  third of a step's FLOPs a token; with activation checkpointing, its training tokens at 4/3,
  for the forward pass made again) over the bf16 peak times execution.gpu_mfu, whatever the
  number of GPUs; its wall time is that over the GPUs.

A run that fits at no such size is refused, with its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import ExecutionConfig
from harness.errors import InputError
from harness.flops import step_work
from harness.grid import RunSpec
from harness.hardware import Accelerator
from harness.memory import HEADROOM, MemoryEstimate, estimate_memory
from harness.model import count_params, flops_per_token

__all__ = ["MAX_GPUS", "GpuFit", "size_for_gpu"]

MAX_GPUS = 64
"""The most GPUs a plan spreads one run over (8 nodes of 8)."""


@dataclass(frozen=True)
class GpuFit:
    """How one run is sized for the GPU."""

    micro_batch: int
    devices: int
    given: int
    """The GPUs the run is given now (devices above it are what it needs)."""
    memory: MemoryEstimate
    """Peak bytes on each GPU at that micro-batch."""
    gpu_hours: float
    """GPU-hours at the assumed MFU (the same on any number of GPUs)."""

    @property
    def wall_s(self) -> float:
        return self.gpu_hours * 3600.0 / self.devices


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def size_for_gpu(
    spec: RunSpec, execution: ExecutionConfig, gpu: Accelerator, precision: str, given: int = 1
) -> GpuFit:
    """The sizing of ``spec`` on ``gpu`` given ``given`` GPUs (module docstring).

    Raises
    ------
    InputError
        Nothing fits: the run's need at the smallest size tried and the GPU's memory.
    """
    shape, batch = spec.model, spec.train.batch_size
    usable = (1.0 - HEADROOM) * gpu.memory_bytes
    fsdp = execution.parallel == "fsdp"

    def need(micro: int, k: int) -> MemoryEstimate:
        return estimate_memory(
            shape,
            micro_batch=micro,
            devices=k,
            parallel=execution.parallel,
            precision=precision,
            fsdp_mixed_precision=execution.fsdp_mixed_precision,
            reshard_after_forward=execution.fsdp_reshard_after_forward,
            activation_checkpointing=execution.activation_checkpointing,
        )

    counts = [given]
    if fsdp:
        counts += [k for k in (2**i for i in range(7)) if given < k <= MAX_GPUS and batch % k == 0]
    smallest = 1 if execution.micro_batch_size == 0 else execution.micro_batch_size
    devices = next((k for k in counts if need(smallest, k).total <= usable), None)
    if devices is None:
        k = counts[-1]
        m = need(smallest, k)
        hint = "" if fsdp else "; execution.parallel = 'fsdp' shares the state over GPUs"
        raise InputError(
            f"run {spec.run_id} (N = {count_params(shape).total:,} parameters in all, "
            f"{shape.n_layer}x{shape.n_embd}, seq_len {shape.seq_len}) needs "
            f"{m.total / 1e9:.1f} GB per GPU at a micro-batch of {smallest} on {k} GPU(s) "
            f"({execution.parallel}: {m.breakdown()}); a "
            f"{gpu.name} has "
            f"{gpu.memory_bytes / 1e9:.0f} GB, {usable / 1e9:.0f} usable; accepted: a run that "
            f"fits, on more GPUs, a smaller shape or seq_len, or a larger GPU{hint}"
        )
    share = batch // devices
    if execution.micro_batch_size:
        micro = execution.micro_batch_size
    else:
        micro = max(m for m in _divisors(share) if need(m, devices).total <= usable)
    eval_tokens = spec.train.evals_per_run * spec.data.eval_tokens
    work = step_work(execution.activation_checkpointing)
    flops = flops_per_token(shape).total * (spec.n_tokens * work + eval_tokens / 3.0)
    hours = flops / (gpu.bf16 * execution.gpu_mfu) / 3600.0
    return GpuFit(
        micro_batch=micro,
        devices=devices,
        given=given,
        memory=need(micro, devices),
        gpu_hours=hours,
    )
