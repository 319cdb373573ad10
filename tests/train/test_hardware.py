"""Peak FLOP/s lookups, the CPU matmul measurement and the MFU arithmetic."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from harness.hardware import measure_cpu_matmul_flops, mfu, peak_flops


@pytest.mark.parametrize(
    ("name", "bf16", "fp32"),
    [
        ("NVIDIA H100 80GB HBM3", 989.5e12, 494.5e12),  # H100 SXM as torch reports it
        ("NVIDIA H200", 989.5e12, 494.5e12),
        ("NVIDIA H100 PCIe", 756.5e12, 378e12),
        ("NVIDIA H100 NVL", 835.5e12, 417.5e12),
        ("NVIDIA A100-SXM4-80GB", 312e12, 156e12),
        ("NVIDIA A100-SXM4-40GB", 312e12, 156e12),
        ("NVIDIA A100 80GB PCIe", 312e12, 156e12),
        ("NVIDIA L4", 121e12, 60e12),
        ("NVIDIA GeForce RTX 4090", 165.2e12, 82.6e12),
        ("Tesla V100-SXM2-16GB", None, 15.7e12),
        ("Tesla V100-PCIE-32GB", None, 14e12),
    ],
)
def test_table_lookup(name: str, bf16: float | None, fp32: float) -> None:
    assert peak_flops(name, "bf16") == bf16
    assert peak_flops(name, "fp32") == fp32
    assert peak_flops(name, "tf32") == fp32  # fp32 runs use TF32 matmuls on CUDA


@pytest.mark.parametrize(
    "name", ["NVIDIA L40S", "NVIDIA A10G", "NVIDIA GeForce RTX 3090", "cpu", "", "AMD MI300X"]
)
def test_unknown_names_have_no_peak(name: str) -> None:
    assert peak_flops(name, "bf16") is None
    assert peak_flops(name, "fp32") is None


def test_bad_precision() -> None:
    with pytest.raises(ValueError, match="precision"):
        peak_flops("NVIDIA H100 80GB HBM3", "fp8")


def test_mfu_by_hand() -> None:
    # 6 N with N = 443,904: 2,663,424 FLOPs per token; at 20,000 tokens/s that is
    # 53,268,480,000 FLOP/s; against a 100 GFLOP/s peak, 0.5326848.
    assert mfu(6 * 443_904, 20_000.0, 100e9) == pytest.approx(0.5326848, rel=1e-12)
    # An H100 SXM at bf16 and a 1e9-parameter model at 100,000 tokens/s: 6e14 / 989.5e12.
    assert mfu(6e9, 1e5, peak_flops("NVIDIA H100 80GB HBM3", "bf16")) == pytest.approx(
        0.6063668519454269, rel=1e-12
    )
    assert mfu(6e9, 1e5, None) is None
    assert mfu(6e9, 1e5, 0.0) is None


@pytest.mark.slow
def test_cpu_measurement_is_positive_and_cached() -> None:
    before = torch.get_num_threads()
    rate = measure_cpu_matmul_flops(1, torch.float32, 0.05)
    assert math.isfinite(rate) and rate > 0
    assert measure_cpu_matmul_flops(1, torch.float32, 0.05) == rate  # cached per process
    assert torch.get_num_threads() == before  # the thread count is restored


def test_cpu_measurement_leaves_the_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    measure_cpu_matmul_flops(1, torch.float32, 0.01)
    assert torch.equal(torch.rand(3), expected)


def test_module_does_not_import_torch() -> None:
    code = "import sys, harness.hardware; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
