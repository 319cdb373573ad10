"""The training loop: `train(spec, run_dir)` from the run's newest checkpoint to its result.

Each step, top to bottom (`train_step`, then `_loop`): the update's micro-batches forward and
backward at the schedule's learning rate, the optimizer step; after some steps the held-out
evaluation; at each log interval a metrics.csv row and the divergence rule; WSD hand-offs; a
checkpoint when one is due or the process is told to stop.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from harness.config import ExecutionConfig
from harness.data import Corpus
from harness.device import datasheet_peak
from harness.distributed import agree, barrier, from_main, same_everywhere, sum_across
from harness.grid import RunSpec
from harness.model import flops_per_token
from harness.rundir import RunDir
from harness.schedules import spec_lr_at_step
from harness.tracking import RunTracker, open_run
from harness.train.checkpoint import gather, save_checkpoint
from harness.train.handoff import hand_off, pending_handoffs
from harness.train.metrics import append_metrics, truncate_metrics
from harness.train.result import RunResult, finish
from harness.train.run import Run, resume, set_up
from harness.train.state import Progress
from harness.train.task_eval import TaskScore, append_task_rows, truncate_task_rows

__all__ = ["train", "train_step"]


def train(
    spec: RunSpec,
    run_dir: Path,
    *,
    execution: ExecutionConfig | None = None,
    corpus: Corpus | None = None,
    stop_after_steps: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    branches: Sequence[RunSpec] = (),
) -> RunResult | None:
    """Train the run described by ``spec`` in ``run_dir`` and write its result.json.

    ``branches``: shorter WSD runs that differ from this one only in D (`harness.wsd`). When this
    run has done `harness.wsd.decay_start(branch)` updates it writes that branch's resumable
    checkpoint (and its metrics.csv so far) into the branch's run directory, a sibling of
    ``run_dir``, unless the branch is finished or already has a checkpoint that far; training
    the branch afterwards resumes from there and does only its cooldown.

    Resumes from the newest readable checkpoint in ``run_dir/ckpt``. ``stop_after_steps`` ends
    the process's work after that many steps with a checkpoint and returns None (used to
    simulate preemption in tests). ``should_stop`` is polled at each step boundary (the SLURM
    launcher's signal handlers set it): when it says True, save a checkpoint and return None.

    Raises
    ------
    InputError
        ``run_dir`` holds a different run's spec.json.
    """
    t_enter, started_unix = time.perf_counter(), time.time()
    execution = execution or ExecutionConfig()
    run = set_up(spec, RunDir(Path(run_dir)), execution, corpus)
    p = resume(run)
    same_everywhere(p.step, "the step to resume from")  # each rank read the checkpoints
    if run.world.main:
        truncate_metrics(run.dir.metrics_csv, p.step)
        truncate_task_rows(run.dir.tasks_csv, p.step)
        run = dataclasses.replace(run, tracker=_open_tracker(run))
    try:
        return _loop(
            run, p, execution, t_enter, started_unix, stop_after_steps, should_stop, branches
        )
    except BaseException:
        run.tracker.close("failed")
        raise


def train_step(run: Run, p: Progress) -> tuple[float, int]:
    """One AdamW update at ``p.step``: (its learning rate, the tokens it trained, all ranks)."""
    t_data = time.perf_counter()
    micro, n_seq = run.batches.at(p.step)
    p.data_s += time.perf_counter() - t_data
    lr = spec_lr_at_step(run.spec, p.step)
    run.learner.set_lr(lr)
    autocast = run.learner.autocast
    # Each micro-batch's mean loss weighs by its share of the update's scored targets on all
    # ranks, so the gradient is the whole update's mean loss's at any device count and
    # micro-batch size (DDP averages over ranks: hence the factor world size). With one device
    # and one micro-batch the weight is exactly 1: the plain mean loss, bit for bit.
    total = sum_across(torch.stack([n for _, _, n in micro]).sum())
    step_loss = torch.zeros((), dtype=torch.float64, device=run.device)
    for i, (x, y, n) in enumerate(micro):
        with run.learner.sync(last=i == len(micro) - 1):
            with torch.autocast(
                run.device.type, dtype=autocast or torch.float32, enabled=autocast is not None
            ):
                logits = run.learner.forward(input_ids=x).logits
            # Through the module's F (tests wrap F.cross_entropy to record the step losses).
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten()) * (n / total)
            # Dropped before the backward pass, which needs only the log-softmax autograd
            # keeps: held, they would add B x T x V values (4 bytes each in fp32, 2 in bf16)
            # to the step's peak memory (harness.memory).
            del logits
            step_loss += loss.detach()
            (loss * run.world.size).backward()
    if p.initial_loss is None:  # a run's first step: the divergence rule's reference
        p.initial_loss = float(sum_across(step_loss.clone()))
    p.loss_acc += step_loss
    run.learner.step(run.spec.train.grad_clip)
    p.step += 1
    p.steps_this_process += 1
    p.loss_count += 1
    return lr, n_seq * run.batches.seq_len


def _loop(
    run: Run,
    p: Progress,
    execution: ExecutionConfig,
    t_enter: float,
    started_unix: float,
    stop_after_steps: int | None,
    should_stop: Callable[[], bool] | None,
    branches: Sequence[RunSpec],
) -> RunResult | None:
    """The steps of `train` from where the run resumes, then its result; None when stopped
    with a checkpoint."""
    spec = run.spec
    handoffs = from_main(pending_handoffs(spec, run.dir, branches, p.step))
    p.t_loop = p.t_last_ckpt = time.perf_counter()
    setup_s = p.t_loop - t_enter
    bar = _progress_bar(run, execution, p.step)

    run.learner.model.train()
    while p.step < spec.n_steps:
        lr, n_tokens = train_step(run, p)
        if bar is not None:
            bar.update(n_tokens)
        evaluated = p.step in run.evaluation.at
        if evaluated:
            _evaluate(run, p)
        scores = _score_tasks(run, p)  # at evaluation steps or the last: always a log row
        if evaluated or p.step % run.log_every == 0 or p.step == spec.n_steps:
            _log_row(run, p, lr, evaluated, scores)
        if p.status == "diverged":
            break
        for branch in handoffs.pop(p.step, ()):
            state = gather(run.components(p))
            if run.world.main:
                hand_off(branch, run.dir.sibling(branch.run_id), state, run.dir)
        # stop_after_steps first: should_stop is not polled once the process is done anyway.
        stop_now = (stop_after_steps is not None and p.steps_this_process >= stop_after_steps) or (
            should_stop is not None and should_stop()
        )
        due = run.checkpointing.due(p.step, p.t_last_ckpt, stop_now)
        if run.world.size > 1:  # a signal on one rank, or one rank's clock, stops them all
            stop_now, due = agree(stop_now, due)
        if due:
            state = gather(run.components(p))
            if run.world.main:
                # Through this module's global: tests replace it to record the cadence's saves.
                save_checkpoint(run.dir, state, run.checkpointing.keep)
            barrier()  # the checkpoint is whole before any rank goes on (or stops)
            p.t_last_ckpt = time.perf_counter()
            if stop_now:
                if bar is not None:
                    bar.close()
                run.tracker.close("stopped")
                return None

    if bar is not None:
        bar.close()
    return finish(run, p, started_unix, setup_s)


def _evaluate(run: Run, p: Progress) -> None:
    """The held-out loss after this step; a non-finite one ends the run as diverged (after its
    log row, which every evaluation step has)."""
    p.val_loss, p.val_bpb, seconds = run.evaluation.run()
    p.eval_s += seconds
    reason = run.divergence.non_finite_val(p.val_loss, p.step)
    if reason:
        p.status, p.reason = "diverged", reason


def _score_tasks(run: Run, p: Progress) -> list[TaskScore]:
    """[eval]'s tasks after this step where due (not after a divergence), written to the run's
    tasks.csv by rank 0; the scores (none on ranks that do not score)."""
    if run.tasks is None or p.step not in run.tasks.at or p.status != "done":
        return []
    scores, seconds = run.tasks.run()
    p.tasks_s += seconds
    p.eval_s += seconds  # not training: tokens_per_s leaves it out
    if run.world.main:
        append_task_rows(run.dir.tasks_csv, p.step, run.batches.tokens_done(p.step), scores)
    return scores


def _log_row(
    run: Run, p: Progress, lr: float, evaluated: bool, scores: Sequence[TaskScore] = ()
) -> None:
    """Close a log interval: its mean training loss as a metrics.csv row (with the task scores
    of this step), then the divergence rule on it. A non-finite mean ends the run without a row
    (result.json keeps the last finite mean)."""
    mean_loss = float(sum_across(p.loss_acc)) / p.loss_count  # every rank's share of each step
    reason = run.divergence.non_finite_train(mean_loss, p.step, p.loss_count)
    if reason:
        p.status, p.reason = "diverged", reason
        return
    p.train_loss = mean_loss
    if run.world.main:
        row = {
            "step": p.step,
            "tokens": run.batches.tokens_done(p.step),
            "train_loss": p.train_loss,
            "val_loss": p.val_loss if evaluated else None,
            "lr": lr,
            "wall_s": round(p.inherited_wall + p.wall_s(), 3),
            **{s.column: s.value for s in scores},
        }
        append_metrics(run.dir.metrics_csv, row, run.metrics_columns)
        run.tracker.log_row(row)  # after the file: a reader of both sees the file first
    p.loss_acc.zero_()
    p.loss_count = 0
    if run.divergence.factor > 0 and p.status == "done":
        p.over_count, reason = run.divergence.blow_up(
            p.train_loss, p.initial_loss, p.over_count, p.step
        )
        if reason:
            p.status, p.reason = "diverged", reason


def _progress_bar(run: Run, execution: ExecutionConfig, step: int) -> Any:
    """A tqdm bar over the run's tokens where execution.progress asks for one, else None."""
    if not execution.progress or not run.world.main:
        return None
    from tqdm.auto import tqdm

    spec = run.spec
    return tqdm(
        total=spec.n_tokens,
        initial=run.batches.tokens_done(step),
        unit="tok",
        unit_scale=True,
        desc=f"run {spec.run_id} L{spec.model.n_layer} d{spec.model.n_embd}",
        position=1,
        leave=False,
        dynamic_ncols=True,
    )


def _open_tracker(run: Run) -> RunTracker:
    """Rank 0's tracker ([tracking]; harness.tracking), after metrics.csv is cut back to the
    step the run resumes from. mfu per row only where the devices' peak is a datasheet's."""
    one = datasheet_peak(run.device, run.compute_dtype)
    peak = one * run.world.size if one is not None else None
    return open_run(
        run.spec,
        run.dir.path,
        flops_per_token=flops_per_token(run.spec.model).six_n,
        peak_flops=peak,
    )
