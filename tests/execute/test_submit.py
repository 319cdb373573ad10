"""`harness submit` / `harness status` without a SLURM cluster: resources per model size, the
golden sbatch script, jobs.json bookkeeping and dedupe, SLURM state parsing, the job's signal
path, and submitit's in-process "debug" executor end to end.

The same paths against a real cluster: tests/execute/test_submit_slurm.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _tiny import tiny_toml

from harness.cli import main
from harness.config import ClusterConfig, SizeResources, load_experiment
from harness.errors import InputError
from harness.execute import job as job_mod
from harness.execute import status as status_mod
from harness.execute.job import TrainJob
from harness.execute.slurm import resources_for, sbatch_script, split_parallel, submit
from harness.execute.status import last_error_line, read_jobs, run_statuses
from harness.grid import expand
from harness.results import ExperimentLayout

GOLDEN = Path(__file__).parent / "golden"


def tiny_experiment(tmp_path: Path, extra: str = "", overrides: list[str] | None = None):
    """The tiny grid (a run of 1024 tokens trains in ~1 s) with test-cluster resources."""
    cluster = """
[cluster]
partition = "debug"
mem_gb = 0.25
cpus_per_run = 1
gpus_per_run = 0
time_min = 5
"""
    toml = tiny_toml(tmp_path, extra=cluster + extra)
    return load_experiment(toml, overrides), toml


# --- resources -----------------------------------------------------------------------------------


def test_resources_by_model_size() -> None:
    cluster = ClusterConfig(
        partition="gpu",
        gpus_per_run=1,
        time_min=60,
        mem_gb=32,
        by_size=(
            SizeResources(min_n_params=10_000_000, gpus_per_run=2, time_min=240),
            SizeResources(
                min_n_params=1_000_000_000, gpus_per_run=8, mem_gb=480.0, partition="gpu-large"
            ),
        ),
    )
    small = resources_for(cluster, 5_000_000)
    assert (small.partition, small.gpus_per_run, small.time_min, small.mem_gb) == ("gpu", 1, 60, 32)
    mid = resources_for(cluster, 10_000_000)  # the threshold is inclusive
    assert (mid.partition, mid.gpus_per_run, mid.time_min, mid.mem_gb) == ("gpu", 2, 240, 32)
    big = resources_for(cluster, 3_000_000_000)  # the largest fitting table wins, unset fields
    assert (big.partition, big.gpus_per_run, big.time_min, big.mem_gb) == ("gpu-large", 8, 60, 480)


def test_cluster_settings_from_toml_and_command_line(tmp_path: Path) -> None:
    exp, _ = tiny_experiment(
        tmp_path,
        extra="""
