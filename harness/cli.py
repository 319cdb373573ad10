"""The ``harness`` command: parse, call one function, exit.

Exit codes: 0 done; 1 the work failed (a run failed, reproduce disagrees); 2 bad input or
usage, with one line naming the file, field, value and what is accepted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from harness import __version__
from harness.errors import InputError, no_space

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


def cmd_run(args: argparse.Namespace) -> int:
    from harness import pipeline

    return pipeline.run(args.experiment, args.overrides)


def cmd_finetune(args: argparse.Namespace) -> int:
    from harness import pipeline

    return pipeline.finetune(args.experiment, args.overrides)


def cmd_submit(args: argparse.Namespace) -> int:
    from harness import pipeline

    return pipeline.submit(
        args.experiment,
        args.overrides,
        cluster=args.cluster,
        only_failed=args.only_failed,
        dry_run=args.dry_run,
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from harness import pipeline

    return pipeline.validate(args.experiment, args.overrides, factor=args.factor)


def cmd_plan(args: argparse.Namespace) -> int:
    from harness.plan import plan

    print(plan(args.experiment, args.overrides, measure=not args.no_timing))
    return 0


def _ints(minimum: int):  # noqa: ANN202 - an argparse type
    """'32,64,128' -> [32, 64, 128], each >= minimum; a bad list is a one-line usage error."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a list like 32,64,128") from None
        if any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= {minimum}")
        return values

    return parse


def cmd_coordcheck(args: argparse.Namespace) -> int:
    from harness.coordcheck import coordcheck

    out, found = coordcheck(
        args.experiment,
        args.overrides,
        widths=args.widths,
        depths=args.depths,
        steps=args.steps,
        seeds=args.seeds,
    )
    last = found[found["step"] == found["step"].max()]
    table = last.pivot_table(index=["axis", "parametrization"], columns="layer", values="slope")
    print(f"log-log slope of mean |activation| against size, step {int(found['step'].max())}:")
    print(table.to_string(float_format=lambda v: f"{v:+.2f}"))
    print(f"wrote {out}/coordcheck.csv and its figures")
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


def cmd_status(args: argparse.Namespace) -> int:
    from harness.execute.status import forecast_lines, grid_summary, run_statuses, status_table
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
    print("\n".join(status_table(rows)))
    states = [r.state for r in rows]
    print(", ".join(f"{states.count(s)} {s}" for s in order if s in states) or "no runs")
    if rows:
        print(grid_summary(rows))
        for line in forecast_lines(layout, rows):
            print(line)
    failed = [r for r in rows if r.state == "failed"]
    if any(r.submissions for r in failed):
        print(
            "`harness submit EXP.toml` (or --only-failed) resubmits the failed SLURM runs; "
            "they resume from their checkpoints"
        )
    if any(not r.submissions for r in failed) or "interrupted" in states:
        print(
            "`harness run EXP.toml` trains the failed and interrupted runs of this machine "
            "again, each from its newest checkpoint"
        )
    # Exit codes (README, Commands): 1 when the work failed, so scripts and CI can wait on it.
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
        "validate",
        help="train the compute-optimal model the fitted law predicts beyond the grid; compare",
    )
    p.add_argument("experiment", help="experiments/NAME.toml of a fitted grid; add overrides")
    p.add_argument(
        "--factor",
        type=float,
        default=10.0,
        help="the budget as a multiple of the grid's largest run (default 10)",
    )
    p.set_defaults(func=cmd_validate, takes_overrides=True)

    p = sub.add_parser(
        "status", help="table of runs: done, running, queued, failed (with log), never submitted"
    )
    p.add_argument("results_dir")
    p.set_defaults(func=cmd_status)

    from harness.analysis.coordcheck import DEFAULT_DEPTHS, DEFAULT_WIDTHS

    p = sub.add_parser(
        "coordcheck",
        help="muP's coordinate check: activation sizes against width (and depth) over a few steps",
    )
    p.add_argument("experiment", help="experiments/NAME.toml; add --section.field=value overrides")
    p.add_argument(
        "--widths",
        type=_ints(1),
        default=list(DEFAULT_WIDTHS),
        help="n_embd values, e.g. 32,64,128 (default 32..1024)",
    )
    p.add_argument(
        "--depths",
        type=_ints(1),
        default=list(DEFAULT_DEPTHS),
        help="n_layer values, CompleteP only (default 2,4,8,16)",
    )
    p.add_argument("--steps", type=int, default=10, help="training steps per model (default 10)")
    p.add_argument("--seeds", type=_ints(0), default=[0], help="seeds, e.g. 0,1,2 (default 0)")
    p.set_defaults(func=cmd_coordcheck, takes_overrides=True)

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
    except OSError as e:
        if not no_space(e):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(
            f"error: no space left on device{where}; free some (or point "
            "execution.results_dir elsewhere) and run the command again: files are written "
            "whole or not at all, and finished runs and checkpoints are kept",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; finished runs are kept and the next `harness run` resumes",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
