"""`harness submit` / `harness status` / `harness collect` against the real local SLURM cluster.

Start it with ``slurm/install.sh && slurm/start.sh`` (CI does, and always stops it); the skip
rule is tests/execute/test_slurm_cluster.py's: without a cluster these tests skip, unless
HARNESS_SLURM=1 makes that a failure. Jobs run the installed harness package (``pip install
-e .``), so nothing here is pickled by value. Every wait has a deadline; jobs still in the
queue when a test ends are cancelled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _tiny import tiny_toml

from harness.config import load_experiment
from harness.execute.status import RunStatus, read_jobs, run_statuses
from harness.grid import expand
from harness.results import ExperimentLayout

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

sys.path.insert(0, str(Path(__file__).parent))
from test_slurm_cluster import _cluster_problem  # noqa: E402

DEADLINE_S = 150  # a job starts in ~2 s, imports torch in ~5-15 s; a requeue takes ~11 s


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = _cluster_problem()
    if problem is None:
        return
    message = f"local SLURM cluster not reachable: {problem}"
    if os.environ.get("HARNESS_SLURM", "") not in ("", "0"):
        pytest.fail(f"HARNESS_SLURM is set but the {message}", pytrace=False)
    pytest.skip(f"{message} (set HARNESS_SLURM=1 to make this a failure)")


@pytest.fixture
def experiment(cluster, tmp_path: Path) -> Iterator[Callable[..., tuple[Path, Path]]]:
    """Write a tiny experiment TOML; yields a factory (overrides...) -> (toml, results root)."""
    roots: list[Path] = []
    cluster = """
