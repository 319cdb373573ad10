"""Subcommands `fit`, `plot`, `reproduce` and `predict` of the `harness` command.

`register(subparsers)` adds them to the top-level parser (harness/cli.py); each sets
``func=handler`` where ``handler(args) -> int`` is the exit code. Bad input raises InputError,
which the top-level command prints as one line and exits 2 on. Warnings raised while a handler
works (GridEdgeWarning, numpy's RuntimeWarnings) are recorded in that handler only and printed
as one line each, ``warning: <message>``, on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from harness.analysis.common import read_fits_json
from harness.analysis.drawing import plot_path
from harness.analysis.fitting import ALL_FITS, fit_path, summarize
from harness.analysis.io import parse_column_map
from harness.analysis.reproduce import reproduce_path
from harness.analysis.subsample import FIT_ROWS_MAX
from harness.atomic import check_writable
from harness.errors import InputError

__all__ = ["cmd_fit", "cmd_plot", "cmd_predict", "cmd_reproduce", "register", "warnings_as_lines"]


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Record the warnings raised inside the block; print each once as `warning: <message>`.

    The filter change is local to the block (catch_warnings restores the previous filters), so
    that no warning is lost to Python's once-per-location registry and none is printed in its
    two-line file:line form.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen: set[str] = set()
            for w in caught:
                line = " ".join(str(w.message).split())
                if line not in seen:
                    seen.add(line)
                    print(f"warning: {line}", file=sys.stderr)


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (numpy's seeds and resample counts)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}; accepted: an integer >= 0")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a tolerance)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}; accepted: a finite number > 0")
    return value


def _list(spec: str | None) -> list[str] | None:
    if not spec:
        return None
    return [s.strip() for s in spec.split(",") if s.strip()]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="runs.csv, another CSV, or its directory")
    p.add_argument(
        "--columns",
        default=None,
        metavar="n_params=COL,...",
        help="map the CSV's own column names onto n_params, n_tokens, loss "
        "(and flops_budget, lr, batch_tokens, n_unique_tokens, epochs, "
        "status)",
    )
    p.add_argument(
        "--group-by",
        default=None,
        metavar="COL[,COL]",
        help="fit and plot each group of these columns separately",
    )


def register(subparsers: Any) -> None:
    """Add the fit, plot and reproduce subcommands to an argparse subparsers object."""
    p = subparsers.add_parser("fit", help="fit scaling laws; writes fits.json beside the CSV")
    _common(p)
    p.add_argument("--seed", type=_non_negative_int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--bootstrap",
        type=_non_negative_int,
        default=1000,
        metavar="N",
        help="bootstrap resamples (default 1000; 0 for none)",
    )
    p.add_argument(
        "--fits",
        default=None,
        metavar="NAME[,NAME]",
        help=f"fits to make (default: all the data allow): {', '.join(ALL_FITS)}",
    )
    p.add_argument(
        "--isoflop-minimum",
        choices=("parabola", "akima"),
        default="parabola",
        help="approach-2 minimum finder (akima: Porian et al. 2024)",
    )
    p.add_argument(
        "--n-convention",
        choices=("non_embedding", "total"),
        default="non_embedding",
        help="what N counts: non-embedding parameters (default; the harness's n_params) or all "
        "of them (n_params_total where the CSV has it); recorded in fits.json",
    )
    p.add_argument(
        "--target-accuracy",
        type=float,
        default=None,
        metavar="ACC",
        help="downstream.csv: accuracy whose labels-needed is reported (default: "
        "halfway from chance to the best accuracy, per method)",
    )
    p.add_argument(
        "--where",
        default=None,
        metavar="EXPR",
        help="fit only the runs this pandas expression selects, over the columns "
        "as named after --columns (n_params, n_tokens, loss, ...), e.g. "
        "'n_tokens <= 8e5'; recorded in fits.json. downstream.csv and the "
        "figures' points are not filtered",
    )
    p.add_argument(
        "--max-rows",
        type=int,
        default=FIT_ROWS_MAX,
        metavar="N",
        help=f"fit the laws on at most N runs (default {FIT_ROWS_MAX}): a larger CSV is fitted "
        "on a subsample stratified over 6ND, one run per stratum; the summary and fits.json "
        "say so. The fit's time grows with N times the bootstrap size",
    )
    p.add_argument("--out", default=None, help="write fits.json here instead")
    p.set_defaults(func=cmd_fit)

    p = subparsers.add_parser("plot", help="write figures/*.png and *.svg beside the CSV")
    _common(p)
    p.add_argument("--out-dir", default=None, help="write the figures here instead")
    p.set_defaults(func=cmd_plot)

    p = subparsers.add_parser(
        "report", help="write report.html beside the CSV: figures, tables, laws, provenance"
    )
    p.add_argument("path", metavar="PATH", help="results directory or its CSV")
    p.add_argument("--out", default=None, help="write the HTML file here instead")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "reproduce", help="refit and replot from the CSV alone; compare with fits.json"
    )
    p.add_argument("path", metavar="PATH", help="results directory, its CSV, or fits.json")
    p.add_argument(
        "--rtol",
        type=_positive_float,
        default=1e-6,
        help="relative tolerance of point estimates, added to the optimum's own "
        "numerical precision (default 1e-6); interval ends are compared within "
        "their bootstrap's Monte Carlo error",
    )
    p.add_argument("--no-replot", action="store_true", help="compare the fits only")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="also retrain the cheapest runs from their runs/<run_id>/spec.json in a "
        "scratch folder and compare their final losses with the CSV, within a "
        "tolerance from the measured seed-to-seed spread (needs torch)",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=3,
        metavar="K",
        help="with --retrain: how many runs, cheapest first (default 3)",
    )
    p.set_defaults(func=cmd_reproduce)

    p = subparsers.add_parser(
        "predict",
        help="loss at new (N, D), or the compute-optimal model for a budget, with 95%% intervals",
    )
    p.add_argument("path", metavar="PATH", help="results directory, its CSV, or fits.json")
    p.add_argument("--n", default=None, help="parameters N: 1e9,2e9 or a log range 1e8:1e10:5")
    p.add_argument("--d", default=None, help="training tokens D, as --n")
    p.add_argument(
        "--tokens-per-param",
        default=None,
        metavar="M",
        help="tokens per parameter M = D/N in place of --d (over-training: --law overtraining)",
    )
    p.add_argument(
        "--flops",
        default=None,
        help="compute budgets C in FLOPs, as --n: the compute-optimal N, D and tokens per "
        "parameter (with --law chinchilla), or the loss of L(C) (--law power_law_c)",
    )
    p.add_argument(
        "--law",
        default=None,
        help="chinchilla (default), kaplan, overtraining, power_law_n, power_law_d or power_law_c;"
        " with --curve: anneal_curve (default) or multi_power_curve",
    )
    p.add_argument(
        "--task",
        default=None,
        metavar="T[,T]",
        help="accuracy on these tasks of tasks.csv (or 'all'), chained from --n and --d (or "
        "--tokens-per-param, or --flops: at the compute-optimal N, D of the chinchilla law)",
    )
    p.add_argument("--group", default=None, help="the group of a grouped fit: 'v1|v2'")
    p.add_argument(
        "--curve",
        action="store_true",
        help="the final loss after --d tokens of a run of size --n under --schedule, from the "
        "loss-curve law of its learning curves (--law anneal_curve, the default, or "
        "multi_power_curve), and for wsd the best cooldown",
    )
    p.add_argument(
        "--schedule",
        default="cosine",
        choices=("cosine", "wsd", "constant"),
        help="--curve: the learning-rate schedule (default cosine)",
    )
    p.add_argument(
        "--cooldown",
        type=float,
        default=None,
        metavar="F",
        help="--curve --schedule wsd: the cooldown's fraction of the run (default: the runs')",
    )
    p.add_argument(
        "--peak-lr", type=float, default=None, help="--curve: peak rate (default: the runs')"
    )
    p.add_argument(
        "--min-lr-ratio",
        type=float,
        default=None,
        help="--curve: final rate over peak (default: the runs')",
    )
    p.add_argument(
        "--warmup-tokens",
        type=float,
        default=None,
        help="--curve: warmup length in tokens (default: the runs' rule)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per query")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    """`harness predict PATH`: predictions with intervals from the stored bootstrap."""
    from harness.analysis import predict as pr
    from harness.analysis.common import json_clean

    if args.task:
        return _predict_tasks(args)
    if args.curve:
        return _predict_curve(args)
    curve_only = [
        f"--{k.replace('_', '-')}"
        for k in ("cooldown", "peak_lr", "min_lr_ratio", "warmup_tokens")
        if getattr(args, k) is not None
    ]
    if curve_only or args.schedule != "cosine":
        raise InputError(f"{(curve_only or ['--schedule'])[0]} goes with --curve")
    law = pr.load_law(args.path, args.law or "chinchilla", args.group)
    values = {
        q: pr.parse_values(getattr(args, q), f"--{q.replace('_', '-')}") if getattr(args, q) else []
        for q in ("n", "d", "flops", "tokens_per_param")
    }
    if not any(values.values()):
        raise InputError(
            "predict: give --n and --d, or --flops (or --n and --tokens-per-param); accepted: "
            "see `harness predict -h`"
        )
    if values["flops"] and law.name == "chinchilla":
        if values["n"] or values["d"] or values["tokens_per_param"]:
            raise InputError("--flops gives the compute-optimal N and D: leave out --n and --d")
        rows = pr.predict_optimal(law, values["flops"])
    else:
        rows = pr.predict(
            law, values["n"], values["d"], values["flops"], values["tokens_per_param"]
        )
    if args.json:
        print(json.dumps(json_clean(rows), indent=2))
    else:
        print(pr.table(law, rows))
    return 0


def _predict_curve(args: argparse.Namespace) -> int:
    """`harness predict PATH --curve --n N --d D --schedule S`: a final loss from the curve law."""
    from harness.analysis import curve_predict as cp
    from harness.analysis import predict as pr
    from harness.analysis.common import json_clean

    if args.group or args.flops or args.tokens_per_param:
        raise InputError("--curve takes --n, --d and --schedule (and --law anneal_curve or "
                         "multi_power_curve); leave out --group, --flops and "
                         "--tokens-per-param")  # fmt: skip
    if not args.n or not args.d:
        raise InputError("--curve: give --n (a fitted size) and --d (tokens)")
    ns = pr.parse_values(args.n, "--n")
    ds = pr.parse_values(args.d, "--d")
    overrides = {
        k: getattr(args, k)
        for k in ("peak_lr", "min_lr_ratio", "warmup_tokens")
        if getattr(args, k) is not None
    }
    for k, v in overrides.items():
        if not (math.isfinite(v) and v >= 0):
            raise InputError(f"--{k.replace('_', '-')} {v}; accepted: a finite number >= 0")
    rows = []
    for n in ns:
        law = cp.load_curve_law(args.path, n, args.law or cp.NAME)
        rows += cp.predict_curve(
            law, ds, args.schedule, cooldown=args.cooldown, overrides=overrides
        )
    print(json.dumps(json_clean(rows), indent=2) if args.json else cp.curve_table(rows))
    return 0


def _predict_tasks(args: argparse.Namespace) -> int:
    """`harness predict PATH --task T`: accuracy chained from N and D, with its interval."""
    from harness.analysis import predict as pr
    from harness.analysis.common import json_clean

    if args.law or args.group:
        raise InputError("--task chains from the fit's own laws: leave out --law and --group")
    values = {
        q: pr.parse_values(getattr(args, q), f"--{q.replace('_', '-')}") if getattr(args, q) else []
        for q in ("n", "d", "flops", "tokens_per_param")
    }
    names = [t.strip() for t in args.task.split(",") if t.strip()]
    if names == ["all"]:
        doc = read_fits_json(pr.fits_json_of(args.path))
        names = [k for k, b in doc.get("tasks", {}).get("tasks", {}).items() if "step2" in b]
    if values["flops"]:
        if values["n"] or values["d"] or values["tokens_per_param"]:
            raise InputError("--flops gives the compute-optimal N and D: leave out --n and --d")
        opt = pr.predict_optimal(pr.load_law(args.path, "chinchilla"), values["flops"])
        pairs = [(r["n_opt"], r["d_opt"]) for r in opt]
    elif values["n"] and (values["d"] or values["tokens_per_param"]):
        if values["d"] and values["tokens_per_param"]:
            raise InputError("give --d or --tokens-per-param, not both")
        pairs = [
            (n, d if values["d"] else d * n)
            for n in values["n"]
            for d in (values["d"] or values["tokens_per_param"])
        ]
    else:
        raise InputError("--task: give --n and --d (or --tokens-per-param), or --flops")
    rows = []
    for name in names:
        tf, block = pr.load_task(args.path, name)
        for n, d in pairs:
            rows += pr.predict_task(tf, block, [n], [d])
    print(json.dumps(json_clean(rows), indent=2) if args.json else pr.task_table(rows))
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    """`harness fit PATH`: write fits.json and print a summary. Raises InputError."""
    if args.out is not None:
        check_writable(args.out, folder=False, what="--out")
    with warnings_as_lines():
        out = fit_path(
            args.path,
            out=args.out,
            seed=args.seed,
            n_bootstrap=args.bootstrap,
            column_map=parse_column_map(args.columns),
            group_by=_list(args.group_by),
            fits=_list(args.fits),
            isoflop_minimum=args.isoflop_minimum,
            target_accuracy=args.target_accuracy,
            where=args.where,
            n_convention=args.n_convention,
            max_rows=args.max_rows,
        )
    print(summarize(json.loads(out.read_text())))
    print(f"wrote {out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """`harness plot PATH`: write the figures. Raises InputError."""
    if args.out_dir is not None:
        check_writable(args.out_dir, folder=True, what="--out-dir")
    with warnings_as_lines():
        files = plot_path(
            args.path,
            out_dir=args.out_dir,
            column_map=parse_column_map(args.columns),
            group_by=_list(args.group_by),
        )
    for f in files:
        print(f"wrote {f}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """`harness report PATH`: write the self-contained HTML report. Raises InputError."""
    from harness.analysis.report import write_report

    if args.out is not None:
        check_writable(args.out, folder=False, what="--out")
    with warnings_as_lines():
        page = write_report(args.path, out=args.out)
    print(f"wrote {page} (open it in a browser; it fetches nothing)")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """`harness reproduce PATH`: 0 when the refit agrees with fits.json, else 1."""
    if args.retrain and args.runs < 1:
        raise InputError(f"--runs {args.runs}; accepted: an integer >= 1")
    with warnings_as_lines():
        ok, table = reproduce_path(args.path, rtol=args.rtol, replot=not args.no_replot)
    print(table)
    if args.retrain:
        from harness.retrain import retrain_check  # imports torch; the analysis alone does not

        trained_ok, trained = retrain_check(args.path, n_runs=args.runs)
        print(trained)
        ok = ok and trained_ok
    print("reproduce: OK" if ok else "reproduce: DIFFERENT beyond tolerance")
    return 0 if ok else 1
