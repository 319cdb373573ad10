"""Progress while training: a run's step, loss and ETA from its metrics.csv (`harness status`,
the workers' lines of `harness run`'s bar), and the grid's runs, FLOPs and ETA. Every number is
computed by hand from metrics.csv files written here."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import pytest
from _tiny import harness_cli, tiny_toml

from harness.config import load_experiment
from harness.execute import status as status_mod
from harness.execute.local import _Bars, plan_units
from harness.execute.locks import RunLock
from harness.execute.progress import (
    eta_s,
    grid_eta_s,
    grid_line,
    read_progress,
    run_line,
)
from harness.execute.status import grid_summary, run_statuses, status_table
from harness.grid import expand
from harness.model import count_params
from harness.results import ExperimentLayout
from harness.rundir import RunDir
from harness.units import fmt_duration, fmt_si_unit

HEADER = "step,tokens,train_loss,val_loss,lr,wall_s\n"


def _metrics(run_dir: Path, rows: list[tuple[int, float, float | None, float]]) -> None:
    """metrics.csv of (step, train_loss, val_loss, wall_s) rows; 256 tokens a step."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{s},{256 * s},{tl},{'' if vl is None else vl},0.001,{w}\n" for s, tl, vl, w in rows]
    (run_dir / "metrics.csv").write_text(HEADER + "".join(lines))


# A run at step 70: step 10 took 5 s (start-up), then 2 s per 10 steps (0.2 s a step);
# an evaluation at step 50; and a torn last line, as a process killed mid-append leaves it.
RUNNING_ROWS = [
    (10, 3.0, None, 5.0),
    (20, 2.5, None, 12.0),
    (30, 2.2, None, 14.0),
    (40, 2.0, None, 16.0),
    (50, 1.9, 2.5, 18.0),
    (60, 1.8, None, 20.0),
    (70, 1.75, None, 22.0),
]


def test_read_progress_takes_the_recent_pace_and_the_newest_evaluation(tmp_path: Path) -> None:
    _metrics(tmp_path, RUNNING_ROWS)
    with (tmp_path / "metrics.csv").open("a") as f:
        f.write("80,20480,1.7")  # torn: no val_loss, lr, wall_s
    p = read_progress(tmp_path)
    assert p is not None
    assert (p.step, p.tokens, p.train_loss, p.val_loss, p.wall_s) == (70, 17920, 1.75, 2.5, 22.0)
    # The last 5 intervals (steps 20..70): (22 - 12) / 50; all rows would give 17 / 60.
    assert p.s_per_step == pytest.approx(0.2)
    assert eta_s(p.step, 1024, p.s_per_step) == pytest.approx(954 * 0.2)
    assert run_line("abc", p, 1024) == "run abc step 70/1024, loss 1.75, ETA 3m11s"
    # A tail without the evaluation row: no validation loss, the same pace.
    tail = read_progress(tmp_path, tail_bytes=70)  # rows 60 and 70
    assert tail is not None and tail.val_loss is None and tail.step == 70
    assert tail.s_per_step == pytest.approx(0.2)


def test_one_row_has_no_pace_and_no_file_no_progress(tmp_path: Path) -> None:
    assert read_progress(tmp_path) is None
    _metrics(tmp_path, RUNNING_ROWS[:1])
    p = read_progress(tmp_path)
    assert p is not None and p.step == 10 and p.s_per_step is None
    assert eta_s(p.step, 100, p.s_per_step) is None
    assert run_line("abc", p, 100) == "run abc step 10/100, loss 3, ETA -"
    assert run_line("abc", None, 100) == "run abc step 0/100, starting"


def test_formatters() -> None:
    assert fmt_si_unit(1.2e15, "FLOP") == "1.20 PFLOP"
    assert fmt_si_unit(3.4e15, "FLOP") == "3.40 PFLOP"
    assert fmt_si_unit(36.9e9, "FLOP") == "36.9 GFLOP"
    assert fmt_si_unit(512, "FLOP") == "512 FLOP"
    assert fmt_si_unit(999.7e3, "FLOP") == "1.00 MFLOP"  # rounds up into the next prefix
    assert fmt_si_unit(0, "FLOP") == "0 FLOP"
    assert [fmt_duration(s) for s in (0, 42, 185, 3600, 7500, 200000, None)] == [
        "0s",
        "42s",
        "3m05s",
        "1h00m",
        "2h05m",
        "2d07h",
        "-",
    ]


