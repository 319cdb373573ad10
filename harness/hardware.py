"""Peak FLOP/s of the machine a run trains on, for model FLOP utilisation (MFU).

MFU = achieved model FLOP/s / peak FLOP/s (Chowdhery et al. 2022, PaLM appendix B), with the
model FLOP/s 6 N tokens/s (N non-embedding parameters) or flops_per_token(shape).total
tokens/s.

On a GPU the peak is the datasheet's dense (no structured sparsity) tensor-core rate, looked up
by a substring of ``torch.cuda.get_device_name``. On a CPU there is no datasheet number to trust
(clock, vector units and thread count vary), so the peak is measured: the best rate of square
matmuls with the run's thread count and dtype, once per process.

Precision: "bf16" is the bf16 tensor-core rate (FP32 accumulate). "fp32" is what an fp32
training run gets from its matmuls: harness.train enables TF32 on CUDA, so on Ampere and newer the
TF32 tensor-core rate, on V100 (no TF32) the plain FP32 rate. "tf32" is a synonym of "fp32".
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACCELERATORS",
    "GPU_PEAKS",
    "Accelerator",
    "GpuPeak",
    "accelerator",
    "measure_cpu_matmul_flops",
    "mfu",
    "peak_flops",
]


@dataclass(frozen=True)
class GpuPeak:
    """Dense peak FLOP/s of one accelerator; None where it has no such unit."""

    pattern: str
    """Regular expression searched (case-insensitive) in torch.cuda.get_device_name."""
    bf16: float | None
    fp32: float | None
    source: str


# Most specific first: the first pattern that matches a name wins. Numbers are the datasheets'
# dense figures (the datasheets print the 2:4-sparsity figures, twice these, with an asterisk).
GPU_PEAKS: tuple[GpuPeak, ...] = (
    # NVIDIA H100 Tensor Core GPU datasheet (2023): H100 PCIe BF16 1,513 / TF32 756 TFLOPS
    # with sparsity; H100 NVL BF16 1,671 / TF32 835; H100 SXM BF16 1,979 / TF32 989.
    GpuPeak(r"H100.*PCIe", 756.5e12, 378e12, "NVIDIA H100 datasheet, PCIe"),
    GpuPeak(r"H100.*NVL", 835.5e12, 417.5e12, "NVIDIA H100 datasheet, NVL"),
    # NVIDIA H200 datasheet (2024): H200 NVL BF16 1,671 / TF32 835 with sparsity.
    GpuPeak(r"H200.*NVL", 835.5e12, 417.5e12, "NVIDIA H200 datasheet, NVL"),
    # H200 SXM has the H100 SXM's compute (BF16 1,979 / TF32 989 with sparsity) and more HBM.
    GpuPeak(r"H200", 989.5e12, 494.5e12, "NVIDIA H200 datasheet, SXM"),
    # torch reports the SXM part as e.g. "NVIDIA H100 80GB HBM3".
    GpuPeak(r"H100", 989.5e12, 494.5e12, "NVIDIA H100 datasheet, SXM"),
    # NVIDIA A100 Tensor Core GPU datasheet: BF16 312 / TF32 156 TFLOPS dense (PCIe and SXM,
    # 40 GB and 80 GB alike).
    GpuPeak(r"A100", 312e12, 156e12, "NVIDIA A100 datasheet"),
    # NVIDIA L4 datasheet: BF16 242 / TF32 120 TFLOPS with sparsity. \b keeps L40/L40S out.
    GpuPeak(r"\bL4\b", 121e12, 60e12, "NVIDIA L4 datasheet"),
    # NVIDIA Ada Lovelace architecture whitepaper, appendix A (GeForce RTX 4090): BF16 tensor
    # with FP32 accumulate 165.2 / TF32 tensor 82.6 TFLOPS dense.
    GpuPeak(r"RTX 4090", 165.2e12, 82.6e12, "NVIDIA Ada Lovelace whitepaper, RTX 4090"),
    # NVIDIA Tesla V100 datasheet: FP32 15.7 (SXM2) / 14 (PCIe) TFLOPS; no BF16, no TF32.
    GpuPeak(r"V100.*PCIE", None, 14e12, "NVIDIA V100 datasheet, PCIe"),
    GpuPeak(r"V100", None, 15.7e12, "NVIDIA V100 datasheet, SXM2"),
)

_PRECISION_FIELD = {"bf16": "bf16", "fp32": "fp32", "tf32": "fp32"}


@dataclass(frozen=True)
class Accelerator:
    """A GPU a plan sizes runs for (`harness plan` with execution.gpu): its memory and its
    dense bf16 peak."""

    name: str
    memory_bytes: int
    bf16: float
    source: str


ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in (
        # Memory from the same datasheets as GPU_PEAKS' rates (GB = 1e9 bytes).
        Accelerator("h100", 80 * 10**9, 989.5e12, "NVIDIA H100 datasheet, SXM, 80 GB"),
        Accelerator("h100-pcie", 80 * 10**9, 756.5e12, "NVIDIA H100 datasheet, PCIe, 80 GB"),
        Accelerator("h100-nvl", 94 * 10**9, 835.5e12, "NVIDIA H100 datasheet, NVL, 94 GB"),
        Accelerator("h200", 141 * 10**9, 989.5e12, "NVIDIA H200 datasheet, SXM, 141 GB"),
        Accelerator("a100-80gb", 80 * 10**9, 312e12, "NVIDIA A100 datasheet, 80 GB"),
        Accelerator("a100-40gb", 40 * 10**9, 312e12, "NVIDIA A100 datasheet, 40 GB"),
        Accelerator("l4", 24 * 10**9, 121e12, "NVIDIA L4 datasheet, 24 GB"),
        Accelerator("rtx4090", 24 * 10**9, 165.2e12, "NVIDIA Ada whitepaper, RTX 4090, 24 GB"),
    )
}
"""GPUs `harness plan` knows by name; another is given by its numbers (execution.gpu_memory_gb,
execution.gpu_bf16_tflops)."""


def accelerator(name: str, memory_gb: float = 0.0, bf16_tflops: float = 0.0) -> Accelerator:
    """The GPU ``name``: from `ACCELERATORS`, with either number replaced where given (> 0);
    a name not in the table needs both.

    Raises
    ------
    ValueError
        A name not in the table without both numbers (the message says what is accepted).
    """
    known = ACCELERATORS.get(name.lower())
    if known is None and not (memory_gb > 0 and bf16_tflops > 0):
        raise ValueError(
            f"{name!r} is not a known GPU; accepted: {', '.join(ACCELERATORS)}, or any name "
            "with execution.gpu_memory_gb and execution.gpu_bf16_tflops"
        )
    return Accelerator(
        name=name,
        memory_bytes=int(memory_gb * 1e9) if memory_gb > 0 else known.memory_bytes,  # type: ignore[union-attr]
        bf16=bf16_tflops * 1e12 if bf16_tflops > 0 else known.bf16,  # type: ignore[union-attr]
        source=known.source if known and not (memory_gb > 0 or bf16_tflops > 0) else "given",
    )


def peak_flops(device_name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of the GPU named ``device_name`` at ``precision``; None when unknown.

    ``precision`` is "bf16", "fp32" or "tf32" (see the module docstring). None also where the
    accelerator has no unit for that precision (V100 bf16).
    """
    field = _PRECISION_FIELD.get(precision.lower())
    if field is None:
        raise ValueError(f"precision={precision!r}; accepted: bf16, fp32, tf32")
    for entry in GPU_PEAKS:
        if re.search(entry.pattern, device_name, flags=re.IGNORECASE):
            value: float | None = getattr(entry, field)
            return value
    return None


