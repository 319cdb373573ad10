"""Execution of runs: on this machine (the default) or on SLURM through submitit.

This is the only module that imports submitit. Local runs (`harness run`) are
`harness.execute.local`'s; this module keeps what both share: which runs are pending, the
divergence retries, the record of a failed run.

SLURM (``harness submit``): the runs that are neither finished nor queued nor running go out as
submitit job arrays (one per distinct set of resources), at most ``cluster.max_parallel`` tasks
running at once, and ``submit`` returns at once. ``RESULTS/NAME/jobs.json`` records, per run,
every submission: job id, array index, log paths, time. A run's state combines its run
directory (result.json) with SLURM's view of its newest job (squeue, then sacct), so a job that
died without a result (crash, scancel, out of memory, node failure) reads as failed, with the
last error line of its log. Every job is a `TrainJob` (`submitit.helpers.Checkpointable`): on
the preemption/time-limit signal it checkpoints at the next step boundary and has submitit
requeue it; on SIGTERM (``scancel``, ``scontrol requeue``) it checkpoints and goes on until
killed. However it restarts, `harness.train.train` resumes from the newest checkpoint in the
run directory, not from the pickle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import shutil
import subprocess
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import submitit

from harness import __version__
from harness.atomic import atomic_write_json
from harness.config import ClusterConfig, ExecutionConfig, ExperimentConfig, to_dict
from harness.errors import InputError
from harness.execute.locks import holder_of
from harness.grid import RunSpec, spec_from_dict
from harness.results import (
    FINISHED,
    ExperimentLayout,
    check_spec,
    close_run_log,
    open_run_log,
    read_json,
    read_result,
    run_state,
    write_result,
    write_spec,
)

__all__ = [
    "Resources",
    "RunStatus",
    "Submission",
    "TrainGroupJob",
    "TrainJob",
    "pending_runs",
    "read_jobs",
    "resources_for",
    "run_statuses",
    "sbatch_script",
    "submit",
]


def pending_runs(specs: list[RunSpec], layout: ExperimentLayout) -> list[RunSpec]:
    """The runs without a finished result (failed and interrupted runs are tried again), then
    divergence retries that an interrupted `harness run` left unfinished.

    Raises
    ------
    InputError
        A run directory holds another run's spec.json (checked before anything trains).
    """
    for s in specs:
        check_spec(layout.run_dir(s.run_id), s)
    todo = [s for s in specs if run_state(layout.run_dir(s.run_id)) not in FINISHED]
    return todo + _unfinished_retries(specs, layout)


RETRY_JSON = "retry.json"


def retry_spec(spec: RunSpec, lr_factor: float) -> RunSpec:
    """The same grid point with its learning rate times ``lr_factor`` (a new run_id)."""
    return dataclasses.replace(
        spec, train=dataclasses.replace(spec.train, lr=spec.train.lr * lr_factor)
    )


def _retry_depth(run_dir: Path) -> int:
    """0 for a grid run; k for the k-th divergence retry (run_dir/retry.json)."""
    path = run_dir / RETRY_JSON
    if not path.exists():
        return 0
    depth = read_json(path).get("retry", 0)
    return depth if isinstance(depth, int) else 0


def _unfinished_retries(specs: list[RunSpec], layout: ExperimentLayout) -> list[RunSpec]:
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


def _start_retry(
    spec: RunSpec,
    layout: ExperimentLayout,
    execution: ExecutionConfig,
) -> RunSpec | None:
    """After ``spec`` diverged: set up its lower-lr retry, record ``retried_as``, return it."""
    run_dir = layout.run_dir(spec.run_id)
    depth = _retry_depth(run_dir)
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


def _failed(run_dir: Path, spec: RunSpec, error: str, log: str = "") -> dict[str, Any]:
    result = {
        "run_id": spec.run_id,
        "status": "failed",
        "error": error,
        "log": log or str(run_dir / "train.log"),
        "harness_version": __version__,
    }
    write_result(run_dir, result)
    return result


# --- SLURM (and submitit's local/debug executors) ------------------------------------------------

Cluster = Literal["slurm", "local", "debug"]
RunStatusState = Literal[
    "done", "diverged", "running", "queued", "failed", "interrupted", "unsubmitted", "unknown"
]
JOBS_SCHEMA = 1
# SLURM job states (squeue/sacct names) in which a job runs or still waits to run.
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"})
QUEUED_STATES = frozenset(
    {
        "PENDING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "STOPPED",
        "SPECIAL_EXIT",
        "RESV_DEL_HOLD",
    }
)
ACTIVE_STATES = RUNNING_STATES | QUEUED_STATES
# A job whose state SLURM does not know yet (sacct lags a new job by seconds) counts as queued
# for this long after its submission, so that a quick second submit never duplicates it.
ACCOUNTING_GRACE_S = 120.0
# After SIGTERM and a checkpoint, wait this long to be killed (SLURM's KillWait, 30 s by default)
# before taking the signal for a stray one and training on.
TERM_WAIT_S = 180.0
NO_SBATCH = "sbatch not found; is this a SLURM login node? use `harness run` to train locally"


@dataclass(frozen=True)
class Resources:
    """What one run asks SLURM for: `ClusterConfig` with its `by_size` override applied."""

    partition: str
    account: str
    qos: str
    time_min: int
    gpus_per_run: int
    cpus_per_run: int
    mem_gb: float
    constraint: str
    setup: tuple[str, ...]
    extra: tuple[str, ...]
    python: str
    max_timeouts: int


def resources_for(cluster: ClusterConfig, n_params: int) -> Resources:
    """Resources of a run with ``n_params`` non-embedding parameters.

    The ``[[cluster.by_size]]`` table with the largest ``min_n_params <= n_params`` overrides the
    fields it sets; runs below every table get ``[cluster]`` as it is.
    """
    base = {f: getattr(cluster, f) for f in Resources.__dataclass_fields__}
    fitting = [s for s in cluster.by_size if s.min_n_params <= n_params]
    if fitting:
        best = max(fitting, key=lambda s: s.min_n_params)
        for f in Resources.__dataclass_fields__:
            value = getattr(best, f, None)
            if value is not None:
                base[f] = value
    return Resources(**base)


def _extra_parameters(extra: tuple[str, ...]) -> dict[str, Any]:
    """'key=value' -> {key: value}; a bare 'key' is a flag (#SBATCH --key)."""
    out: dict[str, Any] = {}
    for item in extra:
        key, sep, value = item.partition("=")
        out[key.strip()] = value.strip() if sep else True
    return out


def _executor_parameters(res: Resources, name: str, parallelism: int) -> dict[str, Any]:
    """AutoExecutor parameters: generic ones (units in the names) plus ``slurm_`` extras."""
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": res.time_min,
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": res.cpus_per_run,
        "mem_gb": res.mem_gb,
        "slurm_array_parallelism": parallelism,
    }
    if res.gpus_per_run:
        params["gpus_per_node"] = res.gpus_per_run
    for field_name, key in (
        ("partition", "slurm_partition"),
        ("account", "slurm_account"),
        ("qos", "slurm_qos"),
        ("constraint", "slurm_constraint"),
    ):
        if getattr(res, field_name):
            params[key] = getattr(res, field_name)
    if res.setup:
        params["slurm_setup"] = list(res.setup)
    if res.extra:
        params["slurm_additional_parameters"] = _extra_parameters(res.extra)
    return params


