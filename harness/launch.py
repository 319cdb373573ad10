"""Execution of runs: on this machine (the default) or on SLURM through submitit.

This is the only module that imports submitit. Local runs go one after another through one
spawned worker process that imports torch once, so a grid pays start-up once, while an
exception in one run is caught and recorded and a crash of the worker (a segfault, the OOM
killer) fails only the run it was on: the pool is rebuilt and the grid goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import __version__
from harness.config import ExecutionConfig, ExperimentConfig, to_dict
from harness.grid import RunSpec, spec_from_dict
from harness.results import FINISHED, ExperimentLayout, run_state, write_result, write_spec

__all__ = ["LocalOutcome", "pending_runs", "run_local"]


@dataclass(frozen=True)
class LocalOutcome:
    run_id: str
    status: str
    val_loss: float | None
    wall_s: float
    error: str


def pending_runs(specs: list[RunSpec], layout: ExperimentLayout) -> list[RunSpec]:
    """The runs without a finished result (failed and interrupted runs are tried again)."""
    return [s for s in specs if run_state(layout.run_dir(s.run_id)) not in FINISHED]


def _flops(spec: RunSpec) -> float:
    from harness.model import count_params

    return 6.0 * count_params(spec.model).non_embedding * spec.n_tokens


def _worker_init(threads: int) -> None:
    if threads > 0:
        # Before torch starts its OpenMP pool; set_num_threads in train() does the rest.
        os.environ["OMP_NUM_THREADS"] = str(threads)


def _failed(run_dir: Path, spec: RunSpec, error: str) -> dict[str, Any]:
    result = {
        "run_id": spec.run_id,
        "status": "failed",
        "error": error,
        "log": str(run_dir / "train.log"),
        "harness_version": __version__,
    }
    write_result(run_dir, result)
    return result


def _run_one(spec_dict: dict[str, Any], run_dir: str, execution: dict[str, Any]) -> dict[str, Any]:
    """Worker body: train one run with its log in run_dir/train.log; never raises."""
    from harness.config import _build
    from harness.train import train

    spec = spec_from_dict(spec_dict)
    exe = _build(ExecutionConfig, execution, "execution", "launcher")
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        result = train(spec, path, execution=exe)
        assert result is not None
        logging.getLogger("harness.launch").info("run %s ended: %s", spec.run_id, result.status)
        return {"status": result.status, "val_loss": result.val_loss, "wall_s": result.wall_s}
    except Exception as e:  # noqa: BLE001 - one failing run must not stop the grid
        logging.getLogger("harness.launch").error("run %s failed:\n%s", spec.run_id,
                                                  traceback.format_exc())
        last = f"{type(e).__name__}: {e}".splitlines()[0]
        _failed(path, spec, last)
        return {"status": "failed", "val_loss": None, "wall_s": 0.0, "error": last}
    finally:
        root.removeHandler(handler)
        handler.close()


def run_local(exp: ExperimentConfig, specs: list[RunSpec], layout: ExperimentLayout) -> list[LocalOutcome]:
    """Train ``specs`` one after another in a worker process; return one outcome per run."""
    execution = exp.execution
    ctx = multiprocessing.get_context("spawn")
    outcomes: list[LocalOutcome] = []
    total_flops = sum(_flops(s) for s in specs)
    bar = None
    if execution.progress and specs:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_flops, unit="FLOP", unit_scale=True, position=0,
                   desc=f"grid {exp.name} 0/{len(specs)} runs", dynamic_ncols=True)

    pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_worker_init,
                               initargs=(execution.threads,))
    try:
        for i, spec in enumerate(specs):
            run_dir = layout.run_dir(spec.run_id)
            run_dir.mkdir(parents=True, exist_ok=True)
            write_spec(run_dir, spec)
            try:
                out = pool.submit(_run_one, spec.to_dict(), str(run_dir), to_dict(execution)).result()
            except BrokenProcessPool:
                # The worker died without a Python exception (killed, segfault, out of memory).
                error = "the worker process died (killed, crashed or out of memory)"
                _failed(run_dir, spec, error)
                out = {"status": "failed", "val_loss": None, "wall_s": 0.0, "error": error}
                pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_worker_init,
                                           initargs=(execution.threads,))
            outcomes.append(LocalOutcome(spec.run_id, out["status"], out["val_loss"],
                                         out["wall_s"], out.get("error", "")))
            if bar is not None:
                bar.update(_flops(spec))
                bar.set_description(f"grid {exp.name} {i + 1}/{len(specs)} runs")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    return outcomes
