"""The body of a SLURM job: its units of work one after another, surviving preemption.

A job trains one unit (a run, or a WSD trunk and its branches) or, with ``cluster.runs_per_job``,
several small units packed into one allocation. Each run trains under its run directory's lock
(`locks.RunLock`), so a job never trains a run that a `harness run` or another job holds, and
resumes from the newest checkpoint in the run directory, never from submitit's pickle. A run
that diverges is followed, in the same job, by its retry at a lower learning rate (the policy
of `harness.execute.retry`, the same as `harness run`'s).

Signals (delivered to the Python process by srun):

- the preemption/time-limit signal (USR2, ``sbatch --signal=USR2@90``): a flag that
  `harness.train.train` polls at each step boundary, where it saves a checkpoint and returns
  None; then submitit's own handler runs: it counts timeouts, pickles `checkpoint()` (this
  object and its arguments, nothing else) and requeues the job (``scontrol requeue``).
- SIGTERM (``scancel``, ``scontrol requeue``, preemption with a grace time): checkpoint at the
  next step boundary and wait for SLURM's kill, training no step that would be lost.

However the job restarts, finished runs are skipped, a diverged run's unfinished retry is picked
up, and the other runs resume: no finished step is trained twice.

A job of several tasks (cluster.gpus_per_run or tasks_per_run > 1, nodes_per_run) trains each
run on all of them through torch.distributed: every task joins one process group (env://, set
from SLURM's variables by submitit's TorchDistributedEnvironment). Task 0 does what a job does
(locks, retries, records) and tells the others, by a broadcast, each run to train with it; they
train in step with it until it says the job is over. A signal reaches every task; the ranks
agree to checkpoint at one step (`harness.distributed.agree`), and task 0 requeues the job.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from harness.atomic import atomic_write_json
from harness.config import ExecutionConfig
from harness.execute.attempt import Trainer, attempts, train_in_process
from harness.execute.status import jobs_lock, read_jobs
from harness.grid import RunSpec, spec_from_dict
from harness.results import ExperimentLayout

__all__ = ["TERM_WAIT_S", "TrainJob"]

# After SIGTERM and a checkpoint, wait this long to be killed (SLURM's KillWait, 30 s by default)
# before taking the signal for a stray one and training on.
TERM_WAIT_S = 180.0

log = logging.getLogger("harness.execute")


class _Requeue(Exception):
    """The requeue signal came: the run stopped at a step boundary with a checkpoint."""


class _HeldElsewhere(RuntimeError):
    """Another process holds the run's lock: it trains the run, this job leaves it."""


