"""Benchmark: the harness's CPU training speed against its peak and against transformers' Trainer.

In one process, with --threads torch threads (default 1: never 2 threads on a busy
2-core machine, docs/performance.md), it measures

(a) the peak fp32 (and, where the CPU has it, bf16) matmul rate: harness.hardware's measurement,
    1024^3 matmuls, best batch;
(b) the harness's training tokens/s on the former quickstart's largest model (llama L4 d96 h6, byte
    vocab, seq_len 128, batch 8, fp32), by harness.train.train on a short run of the bundled
    Shakespeare corpus in a temp results dir; the steady rate comes from metrics.csv's wall_s
    after the warm-up steps, result.json's tokens_per_s (whole run, what runs.csv shows) too;
(c) the same model (same seed, same init) trained by transformers.Trainer on the same train.npy
    windows in the same order (AdamW, cosine schedule with warm-up, clipping 1.0, weight decay
    0.1, no eval, no save, no workers), timed per step by a callback after the same warm-up;
(d) bf16 autocast vs fp32 harness tokens/s at width 128 (llama L2 d128 h8), when torch reports
    CPU bf16 support;
(e) the step's GEMMs alone, timed at their shapes: what share of the step they are, and the
    6N-MFU bound they set;
(f) with --compile, (b) again with execution.compile = true (torch.compile, inductor's C++
    kernels on a CPU): steady tokens/s against the Trainer's, and the compile time;
(g) the step's attention alone: the causal attention of every layer, forward and backward, at
    its shape (batch x heads x seq_len x head width), by each of PyTorch's CPU attention
    kernels (SDPA's flash kernel, which the model uses; SDPA's math backend; matmul, softmax,
    matmul); with the GEMMs of (e), the fastest of them bounds the 6N-MFU and the harness /
    Trainer ratio that any loop built on these kernels could reach.

and prints a table and the ratios against the goals (6N-MFU >= 60% of the measured fp32 peak,
harness/Trainer >= 1.3x, bf16/fp32 >= 1.3x), met or not.

Tokens per step are counted as batch x seq_len for both loops: the harness feeds seq_len inputs
and scores seq_len targets; the Trainer is given the same seq_len inputs as input_ids and labels
(it shifts internally, scoring seq_len - 1), so both do the same forward and backward work.

    OMP_NUM_THREADS=1 python bench/bench_train.py              # ~1-2 min
    OMP_NUM_THREADS=1 python bench/bench_train.py --quick      # under a minute
    OMP_NUM_THREADS=1 python bench/bench_train.py --compile    # (f): + torch.compile, ~3 min

(c) needs accelerate (`pip install accelerate`; transformers' Trainer requires it), which the
harness itself does not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import steady_rate

from harness.config import DataConfig, ExecutionConfig, TrainConfig
from harness.data import SequenceOrder, gather_windows, prepare_corpus
from harness.grid import RunSpec
from harness.hardware import measure_cpu_matmul_flops
from harness.model import ModelShape, build_model, count_params, default_ffn_dim
from harness.schedules import peak_lr, warmup_steps
from harness.train import train

SEQ_LEN, BATCH = 128, 8


def shape(n_layer: int, n_embd: int) -> ModelShape:
    return ModelShape(
        arch="llama",
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_embd // 16,
        vocab_size=256,
        seq_len=SEQ_LEN,
        ffn_dim=default_ffn_dim("llama", n_embd),
    )


def run_spec(model: ModelShape, n_tokens: int, precision: str) -> RunSpec:
    return RunSpec(
        experiment="bench",
        model=model,
        # One small held-out batch: the last step's evaluation stays out of the timing's way.
        data=DataConfig(corpus="shakespeare", seq_len=SEQ_LEN, eval_tokens=BATCH * SEQ_LEN),
        train=TrainConfig(
            batch_size=BATCH,
            lr=4e-3,
            lr_ref_width=64,
            lr_width_exponent=1.0,
            evals_per_run=1,
            precision=precision,  # type: ignore[arg-type]
            checkpoint_every_steps=0,
        ),
        n_tokens=n_tokens,
        seed=0,
    )


def bench_harness(root: Path, model: ModelShape, n_tokens: int, precision: str, threads: int,
                  skip: int, compile: bool = False) -> dict:  # fmt: skip
    spec = run_spec(model, n_tokens, precision)
    run_dir = root / "bench" / "runs" / f"{spec.run_id}{'-compiled' if compile else ''}"
    execution = ExecutionConfig(
        threads=threads, progress=False, results_dir=str(root), compile=compile
    )
    result = train(spec, run_dir, execution=execution)
    assert result is not None and result.status == "done", result
    return {
        "spec": spec,
        "steady": steady_rate(run_dir, skip),
        "whole": result.tokens_per_s,
        "mfu": result.mfu,
        "loss": result.train_loss,
        "steps": result.steps,
    }


def bench_trainer(root: Path, spec: RunSpec, threads: int, skip: int) -> dict:
    import transformers
    from torch.utils.data import Dataset

    corpus = prepare_corpus(spec.data, root / "bench" / "cache")
    tokens = corpus.train_tokens()
    order = SequenceOrder(corpus.n_train_tokens, SEQ_LEN, spec.seed)
    n_seq = spec.n_tokens // SEQ_LEN
    windows = gather_windows(tokens, order.window_starts(0, n_seq), SEQ_LEN)

    class Windows(Dataset):
        def __len__(self) -> int:
            return n_seq

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            x = torch.from_numpy(windows[i, :-1])
            return {"input_ids": x, "labels": x}

    torch.manual_seed(spec.seed)
    model = build_model(spec.model)
    step_times: list[float] = []

    class Clock(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            step_times.append(time.perf_counter())

    args = transformers.TrainingArguments(
        output_dir=str(root / "trainer"),
        per_device_train_batch_size=BATCH,
        learning_rate=peak_lr(spec),
        lr_scheduler_type="cosine",
        warmup_steps=warmup_steps(spec),
        weight_decay=spec.train.weight_decay,
        adam_beta1=spec.train.beta1,
        adam_beta2=spec.train.beta2,
        max_grad_norm=spec.train.grad_clip,
        max_steps=spec.n_steps,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        use_cpu=True,
        disable_tqdm=True,
        seed=spec.seed,
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=Windows(), callbacks=[Clock()]
    )
    torch.set_num_threads(threads)  # Trainer may touch it; keep the run's thread count
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    measured = len(step_times) - 1 - skip
    steady = measured * BATCH * SEQ_LEN / (step_times[-1] - step_times[skip])
    return {
        "steady": steady,
        "whole": spec.n_steps * BATCH * SEQ_LEN / wall,
        "loss": out.training_loss,
        "steps": len(step_times),
    }


def best_seconds(step: Callable[[], None], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``step``, after one untimed warm-up call."""
    step()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_seconds_per_step(model: ModelShape, threads: int, repeats: int) -> tuple[float, float]:
    """The best time of one training step's GEMMs alone, and their FLOPs.

    Every nn.Linear of the model (the lm head included) does three matmuls per step on the
    batch's BATCH x SEQ_LEN tokens: the forward x W^T, and in the backward dY W and dY^T x.
    Timed at those exact shapes with random data, with nothing else in between: no attention,
    norms, activations, optimizer or autograd. 6 N tokens over this time is an upper bound on
    the 6N-MFU any loop could reach with these kernels on these shapes.
    """
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    n_tok = BATCH * SEQ_LEN
    shapes = [
        (m.in_features, m.out_features)
        for m in build_model(model).modules()
        if isinstance(m, torch.nn.Linear)
    ]
    operands = [
        (torch.randn(n_tok, i, generator=gen), torch.randn(o, i, generator=gen),
         torch.randn(n_tok, o, generator=gen))
        for i, o in shapes
    ]  # fmt: skip

    def step() -> None:
        for x, w, dy in operands:
            torch.mm(x, w.t())
            torch.mm(dy, w)
            torch.mm(dy.t(), x)

    return best_seconds(step, repeats), float(sum(6 * n_tok * i * o for i, o in shapes))


