"""The local executor (harness.execute): placement, units, locks, and `harness run` under
concurrency and signals, with real processes."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from _tiny import tiny_toml

from harness.config import ExecutionConfig, load_experiment
from harness.execute.local import plan_units
from harness.execute.locks import Held, RunLock, holder_of
from harness.execute.placement import plan_slots
from harness.grid import expand

# --- placement -------------------------------------------------------------------------------


def test_one_worker_per_gpu_each_pinned() -> None:
    slots = plan_slots(ExecutionConfig(), n_units=10, gpus=["0", "1", "2", "3"], cores=16)
    assert [s.cuda_visible_devices for s in slots] == ["0", "1", "2", "3"]
    assert {s.threads for s in slots} == {4}  # the cores shared out, never oversubscribed


def test_runs_per_device_share_a_gpu() -> None:
    exe = ExecutionConfig(runs_per_device=2)
    slots = plan_slots(exe, n_units=10, gpus=["2", "5"], cores=8)
    assert [s.cuda_visible_devices for s in slots] == ["2", "2", "5", "5"]


def test_never_more_workers_than_units() -> None:
    assert len(plan_slots(ExecutionConfig(), n_units=3, gpus=["0", "1", "2", "3"], cores=8)) == 3
    assert len(plan_slots(ExecutionConfig(), n_units=1, gpus=[], cores=64)) == 1


@pytest.mark.parametrize(
    ("threads", "workers", "cores", "want"),
    [
        (0, "auto", 2, [(1, None), (1, None)]),  # auto on 2 cores: 2 workers x 1 thread
        (2, "auto", 2, [(2, None)]),  # 2 threads each: one worker
        (0, "auto", 1, [(0, None)]),  # one core: torch's default
        (0, 1, 16, [(0, None)]),  # one worker keeps torch's default
        (4, "auto", 16, [(4, None)] * 4),
    ],
)
def test_cpu_workers_from_cores(
    threads: int, workers: int | str, cores: int, want: list[tuple[int, None]]
) -> None:
    exe = ExecutionConfig(threads=threads, workers=workers, device="cpu")  # type: ignore[arg-type]
    slots = plan_slots(exe, n_units=10, gpus=["0"], cores=cores)  # device=cpu: GPUs ignored
    assert [(s.threads, s.cuda_visible_devices) for s in slots] == want


def test_units_longest_first_and_wsd_trunks_with_their_branches(tmp_path: Path) -> None:
    exp = load_experiment(tiny_toml(tmp_path, n_tokens="[2048, 8192, 4096]"))
    specs = expand(exp)
    units = plan_units(specs, exp.execution)
    assert [[r.n_tokens for r in u.runs] for u in units] == [[8192], [4096], [2048]]
    # WSD runs that differ only in D: one unit, the trunk (longest) first, its branches after.
    wsd = [
        dataclasses.replace(
            s, train=dataclasses.replace(s.train, schedule="wsd", warmup_tokens=256)
        )
        for s in specs
    ]
    (unit,) = plan_units(wsd, exp.execution)
    assert [r.n_tokens for r in unit.runs] == [8192, 2048, 4096]
    assert [b.n_tokens for b in unit.branches[unit.runs[0].run_id]] == [2048, 4096]


# --- locks -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_held_lock_names_its_holder_and_is_free_when_the_holder_dies(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from harness.execute.locks import "
        "RunLock; RunLock(Path(sys.argv[1])).acquire(); print('held', flush=True); "
        "time.sleep(60)"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        assert holder_of(tmp_path) is not None and f"pid {p.pid}" in str(holder_of(tmp_path))
        with pytest.raises(Held, match=f"pid {p.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        p.kill()
        p.wait()
    assert holder_of(tmp_path) is None  # the kernel dropped the dead holder's lock
    with RunLock(tmp_path):
        assert holder_of(tmp_path) is not None


# --- harness run: concurrency and signals ------------------------------------------------------


def _grid(tmp_path: Path, n_tokens: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return tiny_toml(tmp_path, n_tokens=n_tokens, execution="workers = 1\ncheckpoint_every_s = 0.5")


def _harness(toml: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(toml), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return [int(x) for x in out.split()]


def _wait_for_steps(run_root: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for m in run_root.glob("runs/*/metrics.csv"):
            if len(m.read_text().splitlines()) > 3:
                return
        time.sleep(0.2)
    raise AssertionError("no run got going")


def _steps_ok(run_dir: Path) -> bool:
    steps = [int(r.split(",")[0]) for r in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    return steps == sorted(set(steps))


@pytest.mark.slow
def test_two_processes_train_each_run_exactly_once(tmp_path: Path) -> None:
    toml = _grid(tmp_path, n_tokens="[65536, 98304, 131072]")
    # Both at once: started one after the other, a loaded machine let the first finish two of
    # its three runs before the second had imported torch, and they never met.
    a = _harness(toml)
    b = _harness(toml)
    _wait_for_steps(tmp_path / "results" / "tiny")
    status = subprocess.run(
        [sys.executable, "-m", "harness.cli", "status", str(tmp_path / "results" / "tiny")],
        capture_output=True,
        text=True,
    )
    assert "here: pid" in status.stdout, status.stdout  # the run a worker holds
    out_a, _ = a.communicate(timeout=600)
    out_b, _ = b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    root = tmp_path / "results" / "tiny"
    runs = sorted((root / "runs").iterdir())
    assert len(runs) == 3
    for run in runs:
        log = (run / "train.log").read_text()
        assert log.count("ended: done") == 1, (run, log)  # trained once, by one process
        assert _steps_ok(run)
    assert "held by another process" in out_a + out_b
    assert len(pd.read_csv(root / "runs.csv")) == 3


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_every_worker_with_a_checkpoint_and_resume_is_exact(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    ref_toml = _grid(tmp_path / "ref", n_tokens="[65536]")
    ref = _harness(ref_toml)
    ref.communicate(timeout=600)
    toml = _grid(tmp_path / "sig", n_tokens="[65536]")
    p = _harness(toml)
    root = tmp_path / "sig" / "results" / "tiny"
    _wait_for_steps(root)
    kids = _children(p.pid)
    assert kids, "no worker process"
    os.kill(p.pid, sig)  # the main PID alone
    out, _ = p.communicate(timeout=120)
    assert p.returncode == code, out
    assert f"interrupted by {sig.name}" in out and out.strip().count("\n") < 6
    # No worker survives; multiprocessing's resource tracker goes when it sees main gone.
    deadline = time.monotonic() + 10
    while [k for k in kids if Path(f"/proc/{k}").exists()] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [k for k in kids if Path(f"/proc/{k}").exists()]
    (run,) = (root / "runs").iterdir()
    assert list((run / "ckpt").glob("step_*.pt"))  # stopped with a checkpoint
    status = subprocess.run(
        [sys.executable, "-m", "harness.cli", "status", str(root)], capture_output=True, text=True
    )
    assert "interrupted" in status.stdout and "checkpoint at step" in status.stdout
    assert "`harness run EXP.toml` trains the failed and interrupted runs" in status.stdout
    again = _harness(toml)
    out2, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out2
    want = pd.read_csv(tmp_path / "ref" / "results" / "tiny" / "runs.csv")["loss"].tolist()
    assert pd.read_csv(root / "runs.csv")["loss"].tolist() == want  # bit for bit
    assert _steps_ok(run)


@pytest.mark.slow
def test_kill_9_of_the_main_process_leaves_no_process_behind(tmp_path: Path) -> None:
    # Issue 31: the worker, orphaned, waited on its pool's pipe for good. Now it checkpoints
    # its run at the next step and ends; nothing of the command's process group survives.
    toml = _grid(tmp_path, n_tokens="[65536]")
    p = _harness(toml)  # its own session: the group id is its pid
    root = tmp_path / "results" / "tiny"
    _wait_for_steps(root)
    assert _children(p.pid), "no worker process"
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=60)

    def group() -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "-g", str(p.pid)], capture_output=True, text=True)
        return [int(x) for x in out.stdout.split()]

    deadline = time.monotonic() + 60
    while group() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group(), subprocess.run(["ps", "-f", "-g", str(p.pid)], capture_output=True,
                                       text=True).stdout  # fmt: skip
    (run,) = (root / "runs").iterdir()
    assert list((run / "ckpt").glob("step_*.pt"))  # the orphan stopped with a checkpoint
    again = _harness(toml)  # and the run resumes from it
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out


@pytest.mark.slow
def test_kill_9_of_a_worker_fails_that_run_alone(tmp_path: Path) -> None:
    toml = _grid(tmp_path, n_tokens="[65536, 4096]")
    p = _harness(toml)
    root = tmp_path / "results" / "tiny"
    _wait_for_steps(root)
    (worker,) = [
        k for k in _children(p.pid) if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text()
    ][:1]
    os.kill(worker, signal.SIGKILL)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 1, out
    df = pd.read_csv(root / "runs.csv")
    assert sorted(df["status"]) == ["done", "failed"]
    assert "worker process died" in out
    again = _harness(toml)  # the failed run trains again, resuming from its checkpoint
    out2, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out2
    assert list(pd.read_csv(root / "runs.csv")["status"]) == ["done", "done"]


def test_a_stop_before_any_checkpoint_is_not_reported_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Issue 31: SIGHUP before any run folder existed printed "1 runs stopped with a checkpoint".
    from harness.execute.attempt import Outcome
    from harness.execute.local import Interrupted
    from harness.pipeline import _interrupted
    from harness.results import ExperimentLayout

    layout = ExperimentLayout(tmp_path / "results" / "x")
    with_ckpt = layout.run_dir("a") / "ckpt"
    with_ckpt.mkdir(parents=True)
    (with_ckpt / "step_00000010.pt").write_bytes(b"")
    outcomes = [Outcome(r, "interrupted") for r in ("a", "b")]
    code = _interrupted(Interrupted(signal.SIGHUP, outcomes), layout, "x.toml", 0.0)
    out = capsys.readouterr().out
    assert code == 129
    assert "1 runs stopped with a checkpoint, 1 before their first" in out, out


@pytest.mark.slow
def test_status_counts_the_grid_runs_that_have_no_folder(tmp_path: Path) -> None:
    # Issue 31: status counted only runs with a folder ("0/1" for a 2-run grid); `harness run`
    # now records the grid in jobs.json, as `submit` does.
    import shutil

    from harness.cli import main

    toml = tiny_toml(tmp_path, n_tokens="[1024, 2048]")
    assert main(["run", str(toml)]) == 0
    root = tmp_path / "results" / "tiny"
    runs = sorted(p for p in (root / "runs").iterdir() if p.is_dir())
    assert len(runs) == 2
    shutil.rmtree(runs[1])  # as if the grid were stopped before this run's folder was made
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "status", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "1 unsubmitted, 1 done" in out.stdout
    assert "grid: 1/2 runs finished" in out.stdout
    (row,) = [ln for ln in out.stdout.splitlines() if ln.startswith(runs[1].name)]
    assert "never started" in row