class TrainJob(submitit.helpers.Checkpointable):
    """One SLURM job: ``units`` (lists of run specs; a WSD trunk first, then its branches).

    Returns one ``{"run_id", "status", "val_loss", "wall_s"}`` per run trained or found
    finished, retries included. A run that fails is recorded in its result.json and does not
    stop the others (a branch whose hand-off never came trains alone, from step 0); the job
    then fails at the end, with that run's own error when it is the only one.
    """

    def __call__(
        self,
        units: list[list[dict[str, Any]]],
        results_root: str,
        execution: dict[str, Any],
        corpus: Any = None,
    ) -> list[dict[str, Any]]:
        """``corpus``: the `harness.data.Corpus` `harness submit` prepared (None: each run
        prepares it)."""
        from harness.config import build_section

        exe = build_section(ExecutionConfig, execution, "execution", "launcher")
        if exe.threads == 0 and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
            exe = dataclasses.replace(exe, threads=int(os.environ["SLURM_CPUS_PER_TASK"]))
        if exe.threads > 0:  # before torch starts its OpenMP pool
            os.environ["OMP_NUM_THREADS"] = str(exe.threads)
        layout = ExperimentLayout(Path(results_root))
        try:
            stderr = str(submitit.JobEnvironment().paths.stderr)
        except Exception:  # noqa: BLE001 - not inside a submitit job (a direct call)
            stderr = ""
        flags = {"requeue": False, "term": False}
        usr_sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)

        def on_usr(signum: int, frame: Any) -> None:
            flags["requeue"] = True
            log.warning(
                "got %s; checkpointing at the next step to be requeued", signal.Signals(signum).name
            )

        def on_term(signum: int, frame: Any) -> None:
            flags["term"] = True
            log.warning("got SIGTERM; checkpointing at the next step")

        in_main = threading.current_thread() is threading.main_thread()
        requeue_handler = signal.getsignal(usr_sig) if in_main else None
        term_handler = signal.getsignal(signal.SIGTERM) if in_main else None
        if in_main:
            signal.signal(usr_sig, on_usr)
            signal.signal(signal.SIGTERM, on_term)
        train: Trainer = functools.partial(train_in_process, corpus=corpus)
        group = _Group.join(exe, train)
        if group is not None and group.rank > 0:
            try:
                return group.follow(layout, exe, flags)
            finally:
                group.leave()
        try:
            trainer = group.lead if group is not None else train
            return self._lead(
                units, layout, exe, flags, stderr, trainer, group, requeue_handler, usr_sig
            )
        finally:
            if group is not None:
                group.end()
            if in_main:
                signal.signal(usr_sig, requeue_handler)
                signal.signal(signal.SIGTERM, term_handler)

    def _lead(
        self,
        units: list[list[dict[str, Any]]],
        layout: ExperimentLayout,
        exe: ExecutionConfig,
        flags: dict[str, bool],
        stderr: str,
        trainer: Trainer,
        group: _Group | None,
        requeue_handler: Any,
        usr_sig: int,
    ) -> list[dict[str, Any]]:
        """The job's own work (task 0 of several): its units, retries, and the requeue."""
        out: list[dict[str, Any]] = []
        failures: list[tuple[str, Exception]] = []
        stopped: str | None = None  # the run_id the requeue signal stopped
        for unit in units:
            specs = [spec_from_dict(d) for d in unit]
            for i, spec in enumerate(specs):
                branches = specs[1:] if i == 0 else []
                try:
                    out.extend(
                        _train_with_retries(spec, branches, layout, exe, flags, stderr, trainer)
                    )
                except _Requeue as stop:
                    stopped = stop.args[0]
                    break
                except Exception as e:  # noqa: BLE001 - recorded in its result.json
                    failures.append((spec.run_id, e))
                    if group is not None:
                        # The other tasks may wait in a collective of the failed run: the job
                        # ends here (srun's --kill-on-bad-exit stops them), and `harness submit`
                        # resubmits what it did not finish.
                        group.broken = True
                        raise
            if stopped is not None:
                break
        if stopped is not None:
            # Stopped on the signal with a checkpoint at a step boundary: submitit's handler
            # counts timeouts, pickles checkpoint() and requeues (then exits).
            if callable(requeue_handler):
                try:
                    requeue_handler(usr_sig, None)
                except submitit.core.utils.UncompletedJobError as e:
                    layout.run(stopped).record_failure(
                        f"{e} `harness submit` resumes it from its checkpoint", log=stderr
                    )
                    raise
            raise RuntimeError(
                f"run {stopped} stopped on a signal with a checkpoint but "
                "was not requeued; `harness submit` resumes it"
            )
        if len(failures) == 1:
            raise failures[0][1]
        if failures:
            raise RuntimeError(
                f"{len(failures)} runs of this job failed: "
                + "; ".join(f"{r}: {type(e).__name__}: {e}".splitlines()[0] for r, e in failures)
            )
        return out


