"""Execution of a grid's runs: on this machine's workers, or as SLURM jobs through submitit.

One unit of work (`local.plan_units`: a run, or a WSD trunk with its branches), one attempt at a
run with its divergence retries (`attempt`, the policy in `retry`), one lock per run (`locks`)
and one notion of a run's state (`status`), shared by both ways of running, which only decide
where and when a run trains:

- `local`: `harness run`, units on parallel workers (`placement`: how many, which threads and
  GPUs), signals;
- `slurm`: `harness submit`, units packed into jobs and submitted as arrays; `job`: the body of
  a SLURM job (preemption, requeue, retries).
"""

from harness.execute.attempt import Outcome, attempt, attempts
from harness.execute.local import Interrupted, Unit, plan_units, run_local
from harness.execute.locks import Held, RunLock, experiment_lock, holder_of
from harness.execute.placement import Slot, plan_slots
from harness.execute.retry import pending_runs, start_retry

__all__ = [
    "Held",
    "attempt",
    "attempts",
    "Interrupted",
    "Outcome",
    "RunLock",
    "Slot",
    "Unit",
    "experiment_lock",
    "holder_of",
    "pending_runs",
    "plan_slots",
    "plan_units",
    "run_local",
    "start_retry",
]
