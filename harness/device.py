"""Where a run computes and at what precision: the one home of the device and precision
choice (training, `harness.preflight`, `harness.finetune` and `harness plan` ask here). torch is
imported when a function needs it, so that `harness plan` of a GPU ladder loads none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.config import ExecutionConfig
from harness.hardware import peak_flops

if TYPE_CHECKING:
    import torch

    from harness.distributed import World
    from harness.grid import RunSpec

__all__ = [
    "autocast_dtype",
    "datasheet_peak",
    "device_kind",
    "precision_for",
    "precision_name",
    "resolve_device",
]


def device_kind(execution: ExecutionConfig) -> str:
    """'cuda' or 'cpu': execution.device, "auto" resolved by what torch sees here (`harness plan`
    of a GPU experiment on a laptop keeps "cuda"; `resolve_device` refuses it)."""
    if execution.device != "auto":
        return execution.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(execution: ExecutionConfig, here: World | None = None) -> torch.device:
    """execution.device as a torch device; one rank of several takes its local GPU."""
    import torch

    if execution.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("execution.device = 'cuda' but no CUDA device is available")
    kind = device_kind(execution)
    if kind == "cuda" and here is not None and here.size > 1:
        return torch.device("cuda", here.local_rank)
    return torch.device(kind)


def precision_for(precision: str, device_type: str) -> str:
    """train.precision on a device: "bf16" or "fp32". "auto" is bf16 on a GPU that has it;
    master weights and optimizer state stay fp32 either way."""
    if precision != "auto":
        return precision
    if device_type != "cuda":
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp32"


def autocast_dtype(spec: RunSpec, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the run on ``device`` (None: fp32 throughout)."""
    import torch

    return torch.bfloat16 if precision_for(spec.train.precision, device.type) == "bf16" else None


def precision_name(autocast: torch.dtype | None) -> str:
    """The precision the run's matmuls run at, as `hardware.peak_flops` names it."""
    return "bf16" if autocast is not None else "fp32"


def datasheet_peak(device: torch.device, autocast: torch.dtype | None) -> float | None:
    """One GPU's datasheet peak FLOP/s at the run's precision (`hardware.peak_flops`); None on a
    CPU, whose peak is measured once the run is over, or on an unknown GPU."""
    if device.type != "cuda":
        return None
    import torch

    return peak_flops(torch.cuda.get_device_name(device), precision_name(autocast))
