"""One attempt at a run, and its divergence retries: what every scheduler does with a run.

`harness run`'s workers (`local.py`, a process pool) and `harness submit`'s jobs (`job.py`,
submitit) only decide where and when a run trains; what happens to it is here, once:

1. `attempt`: take the run directory's lock (another process holding it: outcome ``held``), skip
   a run that has finished meanwhile, set an earlier failure aside, train (resuming from the
   newest checkpoint), and record a failure in result.json with its one-line error.
2. `attempts`: the run, then while it diverges its retries at a lower learning rate, each a run
   of its own (`retry.start_retry`, ``execution.diverge_retries`` at most).

A stop (a signal, a preemption) ends training at a step boundary with a checkpoint; the outcome
is ``interrupted``, unless the scheduler's ``after_stop`` says to train on (a SLURM job that got
a stray SIGTERM and was not killed).
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.config import ExecutionConfig
from harness.execute.locks import Held, RunLock
from harness.execute.retry import start_retry, unfinished_retries
from harness.grid import RunSpec
from harness.results import ExperimentLayout

__all__ = ["Outcome", "Trainer", "attempt", "attempts", "train_in_process"]

log = logging.getLogger("harness.execute")

Status = Literal["done", "diverged", "failed", "interrupted", "held"]
Trainer = Callable[[RunSpec, Path, ExecutionConfig, Sequence[RunSpec], Callable[[], bool]], Any]
"""(spec, run_dir, execution, branches, should_stop) -> RunResult, or None when stopped with a
checkpoint: `train_in_process`, `ranks.train_on_devices`, a SLURM job's rank 0."""


@dataclass(frozen=True)
class Outcome:
    """How one attempt at one run ended."""

    run_id: str
    status: Status
    """done | diverged | failed | interrupted | held (another process trains it)."""
    val_loss: float | None = None
    wall_s: float = 0.0
    error: str = ""
    """failed: the error's first line; held: who holds the run."""
    note: str = ""
    """What the run's user must know though it finished (an unreadable checkpoint skipped)."""


def train_in_process(
    spec: RunSpec,
    run_dir: Path,
    execution: ExecutionConfig,
    branches: Sequence[RunSpec],
    should_stop: Callable[[], bool],
    corpus: Any = None,
) -> Any:
    """The run in this process (one device): `harness.train.train`, on the corpus the command
    prepared (a `harness.data.Corpus`; None: the run prepares it)."""
    from harness.train import train

    return train(
        spec,
        run_dir,
        execution=execution,
        branches=branches,
        should_stop=should_stop,
        corpus=corpus,
    )


def _ended(run_id: str, result: dict[str, Any]) -> Outcome:
    return Outcome(run_id, result["status"], result.get("val_loss"), result.get("wall_s", 0.0))


def attempt(
    spec: RunSpec,
    layout: ExperimentLayout,
    execution: ExecutionConfig,
    *,
    train: Trainer = train_in_process,
    should_stop: Callable[[], bool] = lambda: False,
    branches: Sequence[RunSpec] = (),
    after_stop: Callable[[RunSpec], bool] | None = None,
    log_path: str = "",
    reraise: bool = False,
) -> Outcome:
    """Train ``spec`` once, under its lock; the outcome.

    Parameters
    ----------
    train : Trainer
        What trains it (one process, several ranks).
    should_stop : callable
        Polled at each step boundary: True stops the run with a checkpoint.
    branches : sequence of RunSpec
        WSD runs this one hands checkpoints to (`harness.wsd`).
    after_stop : callable, optional
        Called after a stop, under the lock: True trains on from the checkpoint.
    log_path : str
        The log a failure record names (default the run's train.log; a job's stderr).
    reraise : bool
        Raise a training error after recording it (a SLURM job fails with it) instead of
        returning a ``failed`` outcome.
    """
    run = layout.run(spec.run_id)
    if should_stop() and (after_stop is None or not after_stop(spec)):
        return Outcome(spec.run_id, "interrupted")  # told to stop first: nothing is touched
    try:
        lock = RunLock(run.path).acquire()
    except Held as held:  # a `harness run` or a job trains it now: never twice at once
        return Outcome(spec.run_id, "held", error=held.holder)
    handler = None
    try:
        handler = run.open_log()
        log.info("run %s: %s starting", spec.run_id, _where())
        done = run.finished()
        if done is not None:  # another process finished it meanwhile
            log.info("run %s is already %s; nothing to do", spec.run_id, done["status"])
            return _ended(spec.run_id, done)
        run.write_spec(spec)
        run.set_aside_failure()
        while True:
            if not should_stop():
                result = train(spec, run.path, execution, branches, should_stop)
                if result is not None:
                    log.info("run %s ended: %s", spec.run_id, result.status)
                    skipped = "; ".join(result.skipped_checkpoints)
                    note = f"skipped unreadable checkpoint(s), never loaded: {skipped}"
                    return Outcome(
                        spec.run_id,
                        result.status,
                        result.val_loss,
                        result.wall_s,
                        note=note if skipped else "",
                    )
                step = run.newest_checkpoint_step()
                log.warning("run %s: checkpoint saved at step %s", spec.run_id, step)
            if after_stop is None or not after_stop(spec):
                return Outcome(spec.run_id, "interrupted")
    except Exception as e:  # noqa: BLE001 - one failing run must not stop the others
        log.error("run %s failed:\n%s", spec.run_id, traceback.format_exc())
        error = f"{type(e).__name__}: {e}".splitlines()[0]
        run.record_failure(error, log=log_path)
        if reraise:
            raise
        return Outcome(spec.run_id, "failed", error=error)
    finally:
        if handler is not None:
            run.close_log(handler)
        lock.release()


def attempts(
    spec: RunSpec,
    layout: ExperimentLayout,
    execution: ExecutionConfig,
    *,
    branches: Sequence[RunSpec] = (),
    on_retry: Callable[[RunSpec, str], None] | None = None,
    **kwargs: Any,
) -> Iterator[Outcome]:
    """``spec``, then while it diverges its retries (`retry.start_retry`): each attempt's
    outcome as it ends. A run found finished is skipped, and its unfinished retry taken up
    (or set up, when a process was killed between the divergence and the retry's set-up).
    ``on_retry(retry, run_id)`` is told of each retry set up; ``kwargs`` go to `attempt`. No
    retry is set up once ``kwargs["should_stop"]()`` says stop: the next command finds it."""
    should_stop: Callable[[], bool] = kwargs.get("should_stop", lambda: False)
    run: RunSpec | None = spec
    done = layout.run(spec.run_id).finished()
    if done is not None:
        yield _ended(spec.run_id, done)
        run = next(iter(unfinished_retries([spec], layout)), None)
        if run is None and done["status"] == "diverged" and not done.get("retried_as"):
            run = start_retry(spec, layout, execution)
            if run is not None and on_retry is not None:
                on_retry(run, spec.run_id)
        branches = ()
    while run is not None:
        outcome = attempt(run, layout, execution, branches=branches, **kwargs)
        yield outcome
        if outcome.status != "diverged" or should_stop():
            return
        retry = start_retry(run, layout, execution)
        if retry is not None:
            log.warning(
                "run %s diverged; retrying it as %s at lr %g",
                run.run_id,
                retry.run_id,
                retry.train.lr,
            )
            if on_retry is not None:
                on_retry(retry, run.run_id)
        run, branches = retry, ()


def _where() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    return f"job {job}" if job else f"pid {os.getpid()}"