[cluster]
partition = "debug"
time_min = 5
gpus_per_run = 0
cpus_per_run = 1
mem_gb = 0.25
"""

    def make(name: str, n_tokens: list[int], extra: str = "") -> tuple[Path, Path]:
        toml = tiny_toml(tmp_path, name=name, n_tokens=str(n_tokens), extra=cluster + extra)
        roots.append(tmp_path / "results" / name)
        return toml, tmp_path / "results" / name

    yield make
    for root in roots:  # never leave jobs behind
        if (root / "jobs.json").exists():
            ids = {
                e["array_job_id"]
                for subs in json.loads((root / "jobs.json").read_text())["runs"].values()
                for e in subs
            }
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return proc


def wait_for(
    root: Path,
    done: Callable[[dict[str, RunStatus]], bool],
    what: str,
    timeout_s: float = DEADLINE_S,
) -> dict[str, RunStatus]:
    deadline = time.monotonic() + timeout_s
    layout = ExperimentLayout(root)
    while True:
        states = {s.run_id: s for s in run_statuses(layout)}
        if done(states):
            return states
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what}: not after {timeout_s:.0f} s; states: "
                f"{[(s.run_id, s.state, s.slurm_state, s.error) for s in states.values()]}"
            )
        time.sleep(1.0)


def all_in(*wanted: str) -> Callable[[dict[str, RunStatus]], bool]:
    return lambda states: bool(states) and all(s.state in wanted for s in states.values())


def metrics_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:] if line]


# --- tests --------------------------------------------------------------------------------------


def test_grid_runs_as_one_capped_array_a_crash_shows_as_failed_and_resubmits(experiment) -> None:
    toml, root = experiment("grid", [1024, 2048, 4096], "max_parallel = 2")
    args = ["--train.checkpoint_every_steps=2"]
    specs = expand(load_experiment(toml, args))
    crashing = specs[1]
    crash_dir = root / "runs" / crashing.run_id
    crash_dir.mkdir(parents=True)
    # A real crash inside one job: its first checkpoint cannot be written (a file stands where
    # the checkpoint folder belongs), as on a broken file system.
    (crash_dir / "ckpt").write_text("not a folder")

    t0 = time.monotonic()
    first = harness("submit", str(toml), *args)
    assert first.returncode == 0, first.stderr
    assert "3 unsubmitted" in first.stdout and "submitted 3 run(s)" in first.stdout
    jobs = read_jobs(ExperimentLayout(root))["runs"]
    entries = [subs[-1] for subs in jobs.values()]
    assert len({e["array_job_id"] for e in entries}) == 1  # one array
    assert sorted(e["array_index"] for e in entries) == [0, 1, 2]
    for e in entries:  # the command printed each job id and log path
        assert f"job {e['job_id']}  log {e['stderr']}" in first.stdout
    array_id = entries[0]["array_job_id"]
    script = root / "slurm" / array_id / f"{array_id}_submission.sh"
    assert "#SBATCH --array=0-2%2" in script.read_text()  # at most 2 at once

    again = harness("submit", str(toml), *args)  # while the first is queued or running
    assert again.returncode == 0, again.stderr
    assert "nothing to submit" in again.stdout
    assert read_jobs(ExperimentLayout(root))["runs"] == jobs  # no duplicate job
    assert time.monotonic() - t0 < 60  # submit returns at once, it does not wait for jobs

    # collect while a run still trains: only runs with a result land in runs.csv
    def has_result(run_id: str) -> bool:
        return (root / "runs" / run_id / "result.json").exists()

    wait_for(
        root,
        lambda s: (
            any(has_result(r) for r in s)
            and any(not has_result(r) and x.state in ("running", "queued") for r, x in s.items())
        ),
        "some runs ended while another still runs",
    )
    collected = harness("collect", str(root))
    assert collected.returncode == 0, collected.stderr
    rows = [r.split(",")[3] for r in (root / "runs.csv").read_text().splitlines()[1:]]
    assert 1 <= len(rows) < 3 and all(has_result(r) for r in rows)

    states = wait_for(root, all_in("done", "failed"), "every run ended")
    failed = states[crashing.run_id]
    assert [states[s.run_id].state for s in specs] == ["done", "failed", "done"]
    assert failed.slurm_state in ("FAILED", "ENDED"), failed
    assert "ckpt" in failed.error
    assert Path(failed.log).is_file() and "Traceback" in Path(failed.log).read_text()
    status = harness("status", str(root))
    assert status.returncode == 1, status.stderr  # a failed run is failed work
    assert f"log: {failed.log}" in status.stdout and "1 failed, 2 done" in status.stdout

    (crash_dir / "ckpt").unlink()  # the cause fixed, submit again: only the failed run goes out
    again = harness("submit", str(toml), *args)
    assert again.returncode == 0 and "submitted 1 run(s)" in again.stdout, again.stdout
    assert f"{crashing.run_id}  job" in again.stdout
    states = wait_for(root, all_in("done"), "the resubmitted run")
    assert states[crashing.run_id].submissions == 2
    assert "3 done" in harness("status", str(root)).stdout
    assert harness("collect", str(root)).returncode == 0
    rows = (root / "runs.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all(",done," in r for r in rows)


def test_preempted_run_is_requeued_and_ends_with_the_uninterrupted_loss(experiment) -> None:
    from submitit.slurm.slurm import SlurmJob

    from harness.train import train

    toml, root = experiment("preempt", [204800])
    (spec,) = expand(load_experiment(toml))
    assert harness("submit", str(toml)).returncode == 0
    (entry,) = [subs[-1] for subs in read_jobs(ExperimentLayout(root))["runs"].values()]
    run_dir = root / "runs" / spec.run_id

    def progressed(past: int) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not (steps := metrics_steps(run_dir)) or steps[-1] <= past:
            assert not (run_dir / "result.json").exists(), "the run ended before the interrupt"
            assert time.monotonic() < deadline, f"the run never got past step {past}"
            time.sleep(0.1)

    def resumed(times: int) -> int:
        deadline = time.monotonic() + DEADLINE_S
        while len(found := _log_steps(run_dir, "resuming")) < times:
            assert time.monotonic() < deadline, f"the job did not resume {times} time(s)"
            time.sleep(0.2)
        return found[-1]

    progressed(20)
    SlurmJob(folder=root / "slurm" / "%j", job_id=entry["job_id"])._interrupt()  # preemption
    # the uninterrupted reference, trained here while SLURM holds the requeued job (~10 s)
    ref = train(
        spec,
        root.parent.parent / "ref" / "runs" / spec.run_id,
        execution=load_experiment(toml).execution,
    )
    first = resumed(1)
    log = (run_dir / "train.log").read_text()
    assert "got SIGUSR2" in log and "requeueing" in log
    # an external requeue (SIGTERM, then a kill) restarts the job from its original pickle
    progressed(first + 20)
    subprocess.run(["scontrol", "requeue", entry["job_id"]], check=True, timeout=30)
    second = resumed(2)

    states = wait_for(root, all_in("done", "failed"), "the preempted run finished")
    assert states[spec.run_id].state == "done", states[spec.run_id]
    # each restart resumed exactly where the signal stopped it: no step trained twice
    assert _log_steps(run_dir, "checkpoint saved at step") == [first, second]
    assert 0 < first < second < spec.n_steps
    steps = metrics_steps(run_dir)
    assert steps == sorted(set(steps)) and steps[-1] == spec.n_steps
    # requeued by SLURM, never resubmitted
    assert len(read_jobs(ExperimentLayout(root))["runs"][spec.run_id]) == 1

    # the same loss, bit for bit, as the run trained here without interruption
    result = json.loads((run_dir / "result.json").read_text())
    assert ref is not None and result["val_loss"] == ref.val_loss


def _log_steps(run_dir: Path, marker: str) -> list[int]:
    """Steps in train.log lines containing ``marker`` ('resuming ... at step N of M', ...)."""
    log = run_dir / "train.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [int(line.split(" at step ")[1].split()[0]) for line in lines if marker in line]


def test_a_packed_job_is_requeued_and_resumes_only_its_unfinished_run(experiment) -> None:
    from harness.train import train

    toml, root = experiment("packed", [2048, 4096, 204800], "runs_per_job = 3")
    specs = expand(load_experiment(toml))
    long = max(specs, key=lambda s: s.n_tokens)
    short = [s for s in specs if s is not long]
    assert harness("submit", str(toml)).returncode == 0
    jobs = read_jobs(ExperimentLayout(root))["runs"]
    assert len({subs[-1]["job_id"] for subs in jobs.values()}) == 1  # one job for the three
    (job_id,) = {subs[-1]["job_id"] for subs in jobs.values()}
    run_dir = root / "runs" / long.run_id
    deadline = time.monotonic() + DEADLINE_S
    while not (steps := metrics_steps(run_dir)) or steps[-1] <= 20:
        assert time.monotonic() < deadline, "the long run never got past step 20"
        time.sleep(0.1)
    finished = {s.run_id: (root / "runs" / s.run_id / "result.json").read_text() for s in short}
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    ref = train(
        long,
        root.parent.parent / "ref" / "runs" / long.run_id,
        execution=load_experiment(toml).execution,
    )
    states = wait_for(root, all_in("done", "failed"), "the requeued packed job finished")
    assert {r: s.state for r, s in states.items()} == {s.run_id: "done" for s in specs}
    # the runs that had finished were skipped, not trained again; the long one resumed once
    assert {
        s.run_id: (root / "runs" / s.run_id / "result.json").read_text() for s in short
    } == finished
    assert len(_log_steps(run_dir, "resuming")) == 1
    steps = metrics_steps(run_dir)
    assert steps == sorted(set(steps)) and steps[-1] == long.n_steps
    result = json.loads((run_dir / "result.json").read_text())
    assert ref is not None and result["val_loss"] == ref.val_loss
    assert all(len(subs) == 1 for subs in read_jobs(ExperimentLayout(root))["runs"].values())


def test_a_two_task_job_trains_one_run_on_both_and_survives_a_requeue(experiment) -> None:
    """cluster.tasks_per_run = 2 on a CPU partition: one DDP run over the job's two tasks
    (gloo), requeued mid-run by `scontrol requeue`, resumed by both tasks, ending with the loss
    of the same run trained here on two processes without interruption, bit for bit."""
    import dataclasses

    from harness.execute.ranks import train_on_devices

    toml, root = experiment("ddp", [204800], "tasks_per_run = 2")
    exp = load_experiment(toml)
    (spec,) = expand(exp)
    assert harness("submit", str(toml)).returncode == 0
    (entry,) = [subs[-1] for subs in read_jobs(ExperimentLayout(root))["runs"].values()]
    run_dir = root / "runs" / spec.run_id
    deadline = time.monotonic() + DEADLINE_S
    while not (steps := metrics_steps(run_dir)) or steps[-1] <= 20:
        assert not (run_dir / "result.json").exists(), "the run ended before the requeue"
        assert time.monotonic() < deadline, "the run never got past step 20"
        time.sleep(0.1)
    subprocess.run(["scontrol", "requeue", entry["job_id"]], check=True, timeout=30)
    # The uninterrupted reference on two local processes, while SLURM requeues the job.
    ref = train_on_devices(
        spec,
        root.parent.parent / "ref" / "runs" / spec.run_id,
        execution=dataclasses.replace(exp.execution, devices_per_run=2, threads=1),
    )
    try:
        states = wait_for(root, all_in("done", "failed"), "the requeued two-task job finished")
    finally:  # shown by pytest when the wait fails: what each task logged
        for f in sorted((root / "slurm").rglob("*.err")):
            print(f"--- {f}\n" + "\n".join(f.read_text().splitlines()[-15:]))
    assert states[spec.run_id].state == "done", states[spec.run_id]
    (resumed,) = _log_steps(run_dir, "resuming")
    assert 20 < resumed < spec.n_steps
    steps = metrics_steps(run_dir)
    assert steps == sorted(set(steps)) and steps[-1] == spec.n_steps
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["parallel"] == "ddp"
    assert ref is not None and result["val_loss"] == ref.val_loss
