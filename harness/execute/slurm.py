"""`harness submit`: an experiment's pending runs to SLURM, through submitit.

The runs that are neither finished nor queued nor running go out as submitit job arrays (one
per distinct set of resources), at most ``cluster.max_parallel`` tasks running at once, and
`submit` returns at once. A job trains one unit of work (`harness.execute.local.plan_units`: a
run, or a WSD trunk and its branches) or, with ``cluster.runs_per_job = k``, up to k runs'
units one after another, for clusters that cap the number of jobs and runs too small to fill
a GPU. Every job is a `job.TrainJob`; every submission is recorded in jobs.json
(`harness.execute.status`). This module and `job` are the only ones that import submitit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import submitit

from harness.atomic import atomic_write_json
from harness.config import ClusterConfig, ExecutionConfig, ExperimentConfig, to_dict
from harness.errors import InputError
from harness.execute.job import TrainJob
from harness.execute.local import plan_units
from harness.execute.retry import unfinished_retries
from harness.execute.status import RunStatus, jobs_lock, read_jobs, run_statuses
from harness.grid import RunSpec
from harness.results import ExperimentLayout

__all__ = [
    "NO_SBATCH",
    "Resources",
    "Submission",
    "plan_jobs",
    "resources_for",
    "sbatch_script",
    "split_parallel",
    "submit",
]

Cluster = Literal["slurm", "local", "debug"]
NO_SBATCH = "sbatch not found; is this a SLURM login node? use `harness run` to train locally"


@dataclass(frozen=True)
class Resources:
    """What one run asks SLURM for: `ClusterConfig` with its `by_size` override applied."""

    partition: str
    account: str
    qos: str
    time_min: int
    gpus_per_run: int
    tasks_per_run: int
    nodes_per_run: int
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
        # A run on several devices: one task (torch.distributed rank) per GPU, on each node.
        "nodes": res.nodes_per_run,
        "tasks_per_node": res.tasks_per_run or max(1, res.gpus_per_run),
        "cpus_per_task": res.cpus_per_run,
        "mem_gb": res.mem_gb,
        "slurm_array_parallelism": parallelism,
    }
    if res.gpus_per_run:
        params["gpus_per_node"] = res.gpus_per_run
    if params["nodes"] * params["tasks_per_node"] > 1:
        # One task that fails ends the job's others (they would wait in a collective).
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
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
    cluster: ClusterConfig,
    *,
    n_params: int,
    n_tasks: int,
    folder: Path,
    name: str = "harness",
    units_per_job: int = 1,
) -> str:
    """The sbatch script `submit` writes for an array of ``n_tasks`` jobs of runs of
    ``n_params``, each job ``units_per_job`` units of work (``cluster.runs_per_job``).

    Built by submitit's own SLURM executor from the same parameters as a real submission, so
    it needs no SLURM installation (golden tests, ``harness submit --dry-run``).
    """
    from submitit.slurm.slurm import SlurmExecutor

    class _PreviewExecutor(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:  # the real one requires `srun` on this machine
            return 1

    res = _packed(resources_for(cluster, n_params), units_per_job)
    executor = _PreviewExecutor(folder, max_num_timeout=res.max_timeouts, python=res.python or None)
    params = _executor_parameters(res, name, split_parallel(cluster.max_parallel, [n_tasks])[0])
    # AutoExecutor's translation: generic names through the executor's equivalences, then the
    # slurm_-prefixed ones without their prefix.
    generic = submitit.AutoExecutor._typed_parameters()
    converted = executor._convert_parameters({k: v for k, v in params.items() if k in generic})
    converted.update({k[len("slurm_") :]: v for k, v in params.items() if k.startswith("slurm_")})
    executor.update_parameters(**converted)
    if n_tasks > 1:
        executor.parameters["map_count"] = n_tasks
    return executor._make_submission_file_text(executor._submitit_command_str, "preview")


def split_parallel(max_parallel: int, sizes: list[int]) -> list[int]:
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


def _packed(res: Resources, n_units: int) -> Resources:
    """A job of ``n_units`` units one after another asks for ``n_units x time_min``."""
    return dataclasses.replace(res, time_min=res.time_min * n_units)


# --- which runs go in which job ---------------------------------------------------------------


def plan_jobs(
    specs: list[RunSpec], cluster: ClusterConfig, execution: ExecutionConfig
) -> dict[Resources, list[list[list[RunSpec]]]]:
    """The jobs that train ``specs``, grouped by what they ask SLURM for.

    Runs of one set of resources (``cluster.by_size``) form units of work (`plan_units`, in
    the grid's order); consecutive units are packed into jobs of at most
    ``cluster.runs_per_job`` runs (a WSD unit with more runs than that stays whole). A job
    packing k units asks for k x its time limit. Returns {resources: [job: [unit: [run]]]}.
    """
    from harness.model import count_params

    by_size: dict[Resources, list[RunSpec]] = {}
    for spec in specs:
        by_size.setdefault(
            resources_for(cluster, count_params(spec.model).non_embedding), []
        ).append(spec)
    out: dict[Resources, list[list[list[RunSpec]]]] = {}
    for res, group in by_size.items():
        units = [list(u.runs) for u in plan_units(group, execution, longest_first=False)]
        packs: list[list[list[RunSpec]]] = []
        for unit in units:
            if packs and sum(map(len, packs[-1])) + len(unit) <= cluster.runs_per_job:
                packs[-1].append(unit)
            else:
                packs.append([unit])
        for pack in packs:
            out.setdefault(_packed(res, len(pack)), []).append(pack)
    return out


# --- submit -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    run_id: str
    job_id: str
    stdout: str
    stderr: str


def submit(
    exp: ExperimentConfig,
    *,
    cluster: Cluster = "slurm",
    only_failed: bool = False,
    specs: list[RunSpec] | None = None,
) -> tuple[list[Submission], list[RunStatus]]:
    """Submit the runs of ``exp`` that are neither finished nor queued nor running.

    ``specs``: the grid as the command expanded it (default: expanded here).

    Failed and interrupted runs (a result.json that says failed, a job that ended without a
    result, a checkpoint left by `harness run`) go again and resume from their checkpoints, as
    do divergence retries left unfinished; ``only_failed`` leaves never-submitted runs alone.
    Returns the submissions and every run's state before submitting. Does not wait for jobs.

    Raises
    ------
    InputError
        ``cluster`` is slurm and there is no ``sbatch``; bad settings; an unreadable corpus; a
        run directory that holds another run's spec.json.
    """
    from harness.data import prepare_corpus
    from harness.grid import expand

    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise InputError(NO_SBATCH)
    specs = expand(exp) if specs is None else list(specs)
    layout = ExperimentLayout(exp.results_path.resolve())
    for spec in specs:
        layout.run(spec.run_id).check_spec(spec)
    submitted: list[Submission] = []
    debug_jobs: list[Any] = []
    with jobs_lock(layout):
        jobs = read_jobs(layout)
        jobs["experiment"] = exp.name
        jobs["grid"] = [s.run_id for s in specs]
        before = run_statuses(layout, jobs)
        state = {st.run_id: st.state for st in before}
        again = ("failed", "interrupted")
        wanted = again if only_failed else (*again, "unsubmitted")
        todo = [s for s in specs if state.get(s.run_id, "unsubmitted") in wanted]
        todo += [
            r
            for r in unfinished_retries(specs, layout)
            if state.get(r.run_id, "unsubmitted") in (*again, "unsubmitted")
        ]
        todo = list({s.run_id: s for s in todo}.values())  # a retry may equal a grid point
        if not todo:
            atomic_write_json(layout.jobs_json, jobs)
            return submitted, before
        # Tokenized once, here: every job opens it (on the cluster's shared file system).
        corpus = prepare_corpus(exp.data, layout.cache_dir)
        for spec in todo:
            layout.run_dir(spec.run_id).mkdir(parents=True, exist_ok=True)
            layout.run(spec.run_id).write_spec(spec)
        execution = to_dict(dataclasses.replace(exp.execution, progress=False))
        planned = plan_jobs(todo, exp.cluster, exp.execution)
        shares = split_parallel(exp.cluster.max_parallel, [len(p) for p in planned.values()])
        for (res, packs), parallelism in zip(planned.items(), shares, strict=True):
            executor = _make_executor(
                cluster, layout.root / "slurm" / "%j", res, f"harness-{exp.name}", parallelism
            )
            try:
                # submitit prints sbatch's stderr before raising: the one-line error says it
                with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                    array = [
                        executor.submit(
                            TrainJob(),
                            [[s.to_dict() for s in unit] for unit in pack],
                            str(layout.root),
                            execution,
                            corpus,
                        )
                        for pack in packs
                    ]
            except submitit.core.utils.FailedJobError as e:
                # sbatch refused (bad partition, account, limits): its message is the answer
                raise InputError(f"sbatch refused the submission: {_sbatch_reason(e)}") from None
            stamp = time.time()
            for pack, job in zip(packs, array, strict=True):
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
                for spec in (s for unit in pack for s in unit):
                    jobs["runs"].setdefault(spec.run_id, []).append(entry)
                    submitted.append(Submission(spec.run_id, job.job_id, stdout, stderr))
            atomic_write_json(layout.jobs_json, jobs)  # after each array: never lose a job id
            if cluster == "debug":
                debug_jobs += array
    # submitit's debug executor runs a job in this process when its result is asked for: after
    # the lock is released, since a job records its retries in jobs.json under the same lock.
    for job in debug_jobs:
        with contextlib.suppress(Exception):
            job.result()
    return submitted, before


def _sbatch_reason(error: Exception) -> str:
    text = str(error)
    lines = [ln.split("error:", 1)[1].strip() for ln in text.splitlines() if "error:" in ln]
    return ("; ".join(lines) if lines else " ".join(text.split()))[:400]
