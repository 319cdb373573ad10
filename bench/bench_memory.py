"""The memory model (harness/memory.py) against the peak memory of real training steps on this
CPU: one process, and FSDP2 over gloo processes (issue 36).

For 4 llama shapes (few wide blocks on few tokens, where a block's backward or reduce-scatter
sets the peak; more tokens, where the backward's start does; 16 narrow layers) it measures each
process's peak resident memory in its second step above its resident state (tests/_peaks.py),
and prints it beside `estimate_memory(..., backend="gloo")` less the state, their ratio and the
point the estimate says sets the peak; then the ratio's range by regime. One process: fp32 and
bf16 autocast, with and without activation checkpointing. FSDP: mixed precision with and
without resharding, autocast, fp32, and mixed precision and autocast with checkpointing.

    OMP_NUM_THREADS=1 python bench/bench_memory.py                 # ~25 min on 2 cores
    OMP_NUM_THREADS=1 python bench/bench_memory.py --ranks 2,4,8   # 8 ranks: ~2 min a run

With --blocks it measures instead the largest bytes alive within the first and the last
block's backward pass on one process (torch's memory profiler; tests/_peaks.py), beside the
larger of the estimate's two points for that block: where its backward starts (its first
gradient made, its activations alive) and where it ends (all its gradients made).

    OMP_NUM_THREADS=1 python bench/bench_memory.py --blocks        # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _peaks import block_peaks, fsdp_peaks, step_peak  # noqa: E402

from harness.memory import MemoryEstimate, estimate_memory  # noqa: E402
from harness.model import ModelShape, default_ffn_dim  # noqa: E402

# (n_layer, width, heads, vocabulary, seq_len, micro-batch)
SHAPES = {
    "4x1024, 64 tokens": (4, 1024, 16, 4096, 64, 1),
    "5x640, 1024 tokens": (5, 640, 10, 8192, 128, 8),
    "3x1152, 512 tokens": (3, 1152, 18, 4096, 128, 4),
    "16x512, 512 tokens": (16, 512, 8, 8192, 128, 4),
}
# --blocks also: two wide blocks on many tokens, where one block's recompute is large.
BLOCK_SHAPES = SHAPES | {"2x1024, 1024 tokens": (2, 1024, 16, 8192, 256, 4)}
# name: (precision, FSDP mixed precision, reshard after forward, activation checkpointing)
FSDP_MODES = {
    "mixed": ("bf16", True, True, False),
    "mixed, kept": ("bf16", True, False, False),
    "autocast": ("bf16", False, True, False),
    "fp32": ("fp32", True, True, False),
    "mixed, AC": ("bf16", True, True, True),
    "autocast, AC": ("bf16", False, True, True),
}
ONE_MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False)}
ONE_MODES |= {"fp32, AC": ("fp32", True), "bf16, AC": ("bf16", True)}


def _shape(L: int, d: int, heads: int, V: int, seq: int) -> ModelShape:
    return ModelShape(arch="llama", n_layer=L, n_embd=d, n_head=heads, vocab_size=V,
                      seq_len=seq, ffn_dim=default_ffn_dim("llama", d))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="2,4", help="FSDP world sizes (default 2,4)")
    parser.add_argument("--blocks", action="store_true", help="the blocks' backward passes")
    args = parser.parse_args()
    if args.blocks:
        blocks()
        return
    ranks = [int(r) for r in args.ranks.split(",")]
    ratios: dict[str, list[float]] = defaultdict(list)
    print(f"{'ranks':>5}  {'shape':20s} {'mode':13s} {'peak MB':>8} {'est. MB':>8} ratio  point")

    def report(
        world: int, name: str, mode: str, peaks: list[int], est: MemoryEstimate, ac: bool
    ) -> None:
        need = est.total - est.state
        where = est.peak.name
        regime = f"{'one process' if world == 1 else 'FSDP'}, "
        if ac:
            regime += "checkpointing"
        elif where in ("the backward's start", "the backward's end"):
            regime += where.removeprefix("the ")
        else:
            regime += "a block"
        ratios[regime] += [need / peak for peak in peaks]
        print(f"{world:>5}  {name:20s} {mode:13s} {max(peaks) / 1e6:8.1f} {need / 1e6:8.1f} "
              f"{need / max(peaks):.3f}  {est.peak.name}", flush=True)  # fmt: skip

    for name, (L, d, heads, V, seq, batch) in SHAPES.items():
        shape = _shape(L, d, heads, V, seq)
        for mode, (precision, ac) in ONE_MODES.items():
            est = estimate_memory(shape, micro_batch=batch, precision=precision,
                                  activation_checkpointing=ac)  # fmt: skip
            report(1, name, mode, [step_peak(shape, batch, precision, ac)], est, ac)
    for world in ranks:
        for name, (L, d, heads, V, seq, batch) in SHAPES.items():
            shape = _shape(L, d, heads, V, seq)
            for mode, (precision, mixed, reshard, ac) in FSDP_MODES.items():
                est = estimate_memory(shape, micro_batch=batch, devices=world, parallel="fsdp",
                                      precision=precision, fsdp_mixed_precision=mixed,
                                      reshard_after_forward=reshard, activation_checkpointing=ac,
                                      backend="gloo")  # fmt: skip
                peaks = fsdp_peaks(shape, batch, world, precision=precision, mixed=mixed,
                                   reshard=reshard, checkpointing=ac)  # fmt: skip
                report(world, name, mode, peaks, est, ac)
    print("\nestimate / peak, over every process's peak:")
    for regime, values in ratios.items():
        print(f"  {regime:28s} {len(values):3d} peaks  {min(values):.3f} - {max(values):.3f}")


def blocks() -> None:
    """Each block's backward on one process: the profiler's largest bytes beside the estimate's
    two points for the block (the larger)."""
    ratios = []
    print(f"{'shape':20s} {'mode':9s} {'block':5s} {'peak MB':>8} {'est. MB':>8} ratio  point")
    for name, (L, d, heads, V, seq, batch) in BLOCK_SHAPES.items():
        shape = _shape(L, d, heads, V, seq)
        for mode, (precision, ac) in ONE_MODES.items():
            est = estimate_memory(shape, micro_batch=batch, precision=precision,
                                  activation_checkpointing=ac)  # fmt: skip
            peaks = block_peaks(shape, batch, precision, ac)
            for k, which in ((L - 1, "last"), (0, "first")):
                point = max((p for p in est.points if f"the {which} block's" in p.name),
                            key=lambda p: p.bytes)  # fmt: skip
                ratios.append(point.bytes / peaks[k])
                sizes = f"{peaks[k] / 1e6:8.1f} {point.bytes / 1e6:8.1f}"
                print(f"{name:20s} {mode:9s} {which:5s} {sizes} {ratios[-1]:.3f}  {point.name}",
                      flush=True)  # fmt: skip
    print(f"\nestimate / peak within a block's backward: {min(ratios):.3f} - {max(ratios):.3f}")


if __name__ == "__main__":
    main()