def test_the_grid_eta_leaves_out_what_was_done_before() -> None:
    # 2 PFLOP were done before this command; 4 PFLOP trained here in 100 s: 4e13 FLOP/s, and
    # 4 PFLOP are left: 100 s. Counting the 2 PFLOP done before would say 66.7 s.
    assert grid_eta_s(6e15, 2e15, 10e15, 100.0) == pytest.approx(100.0)
    assert grid_eta_s(2e15, 2e15, 10e15, 100.0) is None  # nothing trained here yet
    assert grid_line(3, 12, 1.2e15, 3.4e15, 310.0) == "3/12 runs, 1.20 PFLOP/3.40 PFLOP, ETA 5m10s"
    assert grid_line(3, 12, 1.2e15, 3.4e15, None, failed=1) == (
        "3/12 runs (1 failed), 1.20 PFLOP/3.40 PFLOP, ETA -"
    )


def _tiny(tmp_path: Path, n_tokens: str) -> tuple[ExperimentLayout, list]:
    exp = load_experiment(tiny_toml(tmp_path, n_tokens=n_tokens))
    specs = expand(exp)
    assert count_params(specs[0].model).non_embedding == 13408  # the hand-computed FLOPs below
    return ExperimentLayout(exp.results_path.resolve()), specs


def test_the_grid_bar_counts_runs_done_before_but_not_in_its_rate(tmp_path: Path) -> None:
    exp = load_experiment(tiny_toml(tmp_path, n_tokens="[65536, 262144]"))
    layout = ExperimentLayout(exp.results_path.resolve())
    before, todo = expand(exp)  # 256 and 1024 steps
    RunDir(layout.run_dir(before.run_id)).write_spec(before)
    (layout.run_dir(before.run_id) / "result.json").write_text(
        json.dumps({"status": "done", "val_loss": 2.0})
    )
    RunDir(layout.run_dir(todo.run_id)).write_spec(todo)
    _metrics(layout.run_dir(todo.run_id), RUNNING_ROWS[:2])  # resumed at step 20
    units = plan_units([todo], exp.execution)
    worker = SimpleNamespace(unit=units[0], slot=SimpleNamespace(label="worker 0"))
    bars = _Bars(exp, deque(units), [worker], layout, [before, todo])  # type: ignore[list-item]
    f = 6 * 13408 * 256  # FLOPs a step
    assert bars.totals() == (1, 2, 0, f * (256 + 20), f * (256 + 1024))
    assert bars.at_start == f * (256 + 20)  # the run found done and the resumed steps
    _metrics(layout.run_dir(todo.run_id), RUNNING_ROWS)  # 50 steps further
    bars.refresh()  # the clock starts at the first FLOPs trained here
    assert bars.at_start == f * (256 + 70) and bars.t0 is not None
    bars.t0 -= 10.0  # 10 s later: 30 more steps
    _metrics(layout.run_dir(todo.run_id), [*RUNNING_ROWS, (100, 1.7, None, 28.0)])
    bars.refresh()
    # 30 steps' FLOPs in 10 s, 924 steps' left: 308 s. (Counting the run found done and the
    # 70 steps before the clock started, 356 steps in 10 s, it would say 26 s.)
    assert bars.grid.bar_format.endswith("| 1/2 runs, 7.33 GFLOP/26.4 GFLOP, ETA 5m08s"), (
        bars.grid.bar_format
    )
    # The worker's line: the run's pace over its last 5 intervals, (28 - 14) / 70 = 0.2 s.
    assert bars.lines[0].desc == f"worker 0: run {todo.run_id} step 100/1024, loss 1.7, ETA 3m05s"
    bars.close()