def attention_seconds_per_step(model: ModelShape, threads: int, repeats: int) -> dict[str, float]:
    """The best time of one training step's causal attention alone, by each CPU kernel.

    n_layer forward and backward passes of attention over BATCH x n_head x SEQ_LEN x head-width
    query, key and value tensors (what the model hands its attention function), with nothing
    else in between; the projections around it are (e)'s GEMMs. Every kernel computes the same
    function (checked against the first within 1e-5)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.set_num_threads(threads)
    head_dim = model.n_embd // model.n_head
    gen = torch.Generator().manual_seed(0)
    q, k, v, grad_out = (
        torch.randn(BATCH, model.n_head, SEQ_LEN, head_dim, generator=gen) for _ in range(4)
    )
    causal = torch.full((SEQ_LEN, SEQ_LEN), -math.inf).triu(1)

    def flash(q, k, v):  # noqa: ANN001, ANN202
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def math_backend(q, k, v):  # noqa: ANN001, ANN202
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def matmul_softmax(q, k, v):  # noqa: ANN001, ANN202
        scores = q @ k.transpose(-1, -2) * head_dim**-0.5 + causal
        return torch.softmax(scores, dim=-1) @ v

    kernels = {"SDPA flash": flash, "SDPA math": math_backend, "matmul-softmax": matmul_softmax}
    reference = flash(q, k, v)
    seconds = {}
    for name, attend in kernels.items():
        assert torch.allclose(attend(q, k, v), reference, atol=1e-5), name
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]

        def step(attend=attend, leaves=leaves) -> None:  # noqa: ANN001
            for _ in range(model.n_layer):
                attend(*leaves).backward(grad_out)

        seconds[name] = best_seconds(step, repeats)
    return seconds


def cpu_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="shorter runs: under a minute")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also the harness with execution.compile = true (a minute or more of compiling)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    n_main = 60 * BATCH * SEQ_LEN if args.quick else 200 * BATCH * SEQ_LEN
    n_bf16 = 30 * BATCH * SEQ_LEN if args.quick else 100 * BATCH * SEQ_LEN
    skip = 5 if args.quick else 10
    seconds = 0.3 if args.quick else 1.0
    bf16_ok = cpu_bf16_supported()

    print(f"torch {torch.__version__}, {args.threads} thread(s), cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 {'yes' if bf16_ok else 'no'}, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    peak32 = measure_cpu_matmul_flops(args.threads, torch.float32, seconds)
    peak16 = measure_cpu_matmul_flops(args.threads, torch.bfloat16, seconds) if bf16_ok else None

    main_shape = shape(4, 96)
    n = count_params(main_shape).non_embedding
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        h = bench_harness(root, main_shape, n_main, "fp32", args.threads, skip)
        t = bench_trainer(root, h["spec"], args.threads, skip)
        c = None
        if args.compile:  # compiling happens in the first step, inside the skipped warm-up
            c = bench_harness(root, main_shape, n_main, "fp32", args.threads, skip, compile=True)
        b32 = b16 = None
        if bf16_ok:
            small = shape(2, 128)
            b32 = bench_harness(root, small, n_bf16, "fp32", args.threads, skip)
            b16 = bench_harness(root, small, n_bf16, "bf16", args.threads, skip)

    gemm_s, gemm_flops = gemm_seconds_per_step(main_shape, args.threads, 10 if args.quick else 30)
    attn_s = attention_seconds_per_step(main_shape, args.threads, 10 if args.quick else 30)
    step_s = BATCH * SEQ_LEN / h["steady"]
    mfu = 6 * n * h["steady"] / peak32
    print()
    print(f"(a) peak matmul 1024^3, fp32: {peak32 / 1e9:8.1f} GFLOP/s", end="")
    print(f"; bf16: {peak16 / 1e9:.1f} GFLOP/s" if peak16 else "; bf16: n/a")
    print(f"model llama L4 d96 h6 ffn {main_shape.ffn_dim}: N = {n:,} non-embedding, "
          f"batch {BATCH} x {SEQ_LEN}, {h['steps']} steps, "
          f"tokens/s after {skip} warm-up steps")  # fmt: skip
    print(f"{'':34}{'tokens/s':>10}{'whole run':>11}{'6N-MFU':>8}")
    rows = [
        ("(b) harness.train, fp32", h, 6 * n * h["steady"] / peak32),
        ("(c) transformers Trainer, fp32", t, 6 * n * t["steady"] / peak32),
    ]
    if c:
        rows.append(("(f) harness, torch.compile, fp32", c, 6 * n * c["steady"] / peak32))
    if b32 and b16:
        n_small = count_params(b32["spec"].model).non_embedding
        rows += [
            ("(d) harness L2 d128, fp32", b32, 6 * n_small * b32["steady"] / peak32),
            ("(d) harness L2 d128, bf16 autocast", b16, 6 * n_small * b16["steady"] / peak16),
        ]
    for name, r, m in rows:
        print(f"{name:34}{r['steady']:>10,.0f}{r['whole']:>11,.0f}{m:>8.1%}")
    print()

    def verdict(value: float, goal: float) -> str:
        return "met" if value >= goal else "NOT met"

    ratio_t = h["steady"] / t["steady"]
    print(f"harness 6N-MFU vs measured fp32 peak: {mfu:.1%}  (goal >= 60%: {verdict(mfu, 0.6)})")
    print(f"(e) the step's GEMMs alone at its shapes: {gemm_s * 1e3:.1f} ms of the harness's "
          f"{step_s * 1e3:.1f} ms step ({gemm_s / step_s:.0%}); they run at "
          f"{gemm_flops / gemm_s / peak32:.0%} of the 1024^3 peak, so no loop with these kernels "
          f"exceeds 6N-MFU {6 * n * BATCH * SEQ_LEN / gemm_s / peak32:.0%} here")  # fmt: skip
    best_attn = min(attn_s, key=attn_s.get)
    floor_s = gemm_s + attn_s[best_attn]
    print("(g) the step's attention alone, forward and backward, all layers: "
          + ", ".join(f"{k} {t * 1e3:.1f} ms" for k, t in attn_s.items()))  # fmt: skip
    print(f"    GEMMs + {best_attn} = {floor_s * 1e3:.1f} ms of the {step_s * 1e3:.1f} ms step "
          f"({floor_s / step_s:.0%}), with every norm, activation, rotary, loss and optimizer "
          f"kernel free: 6N-MFU {6 * n * BATCH * SEQ_LEN / floor_s / peak32:.0%} at most, "
          f"{BATCH * SEQ_LEN / floor_s / t['steady']:.2f}x the Trainer at most")  # fmt: skip
    print(f"harness / Trainer tokens/s:           {ratio_t:.2f}x (goal >= 1.3x: "
          f"{verdict(ratio_t, 1.3)})")  # fmt: skip
    if c:
        ratio_c = c["steady"] / t["steady"]
        compile_s = c["steps"] * BATCH * SEQ_LEN * (1 / c["whole"] - 1 / c["steady"])
        print(f"compiled harness / Trainer tokens/s:  {ratio_c:.2f}x (goal >= 1.3x: "
              f"{verdict(ratio_c, 1.3)}); compiled / eager {c['steady'] / h['steady']:.2f}x; "
              f"compiling cost about {compile_s:.0f} s of the steps (its recompile for evaluation "
              "mode is in eval_s, not counted)")  # fmt: skip
    if b32 and b16:
        ratio_b = b16["steady"] / b32["steady"]
        print(f"bf16 / fp32 tokens/s at d128:         {ratio_b:.2f}x (goal >= 1.3x: "
              f"{verdict(ratio_b, 1.3)})")  # fmt: skip
    else:
        print("bf16 / fp32: skipped, torch reports no CPU bf16 support")
    print(f"train loss (sanity only, not comparable): harness last log interval {h['loss']:.3f}, "
          f"Trainer whole-run mean {t['loss']:.3f}")  # fmt: skip
    print(f"result.json mfu of (b), whole run against the cached peak: {h['mfu']:.1%}")
    print(json.dumps({"load_after": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