class _Group:
    """The job's tasks as one torch.distributed process group (None for a one-task job)."""

    def __init__(self, rank: int, train: Trainer) -> None:
        self.rank = rank
        self.train = train
        self.broken = False  # a run failed on task 0: no broadcast pairs with the others now

    @classmethod
    def join(cls, exe: ExecutionConfig, train: Trainer) -> _Group | None:
        try:
            env = submitit.JobEnvironment()
            n_tasks = env.num_tasks
        except Exception:  # noqa: BLE001 - not inside a submitit job (a direct call)
            return None
        if n_tasks <= 1:
            return None
        import datetime

        import torch
        import torch.distributed as dist

        # All of the node's GPUs stay visible: rank r takes cuda:LOCAL_RANK (harness.train).
        submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True
        )
        cuda = exe.device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(env.local_rank)
        # A rank that fails leaves the others waiting in a collective: the timeout ends them.
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            init_method="env://",
            timeout=datetime.timedelta(minutes=10),
        )
        log.info("task %d of %d joined the run's process group", env.global_rank, n_tasks)
        return cls(env.global_rank, train)

    @staticmethod
    def _say(message: list[Any]) -> list[Any]:
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def lead(
        self,
        spec: RunSpec,
        path: Path,
        exe: ExecutionConfig,
        branches: list[RunSpec],
        should_stop: Callable[[], bool],
    ) -> Any:
        """Task 0's train(): the others are told to train the same run with it."""
        from harness.config import to_dict

        self._say(["train", to_dict(spec), str(path), [to_dict(b) for b in branches]])
        return self.train(spec, path, exe, branches, should_stop)

    def follow(
        self, layout: ExperimentLayout, exe: ExecutionConfig, flags: dict[str, bool]
    ) -> list[dict[str, Any]]:
        """A task other than 0: train each run task 0 names, until it says the job is over."""
        while True:
            message = self._say([])
            if message[0] != "train":
                return []
            spec, path = spec_from_dict(message[1]), Path(message[2])
            branches = [spec_from_dict(b) for b in message[3]]
            flags["term"] = False  # task 0 trains on after a stray SIGTERM: so does this one
            result = self.train(
                spec, path, exe, branches, lambda: flags["requeue"] or flags["term"]
            )
            if result is None:
                log.warning("task %d: run %s stopped with its checkpoint", self.rank, spec.run_id)

    def end(self) -> None:
        """Task 0 is done: the others leave (best effort; a failed collective ends them)."""
        try:
            if not self.broken:
                self._say(["end"])
        except Exception:  # noqa: BLE001 - the group is broken: the timeout ends the others
            log.warning("could not tell the other tasks the job is over")
        self.leave()

    def leave(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _train_with_retries(
    spec: RunSpec,
    branches: list[RunSpec],
    layout: ExperimentLayout,
    exe: ExecutionConfig,
    flags: dict[str, bool],
    stderr: str,
    trainer: Trainer = train_in_process,
) -> list[dict[str, Any]]:
    """``spec`` and, while it diverges, its retries (`attempt.attempts`), in this job.

    Raises
    ------
    _Requeue
        The requeue signal stopped a run with its checkpoint.
    _HeldElsewhere
        Another process holds a run's lock (not recorded: the holder writes its result).
    Exception
        A run's training error, after its failure is recorded.
    """

    def after_stop(run: RunSpec) -> bool:
        """After a stop with a checkpoint: train on only after a stray SIGTERM."""
        if not flags["requeue"]:
            # SIGTERM (scancel, scontrol requeue, preemption): SLURM kills the job within
            # KillWait. Wait for that rather than train steps that would be lost; a requeue
            # signal may still come; a stray SIGTERM lets it go on.
            deadline = time.monotonic() + TERM_WAIT_S
            while time.monotonic() < deadline and not flags["requeue"]:
                time.sleep(0.1)
            flags["term"] = False
        if flags["requeue"]:
            log.warning("run %s: requeueing", run.run_id)  # in its train.log: under the lock
            return False
        log.warning("run %s: not killed %.0f s after SIGTERM; going on", run.run_id, TERM_WAIT_S)
        return True

    out = []
    for outcome in attempts(
        spec,
        layout,
        exe,
        branches=branches,
        on_retry=lambda retry, run_id: _record_retry(layout, retry, run_id),
        train=trainer,
        should_stop=lambda: flags["requeue"] or flags["term"],
        after_stop=after_stop,
        log_path=stderr,
        reraise=True,
    ):
        if outcome.status == "held":
            where = layout.run_dir(outcome.run_id)
            raise _HeldElsewhere(
                f"run {outcome.run_id}: {where} is held by {outcome.error}; not trained twice"
            )
        if outcome.status == "interrupted":
            raise _Requeue(outcome.run_id)
        out.append(
            {
                "run_id": outcome.run_id,
                "status": outcome.status,
                "val_loss": outcome.val_loss,
                "wall_s": outcome.wall_s,
            }
        )
    return out


def _record_retry(layout: ExperimentLayout, retry: RunSpec, retry_of: str) -> None:
    """jobs.json: the retry trains in the job of the run it retries (its logs, its state)."""
    if not layout.jobs_json.exists():
        return
    with jobs_lock(layout):
        jobs = read_jobs(layout)
        parent = jobs["runs"].get(retry_of)
        if not parent:
            return
        entry = {**parent[-1], "retry_of": retry_of}
        if entry not in jobs["runs"].get(retry.run_id, []):
            jobs["runs"].setdefault(retry.run_id, []).append(entry)
            atomic_write_json(layout.jobs_json, jobs)