setup = ["module load cuda/12.1"]
extra = ["reservation=res1", "exclusive"]
[[cluster.by_size]]
min_n_params = 1e4
gpus_per_run = 2
""",
        overrides=["--cluster.account=proj", "--cluster.max_parallel=4"],
    )
    c = exp.cluster
    assert (c.account, c.max_parallel, c.setup, c.extra) == (
        "proj",
        4,
        ("module load cuda/12.1",),
        ("reservation=res1", "exclusive"),
    )
    assert c.by_size == (SizeResources(min_n_params=10_000, gpus_per_run=2),)
    (spec, _) = expand(exp)
    text = sbatch_script(c, n_params=13_000, n_tasks=2, folder=tmp_path / "slurm" / "%j")
    assert "#SBATCH --gpus-per-node=2" in text and "#SBATCH --exclusive" in text
    assert "#SBATCH --reservation=res1" in text and "#SBATCH --account=proj" in text
    assert "#SBATCH --array=0-1%2" in text
    # A run on several GPUs: one task (torch.distributed rank) per GPU, on each of its nodes.
    assert "#SBATCH --ntasks-per-node=2" in text and "#SBATCH --nodes=1" in text
    wide = dataclasses.replace(c, by_size=(), gpus_per_run=8, nodes_per_run=2)
    text = sbatch_script(wide, n_params=13_000, n_tasks=1, folder=tmp_path / "slurm" / "%j")
    assert "#SBATCH --gpus-per-node=8" in text and "#SBATCH --ntasks-per-node=8" in text
    assert "#SBATCH --nodes=2" in text
    cpu = dataclasses.replace(c, by_size=(), gpus_per_run=0, tasks_per_run=2)
    text = sbatch_script(cpu, n_params=13_000, n_tasks=1, folder=tmp_path / "slurm" / "%j")
    assert "#SBATCH --ntasks-per-node=2" in text and "gpus-per-node" not in text
    with pytest.raises(ValueError, match="tasks_per_run = 4: 0 or gpus_per_run = 8"):
        dataclasses.replace(wide, tasks_per_run=4)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("--cluster.extra=['--time=5']", "an sbatch option without the leading --"),
        ("--cluster.by_size=[{min_n_params=5, gpus_per_run=-1}]", "gpus_per_run"),
        (
            "--cluster.by_size=[{min_n_params=5}, {min_n_params=5}]",
            "each min_n_params may appear once",
        ),
        ("--cluster.by_size=[{min_params=5}]", "unknown key 'cluster.by_size\\[0\\].min_params'"),
    ],
)
def test_bad_cluster_settings_are_one_line_errors(tmp_path: Path, bad: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        tiny_experiment(tmp_path, overrides=[bad])


def test_max_parallel_is_shared_among_arrays() -> None:
    split = split_parallel
    assert split(64, [3, 5]) == [3, 5]  # everything fits
    assert split(8, [20]) == [8]
    shares = split(8, [30, 10, 1])
    assert sum(shares) == 8 and all(s >= 1 for s in shares) and shares[0] > shares[1]
    assert split(2, [5, 5, 5]) == [1, 1, 1]  # at least one each


# --- golden sbatch script ------------------------------------------------------------------------


def _normalise(text: str, folder: Path) -> str:
    import shlex

    return text.replace(str(folder.parents[2]), "<RESULTS>").replace(
        shlex.quote(sys.executable), "<PYTHON>"
    )


def test_golden_sbatch_for_a_typical_gpu_configuration(tmp_path: Path) -> None:
    cluster = ClusterConfig(
        partition="gpu",
        account="myproject",
        qos="normal",
        time_min=240,
        gpus_per_run=1,
        cpus_per_run=8,
        mem_gb=64.0,
        constraint="a100",
        max_parallel=8,
        setup=(
            "module load cuda/12.1",
            "source ~/venvs/harness/bin/activate",
            "export OMP_NUM_THREADS=8",
        ),
        extra=("mail-type=FAIL",),
    )
    folder = tmp_path / "results" / "chinchilla" / "slurm" / "%j"
    text = _normalise(
        sbatch_script(
            cluster, n_params=85_000_000, n_tasks=20, folder=folder, name="harness-chinchilla"
        ),
        folder,
    )
    golden = GOLDEN / "sbatch_gpu.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    expected = golden.read_text() if golden.exists() else ""
    assert text == expected, (
        f"the sbatch script differs from {golden}; if the change is intended, regenerate it with "
        f"UPDATE_GOLDEN=1 python -m pytest {__file__} -k golden\n--- got ---\n{text}"
    )


# --- SLURM state parsing -------------------------------------------------------------------------


def test_slurm_states_from_squeue_and_sacct(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = {
        "squeue": "12_3|RUNNING\n12_4|PENDING\n12_5|PENDING\n",
        "sacct": (
            "12_0|COMPLETED\n12_1|FAILED\n12_2|CANCELLED by 0\n12_3|RUNNING\n"
            "12_[4-5%2]|PENDING\n12_6|RUNNING\n13|OUT_OF_MEMORY\n"
        ),
    }
    monkeypatch.setattr(
        status_mod, "_run", lambda cmd: subprocess.CompletedProcess(cmd, 0, outputs[cmd[0]], "")
    )
    ids = ["12_0", "12_1", "12_2", "12_3", "12_4", "12_5", "12_6", "13", "14"]
    assert status_mod._slurm_states(ids) == {
        "12_0": "COMPLETED",
        "12_1": "FAILED",
        "12_2": "CANCELLED",
        "12_3": "RUNNING",
        "12_4": "PENDING",
        "12_5": "PENDING",
        "12_6": "ENDED",  # out of the queue, accounting not caught up: not active
        "13": "OUT_OF_MEMORY",
        "14": "UNKNOWN",
    }


def test_without_squeue_and_sacct_a_submitted_run_is_unknown_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp, _ = tiny_experiment(tmp_path, overrides=["--grid.n_tokens=[1024]"])
    (spec,) = expand(exp)
    layout = ExperimentLayout(exp.results_path.resolve())
    layout.root.mkdir(parents=True)
    (layout.root / "jobs.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "runs": {spec.run_id: [_fake_entry("3_0", tmp_path / "x.err", age_s=3600)]},
            }
        )
    )
    monkeypatch.setattr(status_mod, "_run", lambda cmd: None)  # a laptop: no squeue, no sacct
    (st,) = run_statuses(layout)
    assert st.state == "unknown" and "did not answer" in st.error
    assert submit(exp, cluster="debug")[0] == []  # never resubmitted on a guess


def test_last_error_line_of_a_job_log(tmp_path: Path) -> None:
    log = tmp_path / "x_0_log.err"
    log.write_text(
        "submitit INFO (2026-11-28) - Starting with JobEnvironment(job_id=5)\n"
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "NotADirectoryError: [Errno 20] Not a directory: '/r/ckpt/x.pt'\n"
        "submitit ERROR (2026-11-28) - Submitted job triggered an exception\n"
        "srun: error: vm: task 0: Exited with exit code 1\n"
    )
    assert last_error_line(log) == "NotADirectoryError: [Errno 20] Not a directory: '/r/ckpt/x.pt'"
    log.write_text(
        "start\nslurmstepd-vm: error: *** JOB 7 ON vm CANCELLED AT 2026 DUE TO TIME LIMIT ***\n"
    )
    assert "DUE TO TIME LIMIT" in last_error_line(log)
    assert last_error_line(tmp_path / "missing.err") == ""


# --- bookkeeping and dedupe ----------------------------------------------------------------------


def _fake_entry(job_id: str, stderr: Path, age_s: float = 0.0) -> dict:
    return {
        "job_id": job_id,
        "array_job_id": job_id.split("_")[0],
        "array_index": 0,
        "cluster": "slurm",
        "stdout": str(stderr).replace(".err", ".out"),
        "stderr": str(stderr),
        "submitted_at": "",
        "submitted_unix": time.time() - age_s,
        "resources": {},
    }


def test_submit_skips_queued_and_running_runs_and_resubmits_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp, _ = tiny_experiment(tmp_path, overrides=["--grid.n_tokens=[1024, 2048, 3072, 4096]"])
    specs = expand(exp)
    layout = ExperimentLayout(exp.results_path.resolve())
    layout.root.mkdir(parents=True)
    err = tmp_path / "9_2_0_log.err"
    err.write_text("Traceback (most recent call last):\nMemoryError: boom\n")
    jobs = {
        "schema": 1,
        "experiment": exp.name,
        "grid": [s.run_id for s in specs],
        "runs": {
            specs[0].run_id: [_fake_entry("9_0", tmp_path / "a.err")],  # running
            specs[1].run_id: [_fake_entry("9_1", tmp_path / "b.err")],  # pending
            specs[2].run_id: [_fake_entry("9_2", err, age_s=600)],  # died without a result
        },
    }
    (layout.root / "jobs.json").write_text(json.dumps(jobs))
    fake = {"9_0": "RUNNING", "9_1": "PENDING", "9_2": "FAILED"}
    monkeypatch.setattr(status_mod, "_slurm_states", lambda ids: {i: fake[i] for i in ids})

    before = {s.run_id: s for s in run_statuses(layout)}
    assert [before[s.run_id].state for s in specs] == ["running", "queued", "failed", "unsubmitted"]
    assert before[specs[2].run_id].error == "MemoryError: boom"
    assert before[specs[2].run_id].log == str(err)
    assert main(["status", str(layout.root)]) == 1  # a failed run: the work failed

    submitted, _ = submit(exp, cluster="debug", only_failed=True)
    assert [s.run_id for s in submitted] == [specs[2].run_id]
    submitted, _ = submit(exp, cluster="debug")
    assert [s.run_id for s in submitted] == [specs[3].run_id]  # never the running/queued ones
    after = {s.run_id: s for s in run_statuses(layout)}
    assert [after[s.run_id].state for s in specs] == ["running", "queued", "done", "done"]
    recorded = read_jobs(layout)["runs"]
    assert len(recorded[specs[2].run_id]) == 2  # the history of submissions is kept
    assert recorded[specs[2].run_id][-1]["cluster"] == "debug"
    assert read_jobs(layout)["grid"] == [s.run_id for s in specs]
    assert submit(exp, cluster="debug")[0] == []  # all done: nothing to submit


def test_a_job_unknown_to_slurm_counts_as_queued_only_shortly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp, _ = tiny_experiment(tmp_path, overrides=["--grid.n_tokens=[1024, 2048]"])
    specs = expand(exp)
    layout = ExperimentLayout(exp.results_path.resolve())
    layout.root.mkdir(parents=True)
    (layout.root / "jobs.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "runs": {
                    specs[0].run_id: [_fake_entry("3_0", tmp_path / "x.err", age_s=5)],
                    specs[1].run_id: [_fake_entry("3_1", tmp_path / "y.err", age_s=3600)],
                },
            }
        )
    )
    monkeypatch.setattr(status_mod, "_slurm_states", lambda ids: dict.fromkeys(ids, "UNKNOWN"))
    states = {s.run_id: s for s in run_statuses(layout)}
    assert states[specs[0].run_id].state == "queued"  # accounting lags a new job
    assert states[specs[1].run_id].state == "failed"
    assert "ended (UNKNOWN) before it started" in states[specs[1].run_id].error


@pytest.mark.slow
def test_submit_without_sbatch_is_one_clear_line(tmp_path: Path) -> None:
    _, toml = tiny_experiment(tmp_path)
    env = {**os.environ, "PATH": str(tmp_path / "nothing-here")}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "submit", str(toml)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: sbatch not found; is this a SLURM login node? use `harness run` to train locally\n"
    )


def test_status_and_collect_after_a_debug_submission(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp, toml = tiny_experiment(tmp_path)
    assert main(["submit", str(toml), "--cluster", "debug"]) == 0
    out = capsys.readouterr().out
    assert "2 unsubmitted" in out and "submitted 2 run(s)" in out
    root = exp.results_path.resolve()
    assert main(["status", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 done" in out and out.count(" done ") == 2
    assert main(["collect", str(root)]) == 0
    assert len((root / "runs.csv").read_text().splitlines()) == 3
    assert main(["submit", str(toml), "--cluster", "debug", "--only-failed"]) == 0
    assert "nothing to submit (no failed runs)" in capsys.readouterr().out


def test_dry_run_prints_one_script_per_resource_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, toml = tiny_experiment(
        tmp_path,
        extra="""
