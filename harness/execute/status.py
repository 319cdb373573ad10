"""The state of each run of an experiment, for `harness status` and `harness submit`.

A run's state combines its run directory (result.json, a held lock, a checkpoint) with
``RESULTS/NAME/jobs.json`` (every submission of the run: job id, array index, log paths, time)
and SLURM's view of its newest job (squeue, then sacct). So a job that died without a result
(crash, scancel, out of memory, node failure) reads as failed, with the last error line of its
log, and a run that a `harness run` on this machine trains or left with a checkpoint reads as
running or interrupted. A run not finished also shows how far it came (step, losses, ETA; from
its metrics.csv, `progress.py`), wherever it trains.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.atomic import atomic_write_json
from harness.errors import InputError
from harness.execute.locks import holder_of
from harness.execute.progress import (
    RunProgress,
    eta_s,
    read_progress,
)
from harness.flops import training_flops
from harness.results import ExperimentLayout
from harness.rundir import FINISHED, read_json
from harness.units import fmt_duration, fmt_si, fmt_si_unit

__all__ = [
    "JOBS_SCHEMA",
    "RunStatus",
    "grid_summary",
    "jobs_lock",
    "last_error_line",
    "read_jobs",
    "run_statuses",
    "status_table",
]

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
def jobs_lock(layout: ExperimentLayout) -> Iterator[None]:
    """One `harness submit` at a time per experiment (two shells never submit a run twice)."""
    import fcntl

    layout.root.mkdir(parents=True, exist_ok=True)
    with open(layout.root / ".jobs.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def record_grid(layout: ExperimentLayout, experiment: str, run_ids: list[str]) -> None:
    """jobs.json's "grid": the runs of the latest `harness run` or `submit` of this experiment,
    so that `harness status` counts the runs that have no folder yet (a 2-run grid is "0/2"
    before either starts, not "0/1")."""
    with jobs_lock(layout):
        jobs = read_jobs(layout)
        jobs["experiment"] = experiment
        jobs["grid"] = list(run_ids)
        atomic_write_json(layout.jobs_json, jobs)


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
    n_steps: int | None = None
    progress: RunProgress | None = None
    """A run not finished: its newest metrics.csv row and pace (`progress.read_progress`)."""

    @property
    def flops(self) -> float | None:
        """6 N D: the run's training FLOPs (None without its spec.json)."""
        if not (self.n_params and self.n_tokens):
            return None
        return float(training_flops(self.n_params, self.n_tokens))

    @property
    def eta_s(self) -> float | None:
        """Seconds left for a running run at its recent pace; None for any other state."""
        if self.state != "running" or self.progress is None or self.n_steps is None:
            return None
        return eta_s(self.progress.step, self.n_steps, self.progress.s_per_step)


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
        if e.get("cluster", "slurm") == "slurm" and layout.run(r).finished() is None
    ]
    states = _slurm_states(slurm_ids) if slurm_ids else {}
    out = []
    now = time.time()
    for run_id in run_ids:
        run = layout.run(run_id)
        run_dir = run.path
        n_params = n_tokens = n_steps = None
        if run.spec_json.exists():
            from harness.model import count_params

            try:  # read_spec checks every field: a mangled spec.json shows as unknown sizes
                spec = run.spec()
                n_params = count_params(spec.model).non_embedding
                n_tokens, n_steps = spec.n_tokens, spec.n_steps
            except InputError:
                pass
        try:
            result = run.read_result() or {}
        except InputError as e:
            result = {"status": "failed", "error": str(e)}
        entry = newest.get(run_id)
        common = {
            "run_id": run_id,
            "n_params": n_params,
            "n_tokens": n_tokens,
            "submissions": len(jobs["runs"].get(run_id, [])),
            "n_steps": n_steps,
        }
        if entry:
            common.update(job_id=entry["job_id"], log=entry.get("stderr", ""))
        status = result.get("status")
        if status not in FINISHED:  # how far it came: the same file, trained here or in a job
            common["progress"] = read_progress(run_dir)
        holder = holder_of(run_dir) if status not in FINISHED else None
        if holder is not None:  # a `harness run` (or a job) holds its lock: training now
            out.append(
                RunStatus(
                    state="running",
                    slurm_state="locked",
                    error=holder,
                    **{**common, "log": str(run.log)},
                )
            )
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
        step = run.newest_checkpoint_step()
        out.append(
            RunStatus(
                state="interrupted" if step is not None else "unsubmitted",
                log=str(run.log) if run.log.exists() else "",
                error=f"checkpoint at step {step}" if step is not None else "",
                **common,
            )
        )
    return out


# --- the table ----------------------------------------------------------------------------------


def _detail(r: RunStatus) -> str:
    if r.state == "failed":
        return f"{r.error}  log: {r.log}" if r.log else r.error
    if r.state in ("diverged", "unknown"):
        return r.error
    if r.state == "running" and r.slurm_state == "locked":
        return f"here: {r.error}  log: {r.log}"
    if r.state == "running" and r.progress is None:
        detail = f"{r.slurm_state}, no step logged yet"
        return f"{detail}  log: {r.log}" if r.log else detail
    if r.state in ("running", "queued"):
        return f"{r.slurm_state}  log: {r.log}" if r.log else r.slurm_state
    if r.state == "interrupted":
        return f"{r.error}; `harness run` resumes it"
    if r.state == "unsubmitted":
        return "never started"
    return ""