def mfu(model_flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOP utilisation: model_flops_per_token * tokens_per_s / peak; None without a peak."""
    if peak is None or not peak > 0 or not math.isfinite(peak):
        return None
    return model_flops_per_token * tokens_per_s / peak


@functools.cache
def measure_cpu_matmul_flops(threads: int, dtype: Any = None, seconds: float = 0.5) -> float:
    """Best FLOP/s of square n x n matmuls (2 n^3 FLOPs each) on the CPU with ``threads``.

    ``dtype`` is a torch dtype (default float32). Runs for about ``seconds`` after a warm-up,
    timing batches of matmuls and keeping the best batch. Cached per process and arguments, so
    a grid worker pays it once. Uses its own random generator: the global torch RNG, and with
    it any run's computation, is left as it was. The thread count is restored afterwards.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    n = 1024
    previous_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(dtype)
        b = torch.randn(n, n, generator=gen).to(dtype)
        out = torch.empty(n, n, dtype=dtype)
        with torch.inference_mode():
            for _ in range(2):  # warm-up: thread pool, caches, the kernel's first-call setup
                torch.mm(a, b, out=out)
            # Batches long enough (~20 ms) for the timer to be exact, many for a best-of.
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            one = max(time.perf_counter() - t0, 1e-6)
            per_batch = max(1, min(64, round(0.02 / one)))
            best = math.inf
            deadline = time.perf_counter() + seconds
            repeats = 0
            while repeats < 3 or time.perf_counter() < deadline:
                t0 = time.perf_counter()
                for _ in range(per_batch):
                    torch.mm(a, b, out=out)
                best = min(best, (time.perf_counter() - t0) / per_batch)
                repeats += 1
    finally:
        torch.set_num_threads(previous_threads)
    return 2.0 * n**3 / best