[[cluster.by_size]]
min_n_params = 20000
time_min = 30
""",
    )
    assert (
        main(
            [
                "submit",
                str(toml),
                "--dry-run",
                "--grid.shapes=[{n_layer=1, n_embd=32}, {n_layer=1, n_embd=64}]",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 2
    assert "#SBATCH --time=5" in out and "#SBATCH --time=30" in out
    assert not (tmp_path / "results" / "tiny" / "jobs.json").exists()


# --- the job's signal path, in this process ------------------------------------------------------


@pytest.mark.slow
def test_train_job_checkpoints_on_usr2_hands_over_to_submitit_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    from harness.train import train

    exp, _ = tiny_experiment(tmp_path, overrides=["--grid.n_tokens=[8192]"])
    (spec,) = expand(exp)
    ref = train(spec, tmp_path / "ref" / "runs" / spec.run_id, execution=exp.execution)
    run_dir = tmp_path / "results" / "tiny" / "runs" / spec.run_id
    args = ([[spec.to_dict()]], str(run_dir.parents[1]), {"threads": 1, "progress": False})

    handed_over = []

    def submitit_handler(signum, frame):  # stands in for submitit's checkpoint_and_try_requeue
        handed_over.append(signum)
        raise SystemExit(-1)

    def preempt_when_training() -> None:
        metrics = run_dir / "metrics.csv"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) > 3):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR2)

    old_usr2 = signal.signal(signal.SIGUSR2, submitit_handler)
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        thread = threading.Thread(target=preempt_when_training)
        thread.start()
        with pytest.raises(SystemExit):
            TrainJob()(*args)
        thread.join()
        assert handed_over == [signal.SIGUSR2]
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler  # restored
        assert signal.getsignal(signal.SIGTERM) is old_term
        ckpts = sorted((run_dir / "ckpt").iterdir())
        assert ckpts and not (run_dir / "result.json").exists()
        stopped_at = int(ckpts[-1].stem.split("_")[1])
        assert 0 < stopped_at < spec.n_steps
        out = TrainJob()(*args)  # the requeued job
    finally:
        signal.signal(signal.SIGUSR2, old_usr2)
    assert ref is not None and [o["val_loss"] for o in out] == [ref.val_loss]
    log = (run_dir / "train.log").read_text()
    assert f"resuming {spec.run_id} at step {stopped_at} of {spec.n_steps}" in log


@pytest.mark.slow
def test_a_stray_sigterm_checkpoints_waits_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.train import train

    monkeypatch.setattr(job_mod, "TERM_WAIT_S", 0.3)  # SLURM would have killed it by then
    exp, _ = tiny_experiment(tmp_path, overrides=["--grid.n_tokens=[8192]"])
    (spec,) = expand(exp)
    ref = train(spec, tmp_path / "ref" / "runs" / spec.run_id, execution=exp.execution)
    run_dir = tmp_path / "results" / "tiny" / "runs" / spec.run_id

    def term_when_training() -> None:
        metrics = run_dir / "metrics.csv"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) > 3):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    old_term = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=term_when_training)
    thread.start()
    (out,) = TrainJob()(
        [[spec.to_dict()]], str(run_dir.parents[1]), {"threads": 1, "progress": False}
    )
    thread.join()
    assert signal.getsignal(signal.SIGTERM) is old_term
    assert ref is not None and out["val_loss"] == ref.val_loss
    log = (run_dir / "train.log").read_text()
    assert "got SIGTERM" in log and "not killed" in log and "resuming" in log


def test_train_job_records_a_failure_and_a_rerun_succeeds(tmp_path: Path) -> None:
    exp, _ = tiny_experiment(tmp_path, overrides=["--train.checkpoint_every_steps=2"])
    spec = expand(exp)[0]
    run_dir = tmp_path / "results" / "tiny" / "runs" / spec.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "ckpt").write_text("a file where the checkpoint folder belongs")
    args = ([[spec.to_dict()]], str(run_dir.parents[1]), {"threads": 1, "progress": False})
    with pytest.raises(OSError):
        TrainJob()(*args)
    failed = json.loads((run_dir / "result.json").read_text())
    assert failed["status"] == "failed" and "ckpt" in failed["error"]
    (run_dir / "ckpt").unlink()
    assert [o["status"] for o in TrainJob()(*args)] == ["done"]
    assert json.loads((run_dir / "result.failed.json").read_text())["status"] == "failed"
    # a duplicate job of a finished run: a no-op
    assert [o["status"] for o in TrainJob()(*args)] == ["done"]


# --- several small runs in one job (cluster.runs_per_job) ----------------------------------------


def test_plan_jobs_packs_units_up_to_runs_per_job_and_scales_the_time_limit(tmp_path: Path) -> None:
    from harness.config import ExecutionConfig
    from harness.execute.slurm import plan_jobs

    exp, _ = tiny_experiment(
        tmp_path, overrides=["--grid.n_tokens=[1024, 2048, 4096, 8192, 16384]"]
    )
    specs = expand(exp)
    cluster = ClusterConfig(time_min=7, runs_per_job=2)
    planned = plan_jobs(specs, cluster, ExecutionConfig())
    assert {
        res.time_min: [[[s.run_id for s in u] for u in job] for job in jobs]
        for res, jobs in planned.items()
    } == {
        14: [[[specs[0].run_id], [specs[1].run_id]], [[specs[2].run_id], [specs[3].run_id]]],
        7: [[[specs[4].run_id]]],
    }
    (one,) = plan_jobs(specs, ClusterConfig(time_min=7), ExecutionConfig()).values()
    assert [[u[0].run_id for u in job] for job in one] == [[s.run_id] for s in specs]
    script = sbatch_script(cluster, n_params=1000, n_tasks=2, folder=tmp_path, units_per_job=2)
    assert "#SBATCH --time=14" in script and "#SBATCH --array=0-1%2" in script


@pytest.mark.slow
def test_runs_packed_into_one_job_train_exactly_as_alone(tmp_path: Path) -> None:
    from harness.train import train

    exp, toml = tiny_experiment(
        tmp_path, overrides=["--grid.n_tokens=[1024, 2048, 4096]", "--cluster.runs_per_job=2"]
    )
    specs = expand(exp)
    alone = {
        s.run_id: train(s, tmp_path / "alone" / s.run_id, execution=exp.execution) for s in specs
    }
    submitted, _ = submit(exp, cluster="debug")
    by_job: dict[str, list[str]] = {}
    for s in submitted:
        by_job.setdefault(s.job_id, []).append(s.run_id)
    assert sorted(by_job.values(), key=len) == [
        [specs[2].run_id],
        [specs[0].run_id, specs[1].run_id],
    ]
    layout = ExperimentLayout(exp.results_path.resolve())
    assert {st.run_id: st.state for st in run_statuses(layout)} == {s.run_id: "done" for s in specs}
    for s in specs:
        result = json.loads((layout.run_dir(s.run_id) / "result.json").read_text())
        assert result["val_loss"] == alone[s.run_id].val_loss
    assert submit(exp, cluster="debug")[0] == []


def test_runs_per_job_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, toml = tiny_experiment(tmp_path)
    assert main(["plan", str(toml), "--cluster.runs_per_job=0"]) == 2
    err = capsys.readouterr().err
    assert "runs_per_job" in err and "must be >= 1" in err and len(err.strip().splitlines()) == 1
