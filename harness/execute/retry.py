"""What is left to train, and the divergence-retry policy, for `harness run` and `harness submit`.

A run that diverges (`harness.train`'s rule) keeps its result: it is a finding about that
learning rate, not a failure. With ``execution.diverge_retries = k`` the same grid point then
trains again at ``lr x execution.diverge_lr_factor``, up to k times, each retry a run of its
own (its own run_id and directory, ``retry.json`` naming the run it retries). The diverged
run's result.json records ``retried_as``, so a retry that an interrupted command or a killed
job left unfinished is found again from the grid (`unfinished_retries`). Local workers and
SLURM jobs call the same two functions: `start_retry` after a divergence, `pending_runs` (or
`unfinished_retries`) to pick up what is left.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harness import __version__
from harness.atomic import atomic_write_json
from harness.config import ExecutionConfig
from harness.grid import RunSpec, spec_from_dict
from harness.results import (
    FINISHED,
    ExperimentLayout,
    check_spec,
    read_json,
    read_result,
    run_state,
    write_result,
    write_spec,
)

__all__ = [
    "RETRY_JSON",
    "pending_runs",
    "record_failure",
    "retry_depth",
    "retry_spec",
    "start_retry",
    "unfinished_retries",
]

RETRY_JSON = "retry.json"


def pending_runs(specs: list[RunSpec], layout: ExperimentLayout) -> list[RunSpec]:
    """The runs without a finished result (failed and interrupted runs are tried again), then
    divergence retries left unfinished.

    Raises
    ------
    InputError
        A run directory holds another run's spec.json (checked before anything trains).
    """
    for s in specs:
        check_spec(layout.run_dir(s.run_id), s)
    todo = [s for s in specs if run_state(layout.run_dir(s.run_id)) not in FINISHED]
    # A retry whose lr is also a grid point is one run: listed once.
    return list({s.run_id: s for s in todo + unfinished_retries(specs, layout)}.values())


def retry_spec(spec: RunSpec, lr_factor: float) -> RunSpec:
    """The same grid point with its learning rate times ``lr_factor`` (a new run_id)."""
    return dataclasses.replace(
        spec, train=dataclasses.replace(spec.train, lr=spec.train.lr * lr_factor)
    )


def retry_depth(run_dir: Path) -> int:
    """0 for a grid run; k for the k-th divergence retry (run_dir/retry.json)."""
    path = run_dir / RETRY_JSON
    if not path.exists():
        return 0
    depth = read_json(path).get("retry", 0)
    return depth if isinstance(depth, int) else 0


def unfinished_retries(specs: list[RunSpec], layout: ExperimentLayout) -> list[RunSpec]:
    """Follow each diverged run's ``retried_as`` chain to a retry that has not finished."""
    out = []
    for spec in specs:
        run_id, seen = spec.run_id, set()
        while run_id not in seen:
            seen.add(run_id)
            result = read_result(layout.run_dir(run_id))
            if not result or result.get("status") != "diverged" or not result.get("retried_as"):
                break
            run_id = str(result["retried_as"])
            retry_dir = layout.run_dir(run_id)
            if (retry_dir / "spec.json").exists() and run_state(retry_dir) not in FINISHED:
                out.append(spec_from_dict(read_json(retry_dir / "spec.json")))
                break
    return out


def start_retry(
    spec: RunSpec, layout: ExperimentLayout, execution: ExecutionConfig
) -> RunSpec | None:
    """After ``spec`` diverged: set up its lower-lr retry, record ``retried_as``, return it.

    None when ``spec`` is already the last retry allowed, or its retry has finished.
    """
    run_dir = layout.run_dir(spec.run_id)
    depth = retry_depth(run_dir)
    if depth >= execution.diverge_retries:
        return None
    retry = retry_spec(spec, execution.diverge_lr_factor)
    retry_dir = layout.run_dir(retry.run_id)
    retry_dir.mkdir(parents=True, exist_ok=True)
    write_spec(retry_dir, retry)
    if not (retry_dir / RETRY_JSON).exists():  # the same lr may already be a grid point
        atomic_write_json(
            retry_dir / RETRY_JSON,
            {"retry_of": spec.run_id, "retry": depth + 1, "lr": retry.train.lr},
        )
    result = read_result(run_dir) or {}
    result["retried_as"] = retry.run_id
    write_result(run_dir, result)
    return None if run_state(retry_dir) in FINISHED else retry


def record_failure(run_dir: Path, spec: RunSpec, error: str, log: str = "") -> dict[str, Any]:
    """Write a failed run's result.json (one line of error, the log to read) and return it."""
    result = {
        "run_id": spec.run_id,
        "status": "failed",
        "error": error,
        "log": log or str(run_dir / "train.log"),
        "harness_version": __version__,
    }
    write_result(run_dir, result)
    return result