def forecast_lines(layout: ExperimentLayout, rows: list[RunStatus]) -> list[str]:
    """Each running run's forecast final loss (issue 33): the annealing law of Tissue et al.
    fitted to its validation losses so far and those of the finished runs of its size
    (`harness.analysis.curves.forecast_final`), at the end of its own schedule. Empty when no
    run is training."""
    running = [r for r in rows if r.state == "running" and r.n_params]
    if not running:
        return []
    import pandas as pd

    from harness.analysis.curves import forecast_final, run_curves

    done = [r for r in rows if r.state == "done" and r.n_params]
    table = pd.DataFrame(
        {"run_id": [r.run_id for r in running + done],
         "n_params": [float(r.n_params or 0) for r in running + done]}
    )  # fmt: skip
    lines = [
        "forecast final loss (annealing law of the run's evaluations and its size's done runs):"
    ]
    try:
        curves = {c.run_id: c for c in run_curves(layout.runs_dir, table)}
    except InputError as e:  # a metrics.csv being written, or one that does not read
        return [*lines, f"  unavailable: {e}"]
    for r in running:
        run = curves.get(r.run_id)
        if run is None:
            lines.append(f"  {r.run_id}: no evaluation yet")
            continue
        others = [c for c in curves.values() if c.run_id != r.run_id and c.n_params == run.n_params
                  and c.run_id in {d.run_id for d in done}]  # fmt: skip
        try:
            with warnings.catch_warnings():  # a law on the grid's edge is a reason, not noise
                warnings.simplefilter("ignore")
                f = forecast_final(run, others)
        except InputError as e:
            lines.append(f"  {r.run_id}: not yet ({e})")
            continue
        lines.append(
            f"  {r.run_id}: {f.loss:.4f} [{f.ci95[0]:.4f}, {f.ci95[1]:.4f}] (fitted on "
            f"{f.n_runs} runs, {f.n_points} evaluations)"
        )
    return lines


def status_table(rows: list[RunStatus]) -> list[str]:
    """`harness status`'s table: a line per run, in the order given, under a header.

    step, train and val come from metrics.csv (val: the newest evaluation; a finished run's
    final loss); ETA only for a running run (remaining steps x its recent seconds per step);
    a run that is not training (queued, interrupted, failed) shows '-'.
    """

    def loss(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    cells = []
    for r in rows:
        p = r.progress
        if r.state in FINISHED:
            step = f"{r.n_steps}/{r.n_steps}" if r.state == "done" and r.n_steps else "-"
            train, val = "-", loss(r.val_loss)
        elif p is not None:
            step = f"{p.step}/{r.n_steps or '?'}"
            train, val = loss(p.train_loss), loss(p.val_loss)
        else:
            step, train, val = (f"0/{r.n_steps}" if r.state == "running" else "-"), "-", "-"
        cells.append((r, step, train, val, fmt_duration(r.eta_s)))
    w = max([len("step"), *(len(c[1]) for c in cells)])
    lines = [
        f"{'run_id':<12}  {'state':<11} {'N':>7} {'D':>7}  {'job':<10} {'step':>{w}} "
        f"{'train':>7} {'val':>7} {'ETA':>7}  detail"
    ]
    for r, step, train, val, eta in cells:
        n = fmt_si(r.n_params) if r.n_params else "-"
        d = fmt_si(r.n_tokens) if r.n_tokens else "-"
        lines.append(
            f"{r.run_id:<12}  {r.state:<11} {n:>7} {d:>7}  {r.job_id or '-':<10} {step:>{w}} "
            f"{train:>7} {val:>7} {eta:>7}  {_detail(r)}".rstrip()
        )
    return lines


def grid_summary(rows: list[RunStatus]) -> str:
    """The footer: runs finished of all, FLOPs (6 N D a run) trained of all, and an ETA.

    A finished run (done or diverged) counts in full, any other its tokens so far. The ETA is
    the FLOPs left at the pace of the running runs (each one's FLOPs per step over its recent
    seconds per step), and never sooner than the slowest running run's own ETA; it assumes the
    rest trains at that pace, as many at once as now.
    """
    finished = [r for r in rows if r.state in FINISHED]
    failed = sum(r.state == "failed" for r in rows)
    total = done = 0.0
    known = 0
    rate = 0.0
    etas = []
    for r in rows:
        if r.flops is None:
            continue
        known += 1
        total += r.flops
        if r.state in FINISHED:
            done += r.flops
        elif r.progress is not None and r.n_tokens:
            done += r.flops * min(1.0, r.progress.tokens / r.n_tokens)
        if r.eta_s is not None and r.n_steps and r.progress and r.progress.s_per_step:
            rate += r.flops / r.n_steps / r.progress.s_per_step
            etas.append(r.eta_s)
    running = sum(r.state == "running" for r in rows)
    if etas:
        eta = f"ETA {fmt_duration(max((total - done) / rate, *etas))} at the pace of the " + (
            f"{len(etas)} running run" + ("s" if len(etas) > 1 else "")
        )
    elif running:
        eta = "no ETA yet (the running runs have not logged two rows)"
    else:
        eta = "no run training: no ETA"
    fails = f" ({failed} failed)" if failed else ""
    flops = f"{fmt_si_unit(done, 'FLOP')}/{fmt_si_unit(total, 'FLOP')}"
    if known < len(rows):
        flops += f" (of the {known} runs with a spec.json)"
    return f"grid: {len(finished)}/{len(rows)} runs finished{fails}, {flops}, {eta}"
