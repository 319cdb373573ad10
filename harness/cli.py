"""The ``harness`` command: parse, call one function, exit.

Exit codes: 0 done; 1 the work failed (a run failed, reproduce disagrees); 2 bad input or
usage, with one line naming the file, field, value and what is accepted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from harness import __version__
from harness.errors import InputError, naming

if TYPE_CHECKING:  # annotations only: the handlers import what they need when called
    from harness.config import ExperimentConfig
    from harness.execute.local import Interrupted
    from harness.results import ExperimentLayout

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the user sees what was wrong and where to look.
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _split_overrides(extra: list[str]) -> list[str]:
    bad = [a for a in extra if not (a.startswith("--") and "=" in a)]
    if bad:
        raise InputError(
            f"unrecognised argument {bad[0]!r}; overrides look like --section.field=value"
        )
    return extra


def _fmt_si(x: float) -> str:
    return f"{x:.2g}" if x < 1e3 else f"{x:.3g}".replace("e+0", "e").replace("e+", "e")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.atomic import check_writable
    from harness.config import load_experiment
    from harness.data import check_corpus, prepare_corpus
    from harness.execute.local import Interrupted, run_local
    from harness.execute.locks import experiment_lock, holder_of
    from harness.launch import pending_runs
    from harness.model import count_params
    from harness.plan import checked_grid
    from harness.results import ExperimentLayout, collect

    t0 = time.perf_counter()
    exp = load_experiment(args.experiment, args.overrides)
    # A size the model rule cannot meet or a bad [downstream] task or n_labels ends here,
    # before anything trains; what only training needs is checked below, when there is some.
    grid = checked_grid(exp, args.experiment, corpus=False)
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
        with naming(args.experiment):
            check_corpus(exp.data.corpus)
            _check_device(exp)
            check_writable(layout.root, folder=True, what="execution.results_dir")
    ns = sorted({count_params(s.model).non_embedding for s in specs})
    ds = sorted({s.n_tokens for s in specs})
    print(
        f"{exp.name}: {len(specs)} runs, N {_fmt_si(ns[0])}..{_fmt_si(ns[-1])} ({len(ns)} sizes), "
        f"D {_fmt_si(ds[0])}..{_fmt_si(ds[-1])} ({len(ds)} budgets); "
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
        with naming(args.experiment):  # a bad corpus spec is the experiment file's
            prepare_corpus(exp.data, layout.cache_dir)  # tokenize once, before any run starts
        try:
            outcomes = run_local(exp, todo, layout)
        except Interrupted as stop:
            return _interrupted(stop, layout, args.experiment, t0)
        failed = sum(o.status == "failed" for o in outcomes)
        for o in outcomes:
            if o.status == "failed":
                log_path = layout.run_dir(o.run_id) / "train.log"
                print(f"run {o.run_id} failed: {o.error} (log: {log_path})")
            elif o.status == "held":
                print(f"run {o.run_id}: held by another process ({o.error}), left to it")
    if exp.downstream.task:  # fine-tune every done run ([downstream]; harness.finetune)
        failed += _downstream(exp, layout)
    with experiment_lock(layout.root):  # one process at a time writes runs.csv and the fits
        csv_path, counts = collect(layout.root)
        print(f"collected {csv_path}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
        _analyse(csv_path)
    print(f"finished in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def _interrupted(stop: Interrupted, layout: ExperimentLayout, experiment: str,
                 t0: float) -> int:
    """After SIGTERM/SIGINT/SIGHUP: runs.csv for what finished, one line, 128 + signal."""
    from harness.execute.locks import experiment_lock
    from harness.results import collect

    stopped = sum(o.status == "interrupted" for o in stop.outcomes)
    try:
        with experiment_lock(layout.root, timeout_s=30.0):
            csv_path, counts = collect(layout.root)
        note = f"{csv_path} holds the {counts['done'] + counts['diverged']} finished"
    except InputError:  # no run has finished: the stored runs.csv stays as it was
        note = "runs.csv left as it was (no run has finished)"
    print(f"interrupted by {stop}: {stopped} runs stopped with a checkpoint; {note}; "
          f"`harness run {experiment}` resumes ({time.perf_counter() - t0:.1f} s)")
    return 128 + stop.signum


def _check_device(exp: ExperimentConfig) -> None:
    """execution.device = "cuda" where torch sees no GPU, as bad input (`harness run` and
    `finetune` train here; `harness submit` does not call this: its jobs run where the cluster
    puts them).

    Raises
    ------
    InputError
        No CUDA device for device = "cuda" (train.resolve_device's check).
    """
    from harness.train import resolve_device

    try:
        resolve_device(exp.execution)
    except RuntimeError as e:
        raise InputError(
            f"{e}; accepted: auto or cpu on this machine, cuda where a GPU is visible"
        ) from None


def _downstream(exp: ExperimentConfig, layout: ExperimentLayout) -> int:
    """Run the downstream stage, print one line per fine-tune, write downstream.csv; return
    the number of failed fine-tunes."""
    from harness.finetune import collect_downstream, run_downstream

    failed = 0
    for o in run_downstream(exp, layout):
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


def cmd_finetune(args: argparse.Namespace) -> int:
    from harness.config import load_experiment
    from harness.results import ExperimentLayout, collect

    t0 = time.perf_counter()
    exp = load_experiment(args.experiment, args.overrides)
    with naming(args.experiment):
        _check_device(exp)
    layout = ExperimentLayout(exp.results_path)
    if not layout.runs_dir.is_dir():
        raise InputError(
            f"{layout.root}: no runs/ folder; train the grid first with `harness run "
            f"{args.experiment}`"
        )
    failed = _downstream(exp, layout)
    csv_path, counts = collect(layout.root)  # runs.csv gains the headline accuracies
    print(f"collected {csv_path}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    print(f"finished in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def _analyse(csv_path: Path) -> None:
    """Fit and plot at the end of `harness run`; too few runs for a fit is not an error here."""
    import json

    from harness.analysis.cli import warnings_as_lines
    from harness.analysis.report import fit_path, fits_up_to_date, plot_path, summarize

    if fits_up_to_date(csv_path):
        print(f"{csv_path.parent / 'fits.json'} and figures are up to date with {csv_path.name}")
        return
    try:
        with warnings_as_lines():
            fits = fit_path(csv_path)
    except InputError as e:
        print(f"fit skipped: {e}")
        return
    print(summarize(json.loads(fits.read_text())))
    print(f"wrote {fits}")
    with warnings_as_lines():
        figures = plot_path(csv_path)
    if figures:
        print(f"wrote {len(figures)} figures to {figures[0].parent}")


def cmd_plan(args: argparse.Namespace) -> int:
    from harness.plan import plan

    print(plan(args.experiment, args.overrides, measure=not args.no_timing))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from harness.results import collect

    csv_path, counts = collect(Path(args.results_dir))
    print(f"wrote {csv_path}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    if any(Path(args.results_dir).glob("runs/*/downstream/*.json")):
        from harness.finetune import collect_downstream

        path, n_rows = collect_downstream(Path(args.results_dir))
        print(f"wrote {path}: {n_rows} fine-tunes")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from harness.config import load_experiment
    from harness.launch import submit
    from harness.plan import checked_grid

    exp = load_experiment(args.experiment, args.overrides)
    grid = checked_grid(exp, args.experiment)  # what `harness run` refuses, refused here too
    for note in grid.notes:
        print(f"note: {note}")
    if args.dry_run:
        from harness.launch import resources_for, sbatch_script
        from harness.model import count_params

        sizes: dict[object, list[int]] = {}
        for spec in grid.specs:
            n = count_params(spec.model).non_embedding
            sizes.setdefault(resources_for(exp.cluster, n), []).append(n)
        for ns in sizes.values():
            print(f"# --- {len(ns)} run(s), N {_fmt_si(min(ns))}..{_fmt_si(max(ns))} ---")
            print(
                sbatch_script(
                    exp.cluster,
                    n_params=ns[0],
                    n_tasks=len(ns),
                    folder=exp.results_path.resolve() / "slurm" / "%j",
                    name=f"harness-{exp.name}",
                )
            )
        return 0
    submitted, before = submit(exp, cluster=args.cluster, only_failed=args.only_failed)
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
        print("nothing to submit" + (" (no failed runs)" if args.only_failed else ""))
        return 0
    arrays = sorted({s.job_id.split("_")[0] for s in submitted}, key=lambda j: (len(j), j))
    cap = f" (at most {exp.cluster.max_parallel} running at once)"
    cap = cap if args.cluster == "slurm" else ""
    print(f"submitted {len(submitted)} run(s) as job(s) {', '.join(arrays)}{cap}")
    for s in submitted:
        print(f"  {s.run_id}  job {s.job_id}  log {s.stderr}")
    print(f"recorded in {root / 'jobs.json'}; watch with `harness status {root}`")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from harness.launch import run_statuses
    from harness.results import ExperimentLayout

    layout = ExperimentLayout(Path(args.results_dir))
    if not layout.runs_dir.is_dir() and not layout.jobs_json.exists():
        raise InputError(f"{args.results_dir}: no runs/ folder here; expected a results directory")
    order = {
        "failed": 0,
        "unknown": 1,
        "running": 2,
        "queued": 3,
        "interrupted": 4,
        "unsubmitted": 5,
        "diverged": 6,
        "done": 7,
    }
    rows = sorted(
        run_statuses(layout),
        key=lambda r: (order[r.state], r.n_params or 0, r.n_tokens or 0, r.run_id),
    )
    print(f"{'run_id':<12}  {'state':<11} {'N':>7} {'D':>7}  {'job':<10} detail")
    for r in rows:
        n = _fmt_si(r.n_params) if r.n_params else "-"
        d = _fmt_si(r.n_tokens) if r.n_tokens else "-"
        if r.state == "failed":
            detail = f"{r.error}  log: {r.log}" if r.log else r.error
        elif r.state == "done":
            detail = f"loss {r.val_loss:.4f}" if r.val_loss is not None else ""
        elif r.state in ("diverged", "unknown"):
            detail = r.error
        elif r.state == "running" and r.slurm_state == "locked":
            detail = f"here: {r.error}  log: {r.log}"
        elif r.state in ("running", "queued"):
            detail = f"{r.slurm_state}  log: {r.log}" if r.log else r.slurm_state
        elif r.state == "interrupted":
            detail = f"{r.error}; `harness run` resumes it"
        else:
            detail = "never started"
        print(f"{r.run_id:<12}  {r.state:<11} {n:>7} {d:>7}  {r.job_id or '-':<10} {detail}")
    states = [r.state for r in rows]
    print(", ".join(f"{states.count(s)} {s}" for s in order if s in states) or "no runs")
    failed = [r for r in rows if r.state == "failed"]
    if any(r.submissions for r in failed):
        print("`harness submit EXP.toml` (or --only-failed) resubmits the failed SLURM runs; "
              "they resume from their checkpoints")
    if any(not r.submissions for r in failed) or "interrupted" in states:
        print("`harness run EXP.toml` trains the failed and interrupted runs of this machine "
              "again, each from its newest checkpoint")
    # Exit codes (DESIGN.md): 1 when the work failed, so scripts and CI can wait on it.
    return 1 if "failed" in states else 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="train the grid on this machine, then collect, fit and plot")
    p.add_argument("experiment", help="experiments/NAME.toml; add --section.field=value overrides")
    p.set_defaults(func=cmd_run, takes_overrides=True)

    p = sub.add_parser(
        "finetune",
        help="fine-tune the grid's done runs on the [downstream] task; skips finished fine-tunes",
    )
    p.add_argument("experiment", help="experiments/NAME.toml; add --section.field=value overrides")
    p.set_defaults(func=cmd_finetune, takes_overrides=True)

    p = sub.add_parser(
        "plan", help="table of the grid's runs with N, D, FLOPs and estimated times; trains nothing"
    )
    p.add_argument("experiment", help="experiments/NAME.toml; add --section.field=value overrides")
    p.add_argument(
        "--no-timing", action="store_true", help="skip the timed steps (no time estimates)"
    )
    p.set_defaults(func=cmd_plan, takes_overrides=True)

    p = sub.add_parser(
        "submit",
        help="submit the runs not done, queued or running as a SLURM job array and return at once",
    )
    p.add_argument("experiment", help="experiments/NAME.toml; add --section.field=value overrides")
    p.add_argument(
        "--cluster",
        choices=["slurm", "local", "debug"],
        default="slurm",
        help="slurm (default); local/debug: submitit's executors on this machine",
    )
    p.add_argument(
        "--only-failed",
        action="store_true",
        help="resubmit only failed runs, not runs never submitted",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the sbatch script(s) and submit nothing"
    )
    p.set_defaults(func=cmd_submit, takes_overrides=True)

    p = sub.add_parser(
        "status", help="table of runs: done, running, queued, failed (with log), never submitted"
    )
    p.add_argument("results_dir")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("collect", help="gather run records into runs.csv")
    p.add_argument("results_dir")
    p.set_defaults(func=cmd_collect)

    from harness.analysis.cli import register

    register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        # Every handler takes the parsed args; run and submit also get the overrides.
        if getattr(args, "takes_overrides", False):
            args.overrides = _split_overrides(extra)
        elif extra:
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
        return int(args.func(args))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; finished runs are kept and the next `harness run` resumes",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
