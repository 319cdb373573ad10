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
from typing import NoReturn

from harness import __version__
from harness.errors import InputError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the user sees what was wrong and where to look.
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _split_overrides(extra: list[str]) -> list[str]:
    bad = [a for a in extra if not (a.startswith("--") and "=" in a)]
    if bad:
        raise InputError(f"unrecognised argument {bad[0]!r}; overrides look like --section.field=value")
    return extra


def _fmt_si(x: float) -> str:
    return f"{x:.2g}" if x < 1e3 else f"{x:.3g}".replace("e+0", "e").replace("e+", "e")


def cmd_run(args: argparse.Namespace, overrides: list[str]) -> int:
    from harness.config import load_experiment
    from harness.data import prepare_corpus
    from harness.grid import expand
    from harness.launch import pending_runs, run_local
    from harness.model import count_params
    from harness.results import ExperimentLayout, collect

    t0 = time.perf_counter()
    exp = load_experiment(args.experiment, overrides)
    specs = expand(exp)
    layout = ExperimentLayout(exp.results_path)
    todo = pending_runs(specs, layout)
    ns = sorted({count_params(s.model).non_embedding for s in specs})
    ds = sorted({s.n_tokens for s in specs})
    print(
        f"{exp.name}: {len(specs)} runs, N {_fmt_si(ns[0])}..{_fmt_si(ns[-1])} ({len(ns)} sizes), "
        f"D {_fmt_si(ds[0])}..{_fmt_si(ds[-1])} ({len(ds)} budgets); "
        f"{len(specs) - len(todo)} already done, {len(todo)} to train -> {layout.root}"
    )
    failed = 0
    if todo:
        prepare_corpus(exp.data, layout.cache_dir)  # tokenize once, before any run starts
        outcomes = run_local(exp, todo, layout)
        failed = sum(o.status == "failed" for o in outcomes)
        for o in outcomes:
            if o.status == "failed":
                print(f"run {o.run_id} failed: {o.error} (log: {layout.run_dir(o.run_id) / 'train.log'})")
    csv_path, counts = collect(layout.root)
    print(f"collected {csv_path}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    _analyse(csv_path)
    print(f"finished in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def _analyse(csv_path: Path) -> None:
    """Fit and plot at the end of `harness run`; too few runs for a fit is not an error here."""
    try:  # TEMP-DEV
        from harness.analysis.report import fit_path, plot_path, summarize
    except ImportError:
        return
    try:
        fits = fit_path(csv_path)
    except InputError as e:
        print(f"fit skipped: {e}")
        return
    import json

    print(summarize(json.loads(fits.read_text())))
    print(f"wrote {fits}")
    figures = plot_path(csv_path)
    if figures:
        print(f"wrote {len(figures)} figures to {figures[0].parent}")


def cmd_collect(args: argparse.Namespace, overrides: list[str]) -> int:
    from harness.results import collect

    csv_path, counts = collect(Path(args.results_dir))
    print(f"wrote {csv_path}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    return 0


def cmd_status(args: argparse.Namespace, overrides: list[str]) -> int:
    from harness.results import ExperimentLayout, read_result, run_state

    layout = ExperimentLayout(Path(args.results_dir))
    if not layout.runs_dir.is_dir():
        raise InputError(f"{args.results_dir}: no runs/ folder here; expected a results directory")
    rows = []
    for run_dir in sorted(p for p in layout.runs_dir.iterdir() if p.is_dir()):
        state = run_state(run_dir)
        result = read_result(run_dir) or {}
        detail = ""
        if state == "failed":
            detail = f"{result.get('error', '')}  log: {run_dir / 'train.log'}"
        elif state in ("done", "diverged"):
            detail = f"loss {result.get('val_loss')}" if state == "done" else result.get("reason", "")
        rows.append((run_dir.name, state, detail))
    for run_id, state, detail in rows:
        print(f"{run_id}  {state:<9} {detail}")
    states = [r[1] for r in rows]
    print(", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states)) or "no runs")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="train the grid on this machine, then collect, fit and plot")
    p.add_argument("experiment", help="experiments/NAME.toml; add --section.field=value overrides")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="table of runs: done, diverged, failed, started")
    p.add_argument("results_dir")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("collect", help="gather run records into runs.csv")
    p.add_argument("results_dir")
    p.set_defaults(func=cmd_collect)

    try:  # TEMP-DEV
        from harness.analysis.cli import register
        register(sub)
    except ImportError:  # TEMP-DEV
        pass
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.func in (cmd_run,):
            overrides = _split_overrides(extra)
            return args.func(args, overrides)
        if extra:
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
        if args.func in (cmd_collect, cmd_status):
            return args.func(args, [])
        return int(args.func(args))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept and the next `harness run` resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
