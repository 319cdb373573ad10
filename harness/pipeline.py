"""The pipelines behind `harness run`, `finetune` and `submit`, as library functions.

Each takes the experiment file and its ``--section.field=value`` overrides, prints what it does
(one line per step), and returns the command's exit code: 0 done, 1 a run failed, 128 + the
signal's number when stopped by one. Bad input raises `harness.errors.InputError` before any
work starts. The CLI (`harness.cli`) only parses and calls these.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import InputError, naming
from harness.units import fmt_si

if TYPE_CHECKING:  # annotations only: each pipeline imports what it needs when called
    from harness.config import ExperimentConfig
    from harness.execute.local import Interrupted
    from harness.grid import RunSpec
    from harness.results import ExperimentLayout

__all__ = ["finetune", "run", "submit"]


def run(experiment: str, overrides: list[str]) -> int:
    """`harness run`: train what is pending on this machine, collect, fit, plot; the exit code.

    Raises
    ------
    InputError
        Bad input, before anything trains.
    """
    from harness.config import load_experiment
    from harness.data import prepare_corpus
    from harness.execute.local import Interrupted, run_local
    from harness.execute.locks import experiment_lock, holder_of
    from harness.execute.retry import pending_runs
    from harness.execute.status import record_grid
    from harness.model import count_params
    from harness.preflight import check_can_train_here, checked_grid
    from harness.results import ExperimentLayout, collect
    from harness.tracking import prepare

    t0 = time.perf_counter()
    exp = load_experiment(experiment, overrides)
    # A size the model rule cannot meet or a bad [downstream] task or n_labels ends here,
    # before anything trains; what only training needs is checked below, when there is some.
    grid = checked_grid(exp, experiment, corpus=False)
    specs = list(grid.specs)
    for d in grid.dropped:  # derived D (isoFLOP, ladder) below one batch: not run
        print(
            f"dropped: N {d.n_params:,} ({d.n_layer}x{d.n_embd}), {d.mode} = {d.value:g}: "
            f"{d.reason}"
        )
    for note in grid.notes:
        print(f"note: {note}")
    layout = ExperimentLayout(exp.results_path)
    todo = pending_runs(specs, layout)
    if todo:  # a finished grid still collects and fits on a machine without its corpus or GPU
        check_can_train_here(exp, experiment, layout, specs)
    record_grid(layout, exp.name, [s.run_id for s in specs])  # `harness status` counts them all
    # [tracking], resolved into the results folder, where every run's process reads it.
    tracking = prepare(exp, layout.root)
    ns = sorted({count_params(s.model).non_embedding for s in specs})
    ds = sorted({s.n_tokens for s in specs})
    print(
        f"{exp.name}: {len(specs)} runs, N {fmt_si(ns[0])}..{fmt_si(ns[-1])} ({len(ns)} sizes), "
        f"D {fmt_si(ds[0])}..{fmt_si(ds[-1])} ({len(ds)} budgets); "
        f"{sum(s not in todo for s in specs)} already done, {len(todo)} to train -> {layout.root}"
    )
    held = {s.run_id: h for s in todo if (h := holder_of(layout.run_dir(s.run_id)))}
    if held:  # another `harness run`, or a SLURM job, trains these now
        shown = ", ".join(f"{k} ({v})" for k, v in list(held.items())[:4])
        more = f" and {len(held) - 4} more" if len(held) > 4 else ""
        print(f"{len(held)} runs held by another process, left to it: {shown}{more}")
        todo = [s for s in todo if s.run_id not in held]
    failed = 0
    if todo:
        with naming(experiment):  # a bad corpus spec is the experiment file's
            # Tokenized once, before any run starts: every run opens this entry.
            corpus = prepare_corpus(exp.data, layout.cache_dir)
        try:
            outcomes = run_local(exp, todo, layout, grid=specs, corpus=corpus)
        except Interrupted as stop:
            return _interrupted(stop, layout, experiment, t0)
        failed = sum(o.status == "failed" for o in outcomes)
        for o in outcomes:
            if o.status == "failed":
                log_path = layout.run(o.run_id).log
                print(f"run {o.run_id} failed: {o.error} (log: {log_path})")
            elif o.status == "held":
                print(f"run {o.run_id}: held by another process ({o.error}), left to it")
            if o.note:
                print(f"warning: run {o.run_id}: {o.note}")
    if exp.downstream.task:  # fine-tune every done run ([downstream]; harness.finetune)
        failed += _downstream(exp, layout, specs)
    with experiment_lock(layout.root):  # one process at a time writes runs.csv and the fits
        csv_path, counts = collect(layout.root)
        print(f"collected {csv_path}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
        _analyse(csv_path, tracking)
    print(f"finished in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def _interrupted(stop: Interrupted, layout: ExperimentLayout, experiment: str, t0: float) -> int:
    """After SIGTERM/SIGINT/SIGHUP: runs.csv for what finished, one line, 128 + signal."""
    from harness.execute.locks import experiment_lock
    from harness.results import collect

    # Only runs with a checkpoint on disk resume from one; a run stopped before its first
    # checkpoint (or before its folder existed: a signal at start-up) trains from the start.
    interrupted = [o.run_id for o in stop.outcomes if o.status == "interrupted"]
    stopped = sum(layout.run(r).newest_checkpoint_step() is not None for r in interrupted)
    before = len(interrupted) - stopped
    try:
        with experiment_lock(layout.root, timeout_s=30.0):
            csv_path, counts = collect(layout.root)
        note = f"{csv_path} holds the {counts['done'] + counts['diverged']} finished"
    except InputError:  # no run has finished: the stored runs.csv stays as it was
        note = "runs.csv left as it was (no run has finished)"
    print(
        f"interrupted by {stop}: {stopped} runs stopped with a checkpoint"
        + (f", {before} before their first" if before else "")
        + f"; {note}; "
        f"`harness run {experiment}` resumes ({time.perf_counter() - t0:.1f} s)"
    )
    return 128 + stop.signum


def _downstream(
    exp: ExperimentConfig, layout: ExperimentLayout, specs: list[RunSpec] | None = None
) -> int:
    """Run the downstream stage, print one line per fine-tune, write downstream.csv; return
    the number of failed fine-tunes."""
    from harness.finetune import collect_downstream, run_downstream

    failed = 0
    for o in run_downstream(exp, layout, specs=specs):
        if o.state == "failed":
            failed += 1
            print(f"fine-tune {o.run_id}/{o.name} failed: {o.error}")
        elif o.state == "done" and o.record is not None:
            r = o.record
            print(
                f"fine-tune {o.run_id} {r['method']:<4} n={r['n_labels']:<4} s{r['seed']}: "
                f"test accuracy {r['accuracy']:.3f} (chance {r['chance_accuracy']:.3f}), "
                f"test loss {r['test_loss']:.3f}, {r['epochs']} epochs, "
                f"{r['trainable_params']:,} trainable, {r['wall_s']:.1f} s"
            )
    path, n_rows = collect_downstream(layout.root)
    print(f"collected {path}: {n_rows} fine-tunes" + (f", {failed} failed" if failed else ""))
    return failed


def finetune(experiment: str, overrides: list[str]) -> int:
    """`harness finetune`: the downstream stage on the done runs; the exit code."""
    from harness.config import load_experiment
    from harness.preflight import check_device
    from harness.results import ExperimentLayout, collect

    t0 = time.perf_counter()
    exp = load_experiment(experiment, overrides)
    with naming(experiment):
        check_device(exp)
    layout = ExperimentLayout(exp.results_path)
    if not layout.runs_dir.is_dir():
        raise InputError(
            f"{layout.root}: no runs/ folder; train the grid first with `harness run {experiment}`"
        )
    failed = _downstream(exp, layout)
    csv_path, counts = collect(layout.root)  # runs.csv gains the headline accuracies
    print(f"collected {csv_path}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    print(f"finished in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def _analyse(csv_path: Path, tracking: dict | None = None) -> None:
    """Fit and plot at the end of `harness run`; too few runs for a fit is not an error here.
    New fits are logged to the ``tracking`` backends (`harness.tracking.log_fits`)."""
    import json

    from harness.analysis.cli import warnings_as_lines
    from harness.analysis.drawing import plot_path
    from harness.analysis.fitting import fit_path, fits_up_to_date, summarize
    from harness.analysis.report import REPORT_NAME, write_report
    from harness.tracking import log_fits

    if fits_up_to_date(csv_path):
        print(f"{csv_path.parent / 'fits.json'} and figures are up to date with {csv_path.name}")
        if not (csv_path.parent / REPORT_NAME).is_file():
            with warnings_as_lines():
                print(f"wrote {write_report(csv_path)}")
        return
    try:
        with warnings_as_lines():
            fits = fit_path(csv_path)
    except InputError as e:
        print(f"fit skipped: {e}")
        try:  # the grid and its runs, without a law
            with warnings_as_lines():
                print(f"wrote {write_report(csv_path)}")
        except InputError as e:
            print(f"report skipped: {e}")
        return
    record = json.loads(fits.read_text())
    print(summarize(record))
    print(f"wrote {fits}")
    log_fits(tracking, record)
    with warnings_as_lines():
        figures = plot_path(csv_path)
        page = write_report(csv_path, figures=figures)
    if figures:
        print(f"wrote {len(figures)} figures to {figures[0].parent}")
    print(f"wrote {page}: the whole story in one page, for any browser")


def submit(
    experiment: str, overrides: list[str], *, cluster: str, only_failed: bool, dry_run: bool
) -> int:
    """`harness submit`: the pending runs to SLURM as job arrays, at once; the exit code."""
    from harness.config import load_experiment
    from harness.execute.slurm import submit as submit_runs
    from harness.preflight import checked_grid

    exp = load_experiment(experiment, overrides)
    grid = checked_grid(exp, experiment)  # what `harness run` refuses, refused here too
    for note in grid.notes:
        print(f"note: {note}")
    if not dry_run:  # [tracking], where the jobs' processes read it (harness.tracking)
        from harness.tracking import prepare

        prepare(exp)
    if dry_run:
        from harness.execute.slurm import plan_jobs, sbatch_script
        from harness.model import count_params

        for jobs in plan_jobs(list(grid.specs), exp.cluster, exp.execution).values():
            runs = [s for job in jobs for unit in job for s in unit]
            ns = [count_params(s.model).non_embedding for s in runs]
            print(
                f"# --- {len(runs)} run(s) in {len(jobs)} job(s), "
                f"N {fmt_si(min(ns))}..{fmt_si(max(ns))} ---"
            )
            print(
                sbatch_script(
                    exp.cluster,
                    n_params=ns[0],
                    n_tasks=len(jobs),
                    folder=exp.results_path.resolve() / "slurm" / "%j",
                    name=f"harness-{exp.name}",
                    units_per_job=len(jobs[0]),
                )
            )
        return 0
    submitted, before = submit_runs(
        exp, cluster=cluster, only_failed=only_failed, specs=list(grid.specs)
    )
    root = exp.results_path.resolve()
    counts: dict[str, int] = {}
    for st in before:
        counts[st.state] = counts.get(st.state, 0) + 1
    print(
        f"{exp.name}: {len(before)} runs: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f" -> {root}"
    )
    if not submitted:
        print("nothing to submit" + (" (no failed runs)" if only_failed else ""))
        return 0
    arrays = sorted({s.job_id.split("_")[0] for s in submitted}, key=lambda j: (len(j), j))
    cap = f" (at most {exp.cluster.max_parallel} running at once)"
    cap = cap if cluster == "slurm" else ""
    print(f"submitted {len(submitted)} run(s) as job(s) {', '.join(arrays)}{cap}")
    for s in submitted:
        print(f"  {s.run_id}  job {s.job_id}  log {s.stderr}")
    print(f"recorded in {root / 'jobs.json'}; watch with `harness status {root}`")
    return 0


def validate(experiment: str, overrides: list[str], *, factor: float) -> int:
    """`harness validate`: train the compute-optimal model the fitted law predicts at
    ``factor`` x the grid's largest budget, and compare its loss with the prediction."""
    from harness.analysis.common import fmt
    from harness.config import load_experiment
    from harness.data import prepare_corpus
    from harness.execute.local import Interrupted, run_local
    from harness.execute.retry import pending_runs
    from harness.preflight import check_can_train_here
    from harness.results import ExperimentLayout
    from harness.validate import (
        VALIDATION_JSON,
        validation_record,
        validation_spec,
        write_validation,
    )

    t0 = time.perf_counter()
    exp = load_experiment(experiment, overrides)
    with naming(experiment):
        spec, pred = validation_spec(exp, factor)
    layout = ExperimentLayout(exp.results_path / "validation")
    lo, hi = pred["n_opt_ci95"]
    print(
        f"{exp.name}: the grid's largest run is {pred['grid_max_flops']:.3g} FLOPs; at "
        f"{factor:g}x, C = {pred['budget_flops']:.3g}, the law predicts N_opt = "
        f"{pred['n_opt']:.3g} [{lo:.3g}, {hi:.3g}]"
    )
    if pred["undetermined"]:
        print(f"note: the data do not determine this law ({pred['undetermined']})")
    print(
        f"training N = {pred['n_params']:,} ({pred['shape']}) on D = {pred['n_tokens']:,} "
        f"tokens (run {spec.run_id}) -> {layout.root}"
    )
    todo = pending_runs([spec], layout)
    if todo:
        check_can_train_here(exp, experiment, layout, [spec])
        with naming(experiment):
            corpus = prepare_corpus(exp.data, layout.cache_dir)
        try:
            run_local(exp, todo, layout, corpus=corpus)
        except Interrupted as stop:
            print(f"interrupted: `harness validate {experiment}` resumes from its checkpoint")
            return 128 + stop.signum
    result = layout.run(spec.run_id).read_result() or {}
    if result.get("status") not in ("done", "diverged"):
        print(f"the validation run failed: {result.get('error', 'no result')}")
        return 1
    record = validation_record(pred, result)
    path = write_validation(exp.results_path, record)
    plo, phi = pred["predicted_loss_ci95"]
    predicted = f"predicted {fmt(pred['predicted_loss'])} [{fmt(plo)}, {fmt(phi)}]"
    if record["measured_loss"] is None:  # diverged: no final loss to compare
        print(f"the validation run {result.get('status')} without a final loss; {predicted}")
    else:
        print(
            f"measured L = {fmt(record['measured_loss'])}; {predicted}: "
            + ("inside" if record["within_interval"] else "OUTSIDE")
            + f" the 95% interval (relative error {record['relative_error']:+.1%})"
        )
    print(f"wrote {path} ({VALIDATION_JSON}); finished in {time.perf_counter() - t0:.1f} s")
    return 0
