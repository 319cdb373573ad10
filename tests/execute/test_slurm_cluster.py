"""Integration tests against a real SLURM cluster, through submitit.

Start the local single-node cluster with ``slurm/install.sh && slurm/start.sh`` (as root), run
``HARNESS_SLURM=1 python -m pytest -m slurm tests/execute/test_slurm_cluster.py``, then
``slurm/stop.sh``.

Skip rule: without HARNESS_SLURM, the tests skip when no cluster answers ``sinfo``. With
HARNESS_SLURM=1 (CI), a cluster that does not answer is a failure, so CI cannot pass silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")
import cloudpickle  # noqa: E402  (a dependency of submitit)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Jobs unpickle their function in a fresh interpreter where this test module is not importable
# (tests/ is not a package on sys.path there): pickle this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PARTITION = "debug"
RESULT_TIMEOUT_S = 90  # generous: a trivial job takes ~1 s, a requeue ~11 s on the test cluster


def _cluster_problem() -> str | None:
    """None when a SLURM cluster answers with a usable 'debug' partition, else the reason."""
    if shutil.which("sinfo") is None:
        return "sinfo is not installed (run slurm/install.sh)"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-o", "%a %t"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    if proc.returncode != 0:
        return f"sinfo failed: {(proc.stderr or proc.stdout).strip()[:300]}"
    lines = [ln.split() for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        return f"no partition {PARTITION!r} (start the cluster with slurm/start.sh)"
    usable = {"idle", "mix", "alloc", "comp"}
    if not any(av == "up" and st.rstrip("*~#!%$@^-") in usable for av, st in lines):
        return f"partition {PARTITION!r} has no usable node: {proc.stdout.strip()}"
    return None


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    problem = _cluster_problem()
    if problem is None:
        return
    required = os.environ.get("HARNESS_SLURM", "") not in ("", "0")
    message = f"local SLURM cluster not reachable: {problem}"
    if required:
        pytest.fail(f"HARNESS_SLURM is set but the {message}", pytrace=False)
    pytest.skip(f"{message} (set HARNESS_SLURM=1 to make this a failure)")


@pytest.fixture
def executor(slurm_cluster, tmp_path):
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    ex.update_parameters(
        slurm_partition=PARTITION, timeout_min=5, mem_gb=0.25, cpus_per_task=1, nodes=1
    )
    return ex


def _wait(jobs, timeout_s: float = RESULT_TIMEOUT_S) -> None:
    """Wait until every job is done; cancel them and fail (never hang) after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not all(job.done() for job in jobs):
        if time.monotonic() > deadline:
            states = {job.job_id: job.get_info(mode="force").get("State") for job in jobs}
            for job in jobs:
                job.cancel(check=False)
            pytest.fail(f"jobs not done after {timeout_s:.0f} s: {states}")
        time.sleep(0.5)


# --- job functions (run on the cluster) -----------------------------------------------------


def add(a: int, b: int) -> int:
    return a + b


def square_with_env(x: int) -> tuple[int, str]:
    return x * x, os.environ.get("SLURM_ARRAY_TASK_ID", "")


def explode(message: str) -> None:
    raise ValueError(message)


class CountTo(submitit.helpers.Checkpointable):
    """Counts to `n` slowly, keeping its progress in `workdir/state.json`.

    Resumes from that file, not from the pickle (an external `scontrol requeue` restarts from
    the original pickle without calling checkpoint()). Logs each start and each checkpoint.
    """

    def __call__(self, workdir: str, n: int, step_s: float) -> dict:
        wd = Path(workdir)
        state_file = wd / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {"i": 0}
        with open(wd / "starts.log", "a") as f:
            f.write(f"{state['i']}\n")
        while state["i"] < n:
            time.sleep(step_s)
            state["i"] += 1
            tmp = wd / "state.json.tmp"
            tmp.write_text(json.dumps(state))
            tmp.replace(state_file)
        starts = [int(x) for x in (wd / "starts.log").read_text().split()]
        return {"i": state["i"], "starts": starts}

    def checkpoint(self, workdir: str, n: int, step_s: float):
        wd = Path(workdir)
        state = json.loads((wd / "state.json").read_text()) if (wd / "state.json").exists() else {}
        with open(wd / "checkpoints.log", "a") as f:
            f.write(f"{state.get('i', 0)}\n")
        return super().checkpoint(workdir, n, step_s)


# --- tests ----------------------------------------------------------------------------------


def test_trivial_job_returns_its_result(executor):
    job = executor.submit(add, 40, 2)
    _wait([job])
    assert job.result() == 42
    # accounting works (submitit needs sacct to see jobs that die without a result); it may
    # lag the result pickle by a moment, so poll instead of reading the state once
    deadline = time.monotonic() + 30
    while (state := job.get_info(mode="force").get("State")) != "COMPLETED":
        assert time.monotonic() < deadline, f"sacct still reports {state!r} for a finished job"
        time.sleep(0.5)


def test_job_array_of_four_completes(executor):
    with executor.batch():
        jobs = [executor.submit(square_with_env, i) for i in range(4)]
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1, f"expected one array, got job ids {[j.job_id for j in jobs]}"
    _wait(jobs)
    results = [job.result() for job in jobs]
    assert [r[0] for r in results] == [0, 1, 4, 9]
    assert sorted(r[1] for r in results) == ["0", "1", "2", "3"]


def test_exception_in_job_gives_failed_job_error(executor):
    job = executor.submit(explode, "boom from the cluster")
    _wait([job])
    with pytest.raises(submitit.core.utils.FailedJobError) as excinfo:
        job.result()
    text = str(excinfo.value)
    assert "ValueError" in text and "boom from the cluster" in text


def test_preempted_checkpointable_job_is_requeued_and_resumes(executor, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    n, step_s = 30, 0.2  # ~6 s of work: long enough to be preempted mid-way
    job = executor.submit(CountTo(), str(workdir), n, step_s)

    # wait until the first run has made some progress, then preempt it (SIGTERM + USR2)
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    state_file = workdir / "state.json"
    while not (state_file.exists() and json.loads(state_file.read_text())["i"] >= 3):
        assert not job.done(), f"job ended before it could be preempted: {job.state}"
        assert time.monotonic() < deadline, "the job never started making progress"
        time.sleep(0.2)
    job._interrupt()

    _wait([job])
    result = job.result()
    checkpoints = (workdir / "checkpoints.log").read_text().split()
    assert len(checkpoints) == 1, "checkpoint() should have run exactly once"
    assert result["i"] == n
    starts = result["starts"]
    assert len(starts) == 2, f"expected one requeue, saw starts at {starts}"
    assert starts[0] == 0
    # the requeued run continued from the progress saved before preemption, not from zero
    assert starts[1] >= 3
    assert starts[1] >= int(checkpoints[0])