def test_status_shows_step_losses_and_eta_of_a_running_run(tmp_path: Path) -> None:
    layout, specs = _tiny(tmp_path, "[65536, 262144]")
    small, big = specs  # 256 and 1024 steps of 256 tokens
    for s in specs:
        RunDir(layout.run_dir(s.run_id)).write_spec(s)
    _metrics(layout.run_dir(big.run_id), RUNNING_ROWS)
    # The small run stopped with a checkpoint at step 100: interrupted, no ETA.
    _metrics(layout.run_dir(small.run_id), [(50, 2.0, None, 10.0), (100, 1.9, 2.1, 20.0)])
    (layout.run_dir(small.run_id) / "ckpt").mkdir()
    (layout.run_dir(small.run_id) / "ckpt" / "step_100.pt").write_bytes(b"")
    with RunLock(layout.run_dir(big.run_id)):  # a `harness run` trains it now
        rows = {r.run_id: r for r in run_statuses(layout)}
        assert rows[big.run_id].state == "running"
        assert rows[big.run_id].eta_s == pytest.approx(954 * 0.2)
        assert rows[small.run_id].state == "interrupted" and rows[small.run_id].eta_s is None
        proc = harness_cli("status", str(layout.root))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["run_id", "state", "N", "D", "job", "step", "train", "val"] + [
        "ETA",
        "detail",
    ]
    (running,) = [ln for ln in lines if ln.startswith(big.run_id)]
    assert running.split()[:9] == [
        big.run_id,
        "running",
        "1.34e4",
        "2.62e5",
        "-",
        "70/1024",
        "1.7500",
        "2.5000",
        "3m11s",  # (1024 - 70) steps x 0.2 s = 190.8 s
    ]
    assert "here: pid" in running
    (stopped,) = [ln for ln in lines if ln.startswith(small.run_id)]
    assert stopped.split()[:9] == [
        small.run_id,
        "interrupted",
        "1.34e4",
        "6.55e4",
        "-",
        "100/256",
        "1.9000",
        "2.1000",
        "-",
    ]
    assert "checkpoint at step 100; `harness run` resumes it" in stopped
    # 6 N D: 6 x 13408 x (65536 + 262144) = 26.4 GFLOP; done 6 x 13408 x 256 x (100 + 70) =
    # 3.50 GFLOP. The running run does 6 x 13408 x 256 FLOP in 0.2 s; 1110 steps' FLOPs are
    # left: 222 s = 3m42s (more than its own 3m11s).
    assert (
        "grid: 0/2 runs finished, 3.50 GFLOP/26.4 GFLOP, ETA 3m42s at the pace of the 1 running run"
        in lines
    )


def test_a_slurm_job_running_reads_the_same_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, specs = _tiny(tmp_path, "[262144]")
    (spec,) = specs
    RunDir(layout.run_dir(spec.run_id)).write_spec(spec)
    _metrics(layout.run_dir(spec.run_id), RUNNING_ROWS)
    entry = {"job_id": "7_0", "cluster": "slurm", "stderr": str(tmp_path / "7_0.err")}
    entry["submitted_unix"] = 0
    jobs = {"schema": 1, "grid": [spec.run_id], "runs": {spec.run_id: [entry]}}
    (layout.root / "jobs.json").write_text(json.dumps(jobs))
    monkeypatch.setattr(status_mod, "_slurm_states", lambda ids: dict.fromkeys(ids, "RUNNING"))
    (row,) = run_statuses(layout)
    assert (row.state, row.slurm_state) == ("running", "RUNNING")
    line = status_table([row])[1]
    assert line.split()[:9] == [
        spec.run_id,
        "running",
        "1.34e4",
        "2.62e5",
        "7_0",
        "70/1024",
        "1.7500",
        "2.5000",
        "3m11s",
    ]
    assert grid_summary([row]) == (
        "grid: 0/1 runs finished, 1.44 GFLOP/21.1 GFLOP, ETA 3m11s at the pace of the 1 running run"
    )
    monkeypatch.setattr(status_mod, "_slurm_states", lambda ids: dict.fromkeys(ids, "PENDING"))
    (row,) = run_statuses(layout)  # requeued (preempted): its steps, no ETA
    assert row.state == "queued" and row.eta_s is None
    assert status_table([row])[1].split()[5:9] == ["70/1024", "1.7500", "2.5000", "-"]
    assert grid_summary([row]).endswith("no run training: no ETA")


@pytest.mark.slow
def test_no_bar_when_stderr_is_not_a_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    toml = tiny_toml(tmp_path, execution="workers = 1")
    toml.write_text(toml.read_text().replace("progress = false", "progress = true"))
    assert main(["run", str(toml)]) == 0
    out, err = capfd.readouterr()
    assert "2 to train" in out
    assert "grid tiny" not in err and "worker 0" not in err, err
