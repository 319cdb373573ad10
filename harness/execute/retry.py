"""What is left to train, and the divergence-retry policy, for `harness run` and `harness submit`.

A run that diverges (`harness.train`'s rule) keeps its result: it is a finding about that
learning rate, not a failure. With ``execution.diverge_retries = k`` the same grid point then
trains again at ``lr x execution.diverge_lr_factor``, up to k times, each retry a run of its
own (its own run_id and directory, ``retry.json`` naming the run it retries). The diverged
run's result.json records ``retried_as``, so a retry that an interrupted command or a killed
job left unfinished is found again from the grid (`unfinished_retries`). `attempt.attempts`
calls `start_retry` after a divergence, in a local worker and in a SLURM job alike; the
commands call `pending_runs` to pick up what is left.
"""

from __future__ import annotations

import dataclasses

from harness.atomic import atomic_write_json
from harness.config import ExecutionConfig
from harness.grid import RunSpec
from harness.results import ExperimentLayout
from harness.rundir import FINISHED, RunDir, read_json

__all__ = [
    "pending_runs",
    "retry_chain",
    "retry_depth",
    "retry_spec",
    "start_retry",
    "unfinished_retries",
]


def pending_runs(specs: list[RunSpec], layout: ExperimentLayout) -> list[RunSpec]:
    """The runs without a finished result (failed and interrupted runs are tried again), then
    divergence retries left unfinished.

    Raises
    ------
    InputError
        A run directory holds another run's spec.json (checked before anything trains).
    """
    for s in specs:
        layout.run(s.run_id).check_spec(s)
    todo = [s for s in specs if layout.run(s.run_id).state() not in FINISHED]
    # A retry whose lr is also a grid point is one run: listed once.
    return list({s.run_id: s for s in todo + unfinished_retries(specs, layout)}.values())


def retry_spec(spec: RunSpec, lr_factor: float) -> RunSpec:
    """The same grid point with its learning rate times ``lr_factor`` (a new run_id)."""
    return dataclasses.replace(
        spec, train=dataclasses.replace(spec.train, lr=spec.train.lr * lr_factor)
    )


def retry_depth(run: RunDir) -> int:
    """0 for a grid run; k for the k-th divergence retry (its retry.json)."""
    path = run.retry_json
    if not path.exists():
        return 0
    depth = read_json(path).get("retry", 0)
    return depth if isinstance(depth, int) else 0


def unfinished_retries(specs: list[RunSpec], layout: ExperimentLayout) -> list[RunSpec]:
    """Follow each diverged run's ``retried_as`` chain (`retry_chain`) to a retry that has not
    finished.

    Raises
    ------
    InputError
        A result.json on the way that does not read.
    """
    out = []
    for spec in specs:
        layout.run(spec.run_id).read_result()  # checked: an unreadable record is bad input
        chain = retry_chain(spec.run_id, layout)  # ends at the first retry not finished
        if not chain:
            continue
        last = layout.run(chain[-1])
        last.read_result()
        if last.spec_json.exists() and last.state() not in FINISHED:
            out.append(last.spec())
    return out


def retry_chain(run_id: str, layout: ExperimentLayout) -> list[str]:
    """The retries set up after ``run_id`` diverged, in order (each diverged run's
    ``retried_as``); a record that does not read ends the chain."""
    out, seen = [], {run_id}
    result = layout.run(run_id).finished()
    while result and result.get("status") == "diverged" and result.get("retried_as"):
        run_id = str(result["retried_as"])
        if run_id in seen:
            break
        seen.add(run_id)
        out.append(run_id)
        result = layout.run(run_id).finished()
    return out


def start_retry(
    spec: RunSpec, layout: ExperimentLayout, execution: ExecutionConfig
) -> RunSpec | None:
    """After ``spec`` diverged: set up its lower-lr retry, record ``retried_as``, return it.

    None when ``spec`` is already the last retry allowed, or its retry has finished.
    """
    run = layout.run(spec.run_id)
    depth = retry_depth(run)
    if depth >= execution.diverge_retries:
        return None
    retry = retry_spec(spec, execution.diverge_lr_factor)
    retry_dir = layout.run(retry.run_id)
    retry_dir.path.mkdir(parents=True, exist_ok=True)
    retry_dir.write_spec(retry)
    if not retry_dir.retry_json.exists():  # the same lr may already be a grid point
        atomic_write_json(
            retry_dir.retry_json,
            {"retry_of": spec.run_id, "retry": depth + 1, "lr": retry.train.lr},
        )
    result = run.read_result() or {}
    result["retried_as"] = retry.run_id
    run.write_result(result)
    return None if retry_dir.state() in FINISHED else retry