def _make_executor(
    cluster: Cluster, folder: Path, res: Resources, name: str, parallelism: int
) -> submitit.AutoExecutor:
    kwargs: dict[str, Any] = {}
    if cluster == "slurm":
        kwargs["slurm_max_num_timeout"] = res.max_timeouts
        if res.python:
            kwargs["slurm_python"] = res.python
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **kwargs)
    params = _executor_parameters(res, name, parallelism)
    if cluster != "slurm":  # this machine: no partition, GPUs or sbatch options
        params = {"name": name, "timeout_min": res.time_min}
    executor.update_parameters(**params)
    return executor


def sbatch_script(
    cluster: ClusterConfig, *, n_params: int, n_tasks: int, folder: Path, name: str = "harness"
) -> str:
    """The sbatch script `submit` writes for an array of ``n_tasks`` runs of ``n_params``.

    Built by submitit's own SLURM executor from the same parameters as a real submission, so
    it needs no SLURM installation (golden tests, ``harness submit --dry-run``).
    """
    from submitit.slurm.slurm import SlurmExecutor

    class _PreviewExecutor(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:  # the real one requires `srun` on this machine
            return 1

    res = resources_for(cluster, n_params)
    executor = _PreviewExecutor(folder, max_num_timeout=res.max_timeouts, python=res.python or None)
    params = _executor_parameters(res, name, _split_parallel(cluster.max_parallel, [n_tasks])[0])
    # AutoExecutor's translation: generic names through the executor's equivalences, then the
    # slurm_-prefixed ones without their prefix.
    generic = submitit.AutoExecutor._typed_parameters()
    converted = executor._convert_parameters({k: v for k, v in params.items() if k in generic})
    converted.update({k[len("slurm_") :]: v for k, v in params.items() if k.startswith("slurm_")})
    executor.update_parameters(**converted)
    if n_tasks > 1:
        executor.parameters["map_count"] = n_tasks
    return executor._make_submission_file_text(executor._submitit_command_str, "preview")


def _split_parallel(max_parallel: int, sizes: list[int]) -> list[int]:
    """Share ``max_parallel`` running tasks among arrays of these sizes (each gets >= 1).

    Proportional to size, largest remainders first, never more than an array's size, so the
    arrays of one submission together run at most ``max(max_parallel, len(sizes))`` tasks.
    """
    total = sum(sizes)
    if total <= max_parallel:
        return list(sizes)
    shares = [max(1, min(n, max_parallel * n // total)) for n in sizes]
    order = sorted(range(len(sizes)), key=lambda i: -(max_parallel * sizes[i] % total))
    while sum(shares) < max_parallel:
        grown = False
        for i in order:
            if sum(shares) < max_parallel and shares[i] < sizes[i]:
                shares[i] += 1
                grown = True
        if not grown:
            break
    return shares


# --- jobs.json --------------------------------------------------------------------------------


def read_jobs(layout: ExperimentLayout) -> dict[str, Any]:
    """``RESULTS/NAME/jobs.json``: {"schema", "experiment", "grid": [run_id...],
    "runs": {run_id: [submission, ...]}} (newest submission last); empty when absent."""
    if not layout.jobs_json.exists():
        return {"schema": JOBS_SCHEMA, "experiment": layout.root.name, "grid": [], "runs": {}}
    data = read_json(layout.jobs_json)
    if data.get("schema") != JOBS_SCHEMA or not isinstance(data.get("runs"), dict):
        raise InputError(
            f"{layout.jobs_json}: schema = {data.get('schema')!r}; accepted: "
            f"{JOBS_SCHEMA} with a 'runs' table"
        )
    data.setdefault("grid", [])
    return data


@contextlib.contextmanager
def _jobs_lock(layout: ExperimentLayout) -> Iterator[None]:
    """One `harness submit` at a time per experiment (two shells never submit a run twice)."""
    import fcntl

    layout.root.mkdir(parents=True, exist_ok=True)
    with open(layout.root / ".jobs.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- state of runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStatus:
    """One row of `harness status`."""

    run_id: str
    state: RunStatusState
    job_id: str = ""
    slurm_state: str = ""
    log: str = ""
    """stderr of the newest job (the run's train.log for runs that never went to SLURM)."""
    error: str = ""
    """Failed runs: the last error line of the run (result.json or its log)."""
    val_loss: float | None = None
    n_params: int | None = None
    n_tokens: int | None = None
    submissions: int = 0


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM state of each job id ("123" or "123_4"): squeue for jobs in the queue, sacct for
    the rest. "ENDED": out of the queue but not yet in accounting; "UNKNOWN": in neither;
    "NO_ANSWER": neither command answered."""
    from submitit.slurm.slurm import read_job_id

    if not job_ids:
        return {}
    base_ids = sorted({j.split("_")[0] for j in job_ids})
    in_queue: dict[str, str] | None = None
    proc = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(base_ids)])
    if proc is not None and (proc.returncode == 0 or "Invalid job id" in proc.stderr):
        in_queue = {}
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            job_id, _, state = line.strip().partition("|")
            in_queue[job_id] = state.split()[0] if state else "UNKNOWN"
    accounted: dict[str, str] = {}
    proc = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(base_ids)])
    if in_queue is None and (proc is None or proc.returncode != 0):
        return dict.fromkeys(job_ids, "NO_ANSWER")  # not a SLURM machine, or SLURM is down
    if proc is not None and proc.returncode == 0:
        for line in proc.stdout.splitlines():
            raw_id, _, state = line.strip().partition("|")
            if not raw_id or not state:
                continue
            try:
                parts = read_job_id(raw_id)
            except Exception:  # noqa: BLE001 - an id format we do not know: skip the line
                continue
            for p in parts:
                ids = (
                    [f"{p[0]}_{i}" for i in range(int(p[1]), int(p[2]) + 1)]
                    if len(p) == 3
                    else ["_".join(p[:2])]
                )
                for i in ids:
                    accounted[i] = state.split()[0]
    states = {}
    for j in job_ids:
        if in_queue is not None and j in in_queue:
            states[j] = in_queue[j]
        elif j in accounted and (in_queue is None or accounted[j] not in ACTIVE_STATES):
            states[j] = accounted[j]
        else:
            states[j] = "ENDED" if in_queue is not None and j in accounted else "UNKNOWN"
    return states


def _local_state(job_id: str) -> str:
    """submitit's local executor: the job id is the PID of its controller process."""
    try:
        os.kill(int(job_id), 0)
    except (ValueError, OSError):
        return "ENDED"
    return "RUNNING"


_ERROR_LINE = re.compile(
    r"^([\w.]*(Error|Exception|Interrupt|Exit)\b|.*\b(error|CANCELLED|Killed)\b)"
)


def last_error_line(log: Path) -> str:
    """The most telling line at the end of a job's stderr: the last exception or SLURM error."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not re.match(r"^submitit (INFO|DEBUG|WARNING)", ln)]
    meaningful = [ln for ln in lines if not ln.startswith("srun: ")]
    for ln in reversed(meaningful):
        if _ERROR_LINE.match(ln):
            return ln[:300]
    return (meaningful or lines or [""])[-1][:300]


def run_statuses(layout: ExperimentLayout, jobs: dict[str, Any] | None = None) -> list[RunStatus]:
    """State of every run of the experiment: the grid of the last submit, every run directory
    and every submitted run; from result.json, jobs.json and SLURM (squeue, sacct)."""
    jobs = read_jobs(layout) if jobs is None else jobs
    run_ids = list(
        dict.fromkeys(
            [
                *jobs.get("grid", []),
                *(
                    sorted(p.name for p in layout.runs_dir.iterdir() if p.is_dir())
                    if layout.runs_dir.is_dir()
                    else []
                ),
                *jobs["runs"],
            ]
        )
    )
    newest = {r: subs[-1] for r, subs in jobs["runs"].items() if subs}
    slurm_ids = [
        e["job_id"]
        for r, e in newest.items()
        if e.get("cluster", "slurm") == "slurm" and _finished_result(layout.run_dir(r)) is None
    ]
    states = _slurm_states(slurm_ids) if slurm_ids else {}
    out = []
    now = time.time()
    for run_id in run_ids:
        run_dir = layout.run_dir(run_id)
        n_params = n_tokens = None
        if (run_dir / "spec.json").exists():
            try:
                from harness.model import ModelShape, count_params

                spec = read_json(run_dir / "spec.json")
                n_params = count_params(ModelShape(**spec["model"])).non_embedding
                n_tokens = int(spec["n_tokens"])
            except (InputError, KeyError, TypeError, ValueError):
                pass
        try:
            result = read_result(run_dir) or {}
        except InputError as e:
            result = {"status": "failed", "error": str(e)}
        entry = newest.get(run_id)
        common = {
            "run_id": run_id,
            "n_params": n_params,
            "n_tokens": n_tokens,
            "submissions": len(jobs["runs"].get(run_id, [])),
        }
        if entry:
            common.update(job_id=entry["job_id"], log=entry.get("stderr", ""))
        status = result.get("status")
        holder = holder_of(run_dir) if status not in FINISHED else None
        if holder is not None:  # a `harness run` (or a job) holds its lock: training now
            out.append(RunStatus(state="running", slurm_state="locked", error=holder,
                                 **{**common, "log": str(run_dir / "train.log")}))
            continue
        if status in FINISHED:
            out.append(
                RunStatus(
                    state=status,
                    val_loss=result.get("val_loss"),
                    error=result.get("reason", ""),
                    **common,
                )
            )
            continue
        js = ""
        if entry:
            cluster = entry.get("cluster", "slurm")
            js = (
                states.get(entry["job_id"], "UNKNOWN")
                if cluster == "slurm"
                else _local_state(entry["job_id"])
                if cluster == "local"
                else "ENDED"
            )
            common["slurm_state"] = js
            young = now - float(entry.get("submitted_unix", 0)) < ACCOUNTING_GRACE_S
            if js == "NO_ANSWER":  # never guess: a wrong "failed" would submit a duplicate
                out.append(
                    RunStatus(state="unknown", error="squeue and sacct did not answer", **common)
                )
                continue
            if js in RUNNING_STATES:
                out.append(RunStatus(state="running", **common))
                continue
            if js in QUEUED_STATES or (js == "UNKNOWN" and young):
                out.append(RunStatus(state="queued", **common))
                continue
        if status == "failed":
            error = result.get("error", "")
            log = common.get("log") or result.get("log", "")
            out.append(RunStatus(state="failed", error=error, **{**common, "log": log}))
            continue
        if entry:
            log = Path(entry.get("stderr") or "")
            started = bool(entry.get("stderr")) and log.exists()
            error = last_error_line(log) if started else ""
            if not error:
                error = f"job {entry['job_id']} ended ({js}) " + (
                    "without a result" if started else "before it started"
                )
            out.append(
                RunStatus(
                    state="failed", error=error, **{**common, "log": str(log) if started else ""}
                )
            )
            continue
        step = _newest_checkpoint_step(run_dir)
        out.append(
            RunStatus(
                state="interrupted" if step is not None else "unsubmitted",
                log=str(run_dir / "train.log") if (run_dir / "train.log").exists() else "",
                error=f"checkpoint at step {step}" if step is not None else "",
                **common,
            )
        )
    return out


def _newest_checkpoint_step(run_dir: Path) -> int | None:
    steps = [
        int(m.group(1))
        for p in (run_dir / "ckpt").glob("step_*.pt")
        if (m := re.search(r"step_(\d+)\.pt$", p.name))
    ]
    return max(steps) if steps else None


def _finished_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        result = read_result(run_dir)
    except InputError:
        return None
    return result if result is not None and result.get("status") in FINISHED else None


# --- the job --------------------------------------------------------------------------------------


class TrainJob(submitit.helpers.Checkpointable):
    """One run as a submitit job: train it in its run directory, resuming from its checkpoint.

    Signals (delivered to the Python process by srun):

    - the preemption/time-limit signal (USR2, ``sbatch --signal=USR2@90``): a flag that
      `train` polls at each step boundary, where it saves a checkpoint and returns None; then
      submitit's own handler runs: it counts timeouts, pickles `checkpoint()` (this object and
      its arguments, nothing else) and requeues the job (``scontrol requeue``).
    - SIGTERM (``scancel``, ``scontrol requeue``, preemption with a grace time): checkpoint at
      the next step boundary and wait for SLURM's kill, training no step that would be lost.

    The resumed job, like a fresh submission or an external requeue from the original pickle,
    finds the checkpoint in the run directory: no finished step is trained twice.
    """

    def __call__(
        self,
        spec_dict: dict[str, Any],
        run_dir: str,
        execution: dict[str, Any],
        branch_dicts: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        import signal
        import threading

        from harness.config import _build

        spec = spec_from_dict(spec_dict)
        exe = _build(ExecutionConfig, execution, "execution", "launcher")
        if exe.threads == 0 and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
            exe = dataclasses.replace(exe, threads=int(os.environ["SLURM_CPUS_PER_TASK"]))
        if exe.threads > 0:  # before torch starts its OpenMP pool
            os.environ["OMP_NUM_THREADS"] = str(exe.threads)
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        log = logging.getLogger("harness.launch")
        handler = open_run_log(path)
        try:
            stderr = str(submitit.JobEnvironment().paths.stderr)
        except Exception:  # noqa: BLE001 - not inside a submitit job (a direct call)
            stderr = str(path / "train.log")

        flags = {"requeue": False, "term": False}
        usr_sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)

        def on_usr(signum: int, frame: Any) -> None:
            flags["requeue"] = True
            log.warning(
                "run %s: got %s; checkpointing at the next step to be requeued",
                spec.run_id,
                signal.Signals(signum).name,
            )

        def on_term(signum: int, frame: Any) -> None:
            flags["term"] = True
            log.warning("run %s: got SIGTERM; checkpointing at the next step", spec.run_id)

        in_main = threading.current_thread() is threading.main_thread()
        requeue_handler = signal.getsignal(usr_sig) if in_main else None
        term_handler = signal.getsignal(signal.SIGTERM) if in_main else None
        if in_main:
            signal.signal(usr_sig, on_usr)
            signal.signal(signal.SIGTERM, on_term)
        from harness.execute.locks import Held, RunLock

        lock = RunLock(path)
        try:
            log.info("run %s: job %s starting", spec.run_id, os.environ.get("SLURM_JOB_ID", "-"))
            try:  # a `harness run` or another job trains it now: never twice at once
                lock.acquire()
            except Held as held:
                raise RuntimeError(f"run {spec.run_id}: {held}; not trained twice") from None
            done = _finished_result(path)
            if done is not None:  # a duplicate or late requeue of a finished run
                log.info("run %s is already %s; nothing to do", spec.run_id, done["status"])
                return {"status": done["status"], "val_loss": done.get("val_loss")}
            if (path / "result.json").exists():  # an earlier failure: keep it aside
                os.replace(path / "result.json", path / "result.failed.json")
            from harness.train import train

            branches = [spec_from_dict(b) for b in branch_dicts or ()]
            while True:
                result = train(
                    spec,
                    path,
                    execution=exe,
                    should_stop=lambda: flags["requeue"] or flags["term"],
                    branches=branches,
                )
                if result is not None:
                    log.info("run %s ended: %s", spec.run_id, result.status)
                    break
                log.warning(
                    "run %s: checkpoint saved at step %s",
                    spec.run_id,
                    _newest_checkpoint_step(path),
                )
                if not flags["requeue"]:
                    # SIGTERM (scancel, scontrol requeue, preemption): SLURM kills the job
                    # within KillWait. Wait for that rather than train steps that would be
                    # lost; a requeue signal may still come; a stray SIGTERM lets it go on.
                    deadline = time.monotonic() + TERM_WAIT_S
                    while time.monotonic() < deadline and not flags["requeue"]:
                        time.sleep(0.1)
                    flags["term"] = False
                if flags["requeue"]:
                    log.warning("run %s: requeueing", spec.run_id)
                    break
                log.warning(
                    "run %s: not killed %.0f s after SIGTERM; going on", spec.run_id, TERM_WAIT_S
                )
        except Exception as e:
            log.error("run %s failed:\n%s", spec.run_id, traceback.format_exc())
            _failed(path, spec, f"{type(e).__name__}: {e}".splitlines()[0], log=stderr)
            raise
        finally:
            lock.release()
            if in_main:
                signal.signal(usr_sig, requeue_handler)
                signal.signal(signal.SIGTERM, term_handler)
            close_run_log(handler)
        if result is None:
            # Stopped on the signal with a checkpoint at a step boundary: submitit's handler
            # counts timeouts, pickles checkpoint() and requeues (then exits).
            if callable(requeue_handler):
                try:
                    requeue_handler(usr_sig, None)
                except submitit.core.utils.UncompletedJobError as e:
                    _failed(
                        path,
                        spec,
                        f"{e} `harness submit` resumes it from its checkpoint",
                        log=stderr,
                    )
                    raise
            raise RuntimeError(
                f"run {spec.run_id} stopped on a signal with a checkpoint but "
                "was not requeued; `harness submit` resumes it"
            )
        return {"status": result.status, "val_loss": result.val_loss, "wall_s": result.wall_s}


class TrainGroupJob(TrainJob):
    """A WSD trunk and its branches (`harness.wsd`) as one job, one run after another.

    The trunk goes first and hands each branch its checkpoint at the branch's decay start; then
    each branch trains its cooldown. In one job no branch ever trains while its trunk may still
    write into its directory. A requeued job starts over: finished runs are skipped, the others
    resume from their checkpoints. A run that fails does not stop the rest (a branch whose
    hand-off never came trains alone, from step 0); the job fails at the end if any run did.
    """

    def __call__(  # type: ignore[override]
        self, spec_dicts: list[dict[str, Any]], run_dirs: list[str], execution: dict[str, Any]
    ) -> list[dict[str, Any]]:
        out, failed = [], []
        for i, (spec_dict, run_dir) in enumerate(zip(spec_dicts, run_dirs, strict=True)):
            try:
                out.append(
                    super().__call__(
                        spec_dict, run_dir, execution, spec_dicts[1:] if i == 0 else None
                    )
                )
            except submitit.core.utils.UncompletedJobError:
                raise  # out of requeues: the job is over
            except Exception as e:  # noqa: BLE001 - recorded in the run's result.json already
                failed.append(f"{spec_dict['run_id']}: {type(e).__name__}: {e}".splitlines()[0])
        if failed:
            raise RuntimeError(f"{len(failed)} run(s) of this job failed: " + "; ".join(failed))
        return out


def _job_units(specs: list[RunSpec], share_wsd_trunks: bool) -> list[list[RunSpec]]:
    """The runs of each job: the units of work `harness run` uses (`execute.plan_units`),
    one run, or a WSD trunk followed by its branches, in the grid's order."""
    from harness.execute.local import plan_units

    exe = ExecutionConfig(share_wsd_trunks=share_wsd_trunks)
    return [list(u.runs) for u in plan_units(specs, exe, longest_first=False)]


# --- submit --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    run_id: str
    job_id: str
    stdout: str
    stderr: str


def submit(
    exp: ExperimentConfig, *, cluster: Cluster = "slurm", only_failed: bool = False
) -> tuple[list[Submission], list[RunStatus]]:
    """Submit the runs of ``exp`` that are neither finished nor queued nor running.

    Failed runs (a result.json that says so, or a job that ended without a result) go again
    and resume from their checkpoints; ``only_failed`` leaves never-submitted runs alone.
    Returns the submissions and every run's state before submitting. Does not wait for jobs.

    Raises
    ------
    InputError
        ``cluster`` is slurm and there is no ``sbatch``; bad settings; an unreadable corpus.
    """
    from harness.data import prepare_corpus
    from harness.grid import expand
    from harness.model import count_params

    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise InputError(NO_SBATCH)
    specs = expand(exp)
    layout = ExperimentLayout(exp.results_path.resolve())
    submitted: list[Submission] = []
    with _jobs_lock(layout):
        jobs = read_jobs(layout)
        jobs["experiment"] = exp.name
        jobs["grid"] = [s.run_id for s in specs]
        before = run_statuses(layout, jobs)
        state = {st.run_id: st.state for st in before}
        wanted = ("failed",) if only_failed else ("failed", "unsubmitted")
        todo = [s for s in specs if state.get(s.run_id, "unsubmitted") in wanted]
        if not todo:
            atomic_write_json(layout.jobs_json, jobs)
            return submitted, before
        prepare_corpus(exp.data, layout.cache_dir)  # tokenize once, here, not in every job
        groups: dict[Resources, list[RunSpec]] = {}
        for spec in todo:
            res = resources_for(exp.cluster, count_params(spec.model).non_embedding)
            groups.setdefault(res, []).append(spec)
            run_dir = layout.run_dir(spec.run_id)
            run_dir.mkdir(parents=True, exist_ok=True)
            write_spec(run_dir, spec)
        execution = to_dict(dataclasses.replace(exp.execution, progress=False))
        # One job per run, or per WSD group (trunk, then its branches) with shared trunks.
        units = {
            res: _job_units(group, exp.execution.share_wsd_trunks) for res, group in groups.items()
        }
        shares = _split_parallel(exp.cluster.max_parallel, [len(u) for u in units.values()])
        for (res, group), parallelism in zip(units.items(), shares, strict=True):
            executor = _make_executor(
                cluster, layout.root / "slurm" / "%j", res, f"harness-{exp.name}", parallelism
            )
            try:
                # submitit prints sbatch's stderr before raising: the one-line error says it
                with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                    submitted_jobs = [
                        executor.submit(
                            TrainJob(), u[0].to_dict(), str(layout.run_dir(u[0].run_id)), execution
                        )
                        if len(u) == 1
                        else executor.submit(
                            TrainGroupJob(),
                            [s.to_dict() for s in u],
                            [str(layout.run_dir(s.run_id)) for s in u],
                            execution,
                        )
                        for u in group
                    ]
            except submitit.core.utils.FailedJobError as e:
                # sbatch refused (bad partition, account, limits): its message is the answer
                raise InputError(f"sbatch refused the submission: {_sbatch_reason(e)}") from None
            stamp = time.time()
            for spec, job in (
                (s, j) for u, j in zip(group, submitted_jobs, strict=True) for s in u
            ):
                base, _, index = job.job_id.partition("_")
                stdout, stderr = str(job.paths.stdout), str(job.paths.stderr)
                entry: dict[str, Any] = {
                    "job_id": job.job_id,
                    "array_job_id": base,
                    "array_index": int(index) if index.isdigit() else None,
                    "cluster": cluster,
                    "stdout": stdout,
                    "stderr": stderr,
                    "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stamp)),
                    "submitted_unix": stamp,
                    "resources": dataclasses.asdict(res),
                }
                jobs["runs"].setdefault(spec.run_id, []).append(entry)
                submitted.append(Submission(spec.run_id, job.job_id, stdout, stderr))
            atomic_write_json(layout.jobs_json, jobs)  # after each array: never lose a job id
            if cluster == "debug":  # submitit's debug executor runs jobs when asked for results
                for job in submitted_jobs:
                    with contextlib.suppress(Exception):
                        job.result()
    return submitted, before


def _sbatch_reason(error: Exception) -> str:
    text = str(error)
    lines = [ln.split("error:", 1)[1].strip() for ln in text.splitlines() if "error:" in ln]
    return ("; ".join(lines) if lines else " ".join(text.split()))[:400]
