"""Execution of a grid's runs on this machine: placement on workers, locks, signals.

`local` (parallel workers, units of work, signals), `placement` (how many workers, threads and
GPUs), `locks` (a run's lock, an experiment's lock). SLURM submission is `harness.launch`.
"""

from harness.execute.local import Interrupted, LocalOutcome, Unit, plan_units, run_local
from harness.execute.locks import Held, RunLock, experiment_lock, holder_of
from harness.execute.placement import Slot, plan_slots

__all__ = [
    "Held",
    "Interrupted",
    "LocalOutcome",
    "RunLock",
    "Slot",
    "Unit",
    "experiment_lock",
    "holder_of",
    "plan_slots",
    "plan_units",
    "run_local",
]
