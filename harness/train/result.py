"""A finished run's record: `RunResult`, written as result.json by `finish` after the last
step (or the divergence), with the final weights of a done run."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from harness import __version__
from harness.device import datasheet_peak, precision_name
from harness.distributed import barrier
from harness.flops import training_flops
from harness.hardware import measure_cpu_matmul_flops, mfu
from harness.model import count_params, flops_per_token
from harness.schedules import peak_lr
from harness.train.checkpoint import torch_save_atomic
from harness.train.run import Run
from harness.train.state import Progress

__all__ = ["RunResult", "finish", "git_sha"]


@dataclass(frozen=True)
class RunResult:
    """What result.json records about a finished run."""

    run_id: str
    status: Literal["done", "diverged"]
    val_loss: float | None
    val_bpb: float | None
    train_loss: float | None
    steps: int
    n_tokens: int
    n_unique_tokens: int
    epochs: float
    peak_lr: float
    wall_s: float
    tokens_per_s: float
    """Training throughput: trained_tokens over the step loop's time, wall_s less eval_s (the
    held-out evaluations, which cost short runs up to half their time, are not training)."""
    device: str
    precision: str
    reason: str
    harness_version: str
    git_sha: str
    peak_flops: float | None
    """Peak FLOP/s of the device at the run's precision: the datasheet's on a known GPU (None on
    an unknown one), the measured matmul rate with the run's threads and dtype on a CPU."""
    mfu: float | None
    """6 N tokens_per_s / (peak_flops world_size) (N non-embedding parameters): tokens_per_s
    counts every device's tokens, so the peak is every device's too. Computed from tokens per
    second of the whole update, it is right under gradient accumulation as well (nanoGPT's
    MFU counted one micro-batch per update, PR #619)."""
    mfu_total: float | None
    """flops_per_token(shape).total tokens_per_s / (peak_flops world_size) (every matmul,
    Chinchilla app. F)."""
    branched_from: str | None = None
    """WSD trunk sharing (harness.wsd): the run_id of the trunk whose checkpoint this run
    started from at its decay start; None when it trained from step 0 itself."""
    trained_tokens: int = 0
    """Tokens this run trained itself: n_tokens less what it inherited from its trunk. wall_s
    and tokens_per_s are this part's."""
    trained_flops: float = 0.0
    """6 N trained_tokens: the FLOPs actually spent on this run (6 N n_tokens is its D's)."""
    started_unix: float = 0.0
    """When this process entered train() for the run (Unix seconds): with setup_s, wall_s and
    finish_s, where a grid's time goes between runs (bench/bench_overhead.py)."""
    setup_s: float = 0.0
    """Seconds from entering train() to the first step in this process: opening the corpus, the
    held-out batch, building the model, loading a checkpoint."""
    eval_s: float = 0.0
    """Seconds of wall_s spent in held-out evaluations (task evaluations included)."""
    tasks_s: float = 0.0
    """Seconds of wall_s (and of eval_s) spent scoring [eval]'s tasks."""
    finish_s: float = 0.0
    """Seconds after the last step until result.json: the peak-FLOP/s measurement (once per
    process on a CPU) and saving model.pt."""
    data_s: float = 0.0
    """Seconds of wall_s spent making the training batches: reading the token windows from the
    memory-mapped corpus, the objective's inputs and targets, the copy to the device."""
    world_size: int = 1
    """Devices (processes) the run trained on at once (execution.devices_per_run)."""
    parallel: str = "none"
    """How it spanned them: 'none' (one device), 'ddp' or 'fsdp' (execution.parallel)."""
    skipped_checkpoints: list[str] = dataclasses.field(default_factory=list)
    """Checkpoints found unreadable at a resume and passed over ("step_....pt: why"): a
    tampered or torn file is never loaded, and the run went on from an older one or from the
    start."""


def git_sha() -> str:
    """The harness checkout's commit, or '' where it is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def finish(run: Run, p: Progress, started_unix: float, setup_s: float) -> RunResult:
    """After the last step (or the divergence): model.pt of a done run, result.json, and the
    checkpoints dropped (a finished run needs no resume state; the store stays small)."""
    spec, device, compute_dtype = run.spec, run.device, run.compute_dtype
    wall_train = p.wall_s()
    tokens_done = run.batches.tokens_done(p.step)
    trained_tokens = tokens_done - p.branch_step * run.batches.batch_size * run.batches.seq_len
    n_unique = min(spec.n_tokens, run.batches.order.n_unique_tokens)
    eval_total = p.eval_before + p.eval_s
    step_loop_s = wall_train - eval_total
    tokens_per_s = round(trained_tokens / step_loop_s, 1) if step_loop_s > 0 else 0.0
    precision = precision_name(compute_dtype)
    main, n_dev = run.world.main, run.world.size
    if p.status == "done":
        # The final weights (no optimizer state), before result.json: a done run always has
        # them. harness.finetune starts from them ([downstream]).
        weights, _ = run.learner.full_state(with_optimizer=False)
        if main:
            torch_save_atomic(weights, run.dir.model_pt, "the final weights")
    # Measured after the timed loop, with its own generator: it changes no result but these.
    # One device's peak (rank 0's); MFU divides by it times the device count.
    device_peak = (
        datasheet_peak(device, compute_dtype)
        if device.type == "cuda"
        else measure_cpu_matmul_flops(torch.get_num_threads(), compute_dtype or torch.float32)
        if main
        else None
    )
    device_peak = float(f"{device_peak:.4g}") if device_peak is not None else None
    all_peak = device_peak * n_dev if device_peak is not None else None
    result = RunResult(
        run_id=spec.run_id,
        status=p.status,
        val_loss=p.val_loss if p.status == "done" else None,
        val_bpb=p.val_bpb if p.status == "done" else None,
        train_loss=p.train_loss,
        steps=p.step,
        n_tokens=spec.n_tokens,
        n_unique_tokens=n_unique,
        epochs=spec.n_tokens / n_unique,
        peak_lr=peak_lr(spec),
        wall_s=round(wall_train, 3),
        tokens_per_s=tokens_per_s,
        device=str(device)
        + (f":{torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        precision=precision,
        reason=p.reason,
        harness_version=__version__,
        git_sha=git_sha(),
        peak_flops=device_peak,
        mfu=mfu(flops_per_token(spec.model).six_n, tokens_per_s, all_peak),
        mfu_total=mfu(flops_per_token(spec.model).total, tokens_per_s, all_peak),
        branched_from=p.branched_from,
        trained_tokens=trained_tokens,
        trained_flops=float(training_flops(count_params(spec.model).non_embedding, trained_tokens)),
        started_unix=round(started_unix, 6),
        setup_s=round(setup_s, 3),
        eval_s=round(eval_total, 3),
        tasks_s=round(p.tasks_before + p.tasks_s, 3),
        data_s=round(p.data_before + p.data_s, 3),
        # Since the last step (t_loop + the loop's own time): model.pt, the CPU peak.
        finish_s=round(time.perf_counter() - (p.t_loop + wall_train - p.wall_before), 3),
        world_size=n_dev,
        parallel=run.learner.parallel,
        skipped_checkpoints=list(p.skipped_checkpoints),
    )
    if main:
        run.dir.write_result(asdict(result))
        for path in run.dir.checkpoints():
            path.unlink(missing_ok=True)
        run.tracker.finish(asdict(result))
    barrier()  # the run is over for every rank once its result is written
    return result
