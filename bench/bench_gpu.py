"""Benchmark: the harness's training speed on a GPU, as model FLOP utilisation (MFU).

Trains a small grid of GPU-sized Llama models with `harness.train.train` (the code path every
grid run takes: bf16 autocast, TF32 matmuls, fused AdamW, SDPA attention) on the bundled corpus
for a few dozen steps each and prints, per model, the steady tokens/s (from metrics.csv, after
--skip warm-up steps and before the final evaluation) and the MFU it implies:

- 6N-MFU: 6 x non-embedding parameters x tokens/s over the device's peak (Kaplan 2020's
  C = 6ND accounting, the one scaling papers use);
- total-MFU: with attention and embedding/logit FLOPs (harness.model.flops_per_token);

and its peak GPU memory (torch.cuda.max_memory_allocated) beside the plan's estimate
(harness.memory); against two peaks: the datasheet's dense bf16 peak (harness.hardware's
table) and a bf16 matmul rate measured here (8192^3, best of 10 after warm-up), which is
what the chip can do on one large GEMM. Models are also run with execution.compile = true
(torch.compile) where the time budget allows, and the smallest once in fp32 (TF32 matmuls) for
the precision ratio.

    python bench/bench_gpu.py                 # needs CUDA; ~4-6 minutes on one H200
    python bench/bench_gpu.py --json out.json # also writes the table as JSON
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from _common import steady_rate

from harness.config import DataConfig, ExecutionConfig, TrainConfig
from harness.grid import RunSpec
from harness.hardware import peak_flops
from harness.memory import estimate_memory
from harness.model import ModelShape, count_params, default_ffn_dim, flops_per_token
from harness.train import train

SEQ_LEN = 2048
HEAD_DIM = 128
# (n_layer, n_embd, batch sequences): GPT-3 Small / Medium / XL-like widths; batches sized to
# fit activations of one H200 without activation checkpointing.
GRID = [(12, 768, 32), (24, 1024, 32), (24, 2048, 16)]


def shape(n_layer: int, n_embd: int) -> ModelShape:
    return ModelShape(
        arch="llama",
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_embd // HEAD_DIM,
        vocab_size=256,
        seq_len=SEQ_LEN,
        ffn_dim=default_ffn_dim("llama", n_embd),
    )


def measured_matmul_peak(dtype: torch.dtype = torch.bfloat16, n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * n**3 / best


def bench_one(root: Path, model: ModelShape, batch: int, steps: int, skip: int, precision: str,
              compile_: bool) -> dict:  # fmt: skip
    spec = RunSpec(
        experiment="bench_gpu",
        model=model,
        data=DataConfig(corpus="shakespeare", seq_len=SEQ_LEN, eval_tokens=batch * SEQ_LEN),
        train=TrainConfig(
            batch_size=batch,
            lr=3e-4,
            evals_per_run=1,
            precision=precision,  # type: ignore[arg-type]
            checkpoint_every_steps=0,
        ),
        n_tokens=steps * batch * SEQ_LEN,
        seed=0,
    )
    run_dir = root / "runs" / f"{spec.run_id}-{precision}-{int(compile_)}"
    execution = ExecutionConfig(
        device="cuda", progress=False, results_dir=str(root), compile=compile_
    )
    t0 = time.perf_counter()
    torch.cuda.reset_peak_memory_stats()
    result = train(spec, run_dir, execution=execution)
    peak_bytes = torch.cuda.max_memory_allocated()
    assert result is not None and result.status == "done", result
    rate = steady_rate(run_dir, skip)
    n = count_params(model).non_embedding
    datasheet = peak_flops(torch.cuda.get_device_name(), precision)
    return {
        "n_layer": model.n_layer,
        "n_embd": model.n_embd,
        "n_params": n,
        "batch_tokens": batch * SEQ_LEN,
        "precision": precision,
        "compile": compile_,
        "tokens_per_s": rate,
        "flops_6n_per_s": 6 * n * rate,
        "flops_total_per_s": flops_per_token(model).total * rate,
        "datasheet_peak": datasheet,
        "final_train_loss": result.train_loss,
        # The plan's estimate (harness.memory) beside torch's own peak: goal within 15%.
        "peak_memory_bytes": peak_bytes,
        "plan_memory_bytes": estimate_memory(model, micro_batch=batch, precision=precision).total,
        "wall_s_incl_setup": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=10, help="warm-up steps left out of the rate")
    p.add_argument("--budget-s", type=float, default=330.0, help="stop starting new runs after")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA device")
    t_start = time.perf_counter()
    name = torch.cuda.get_device_name()
    measured = measured_matmul_peak()
    print(f"device: {name}; torch {torch.__version__}")
    print(f"bf16 matmul 8192^3 measured: {measured / 1e12:.0f} TFLOP/s; datasheet dense bf16: "
          f"{(peak_flops(name, 'bf16') or float('nan')) / 1e12:.0f} TFLOP/s")  # fmt: skip
    plan = [(s, "bf16", False) for s in GRID]
    plan += [(GRID[0], "fp32", False)]
    plan += [(s, "bf16", True) for s in GRID]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for (n_layer, n_embd, batch), precision, compile_ in plan:
            if time.perf_counter() - t_start > args.budget_s:
                print(f"(budget reached: skipped {n_layer}x{n_embd} {precision} "
                      f"compile={compile_})")  # fmt: skip
                continue
            row = bench_one(Path(tmp), shape(n_layer, n_embd), batch, args.steps, args.skip,
                            precision, compile_)  # fmt: skip
            row["measured_peak"] = measured
            rows.append(row)
            ds = row["datasheet_peak"]
            print(
                f"{n_layer:>2}x{n_embd:<5} N={row['n_params'] / 1e6:7.1f}M "
                f"{precision} compile={int(compile_)} batch={row['batch_tokens']:>6} tok: "
                f"{row['tokens_per_s']:>10,.0f} tok/s  "
                f"6N-MFU {row['flops_6n_per_s'] / ds:6.1%} of datasheet, "
                f"{row['flops_6n_per_s'] / measured:6.1%} of measured; "
                f"total-MFU {row['flops_total_per_s'] / ds:6.1%} of datasheet; peak memory "
                f"{row['peak_memory_bytes'] / 1e9:.1f} GB, plan's estimate "
                f"{row['plan_memory_bytes'] / 1e9:.1f} GB "
                f"(x{row['plan_memory_bytes'] / row['peak_memory_bytes']:.2f})  "
                f"(run {row['wall_s_incl_setup']:.0f} s)",
                flush=True,
            )
    for line in compile_break_even(rows, args.steps):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"device": name, "rows": rows}, indent=2))


def compile_break_even(rows: list[dict], steps: int) -> list[str]:
    """Where torch.compile repays its cost, per shape run both ways at bf16: its extra wall
    time (the compiled run's, less the eager one's, less the difference their steady rates
    make over the steps) over the time it saves per token. The measured threshold
    execution.compile's default waits for (issue 36)."""
    lines = []
    for eager in (r for r in rows if r["precision"] == "bf16" and not r["compile"]):
        key = (eager["n_layer"], eager["n_embd"])
        compiled = next(
            (r for r in rows if r["compile"] and (r["n_layer"], r["n_embd"]) == key), None
        )
        if compiled is None:
            continue
        tokens = steps * eager["batch_tokens"]
        per_token_e, per_token_c = 1 / eager["tokens_per_s"], 1 / compiled["tokens_per_s"]
        cost_s = compiled["wall_s_incl_setup"] - eager["wall_s_incl_setup"]
        cost_s -= tokens * (per_token_c - per_token_e)
        if per_token_c >= per_token_e:
            verdict = "never: compiled is not faster"
        else:
            d_star = cost_s / (per_token_e - per_token_c)
            verdict = (f"after {d_star:.3g} tokens ({d_star * per_token_e / 60:.1f} min of "
                       f"eager training)")  # fmt: skip
        lines.append(
            f"compile {key[0]}x{key[1]}: costs {cost_s:.0f} s, speeds steps "
            f"x{per_token_e / per_token_c:.2f}; pays off {verdict}"
        )
    return lines


if __name__ == "__main__":
    main()
