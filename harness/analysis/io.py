"""Loading runs.csv (schema v1 of docs/results-format.md, or any CSV with N, D and loss columns).

Every problem with the input raises `InputError` with one line naming the file, the column, the
bad value(s), the line numbers in the file (the header is line 1) and what is accepted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.where import select_rows
from harness.errors import InputError
from harness.flops import training_flops
from harness.rundir import RunDir

__all__ = [
    "METRICS_COLUMNS",
    "PROVENANCE_COLUMNS",
    "REQUIRED",
    "check_one_source",
    "load_learning_curves",
    "load_runs",
    "parse_column_map",
    "resolve_csv",
]

REQUIRED: tuple[str, ...] = ("n_params", "n_tokens", "loss")
"""Columns every fit needs: non-embedding parameters N, training tokens D, final loss."""

SETTING_COLUMNS: tuple[str, ...] = (
    "flops_budget",
    "lr",
    "batch_tokens",
    "n_unique_tokens",
    "epochs",
)
"""Optional columns that group or order runs for some fits (isoFLOP budgets, lr and batch
sweeps, repeated data): in a done row, blank or a finite number > 0. (Blank is not a value:
`points` runs beside an isoFLOP grid have no budget, and runs from before a column existed
have none.)"""

METRICS_COLUMNS: tuple[str, ...] = ("step", "tokens", "train_loss", "val_loss", "lr", "wall_s")
"""Columns of runs/<run_id>/metrics.csv (val_loss empty except at evaluation steps)."""

_MAX_SHOWN = 5


def resolve_csv(path: str | os.PathLike[str]) -> Path:
    """The CSV a PATH argument names: the file itself, or runs.csv inside a directory.

    Raises
    ------
    InputError
        If the file does not exist.
    """
    p = Path(path)
    if p.is_dir():
        csv = p / "runs.csv"
        if not csv.is_file():
            raise InputError(
                f"{p}: no runs.csv in this directory; accepted: a CSV file or a directory "
                "holding runs.csv"
            )
        return csv
    if not p.is_file():
        raise InputError(f"{p}: no such file; accepted: a CSV file or a directory holding runs.csv")
    return p


def parse_column_map(spec: str | None) -> dict[str, str]:
    """Parse ``n_params=MYCOL,n_tokens=TOK`` into {canonical: user column}.

    Raises
    ------
    InputError
        On a malformed item or an unknown canonical name.
    """
    if not spec:
        return {}
    out: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        key, val = key.strip(), val.strip()
        names = (*REQUIRED, *SETTING_COLUMNS, "status")
        accepted = f"NAME=COLUMN[,NAME=COLUMN...] with NAME one of {', '.join(names)}"
        if not sep or not key or not val:
            raise InputError(f"--columns: bad item {item!r}; accepted: {accepted}")
        if key not in names:
            raise InputError(f"--columns: unknown name {key!r} in {item!r}; accepted: {accepted}")
        if key in out or val in out.values():
            raise InputError(
                f"--columns: {item!r} maps a name or column a second time; accepted: {accepted}, "
                "each name and each column once"
            )
        out[key] = val
    return out


def line_list(lines: Sequence[int]) -> str:
    """'line 4' / 'lines 4, 7 and 3 more' (line numbers in the file; the header is line 1)."""
    idx = list(lines)
    shown = ", ".join(str(int(i)) for i in idx[:_MAX_SHOWN])
    more = f" and {len(idx) - _MAX_SHOWN} more" if len(idx) > _MAX_SHOWN else ""
    return f"line{'s' if len(idx) > 1 else ''} {shown}{more}"


def value_list(vals: Sequence[object]) -> str:
    shown = ", ".join(
        repr(v)
        if isinstance(v, str)
        else repr(float(v))
        if isinstance(v, (int, float, np.number))
        else repr(v)
        for v in vals[:_MAX_SHOWN]
    )
    return shown + (f" and {len(vals) - _MAX_SHOWN} more" if len(vals) > _MAX_SHOWN else "")


def sha256_of(path: Path) -> str:
    """SHA-256 of a file's bytes (the "input" records of fits.json)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_results_csv(csv: Path, dtype: Mapping[str, type]) -> pd.DataFrame:
    """Read a results CSV, the columns in `dtype` as those types, header names stripped.

    Raises
    ------
    InputError
        An empty or unparsable file.
    """
    try:
        df = pd.read_csv(csv, skipinitialspace=True, dtype=dict(dtype))
    except pd.errors.EmptyDataError:
        raise InputError(f"{csv}: the file is empty; accepted: a CSV with a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = " ".join(str(exc).split())
        raise InputError(f"{csv}: cannot parse as CSV ({first}); accepted: a CSV file") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def done_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows whose ``status`` column (if any) is "done", and how many others were dropped.

    Adds the column ``line``: each row's line in the file (header = line 1), numbered before
    the drop so that error messages point into the file.
    """
    df = df.reset_index(drop=True)
    df["line"] = np.arange(len(df)) + 2
    if "status" not in df.columns:
        return df, 0
    keep = df["status"].astype(str).str.strip() == "done"
    return df[keep].reset_index(drop=True), int((~keep).sum())


def load_runs(
    path: str | os.PathLike[str],
    column_map: Mapping[str, str] | None = None,
    *,
    min_points: int = 2,
    where: str | None = None,
) -> pd.DataFrame:
    """Read runs.csv into a DataFrame with the columns n_params, n_tokens, loss (and the rest).

    Rows whose ``status`` column (if any) is not "done" are dropped; their count is in
    ``df.attrs["n_excluded"]``. ``df.attrs["path"]`` is the CSV read, and the column
    ``line`` holds each row's line number in the file (header = line 1). ``where``
    (`where.select_rows`) selects rows before any value is checked, so that it can leave out
    rows a foreign CSV leaves incomplete (``n_tokens > 0`` drops a blank D); the count left out
    is in ``df.attrs["n_not_selected"]``.

    Parameters
    ----------
    path : path-like
        A CSV file, or a directory holding runs.csv.
    column_map : mapping, optional
        {canonical name: the CSV's own column}, e.g. ``{"n_params": "N_params"}``.
    min_points : int
        Fewest usable rows accepted.

    Returns
    -------
    pandas.DataFrame
        The usable rows, N, D and loss as float64, in file order.

    Raises
    ------
    InputError
        Missing file, unparsable CSV, missing columns, NaN/inf or non-numeric values,
        non-positive N, D or loss, or fewer than `min_points` usable rows.
    """
    csv = resolve_csv(path)
    # run_id as text: ids such as "0123" or "1e5" must not turn into numbers (they name
    # the runs/<run_id>/ directories).
    df = read_results_csv(csv, {"run_id": str})
    if column_map:
        missing = [v for v in column_map.values() if v not in df.columns]
        if missing:
            raise InputError(
                f"{csv}: --columns names column(s) {value_list(missing)} that the file lacks; "
                f"accepted: one of {', '.join(df.columns)}"
            )
        rename = {user: canon for canon, user in column_map.items() if user != canon}
        df = df.drop(columns=[c for c in rename.values() if c in df.columns])
        df = df.rename(columns=rename)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(
            f"{csv}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns)}; "
            "accepted: n_params, n_tokens and loss columns, or map yours with "
            "--columns n_params=COL,n_tokens=COL,loss=COL"
        )
    df, n_excluded = done_rows(df)
    n_not_selected = None
    if where:
        df = select_rows(df, where, csv)
        n_not_selected = int(df.attrs["n_not_selected"])
    for col in REQUIRED:
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = np.flatnonzero(num.isna() & raw.notna())
        if bad.size:
            raise InputError(
                f"{csv}: column {col!r} has non-numeric value(s) {value_list(list(raw.iloc[bad]))} "
                f"at {line_list(df['line'].iloc[bad])}; accepted: finite numbers > 0"
            )
        vals = num.to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(vals))
        if bad.size:
            raise InputError(
                f"{csv}: column {col!r} has NaN/inf value(s) {value_list(list(vals[bad]))} at "
                f"{line_list(df['line'].iloc[bad])}; accepted: finite numbers > 0 "
                "(mark failed runs with status other than 'done')"
            )
        bad = np.flatnonzero(vals <= 0)
        if bad.size:
            raise InputError(
                f"{csv}: column {col!r} has non-positive value(s) {value_list(list(vals[bad]))} "
                f"at {line_list(df['line'].iloc[bad])}; accepted: finite numbers > 0"
            )
        df[col] = vals
    with np.errstate(over="ignore"):
        c = training_flops(df["n_params"].to_numpy(float), df["n_tokens"].to_numpy(float))
    bad = np.flatnonzero(~np.isfinite(c))
    if bad.size:  # 1e308 parameters: every law and figure would overflow on it
        raise InputError(
            f"{csv}: n_params x n_tokens overflows (6ND is not a finite number) at "
            f"{line_list(df['line'].iloc[bad])}; accepted: sizes whose compute 6ND is finite"
        )
    if "run_id" in df.columns:  # a CSV appended to itself would count each run twice
        dup = df["run_id"].notna() & df["run_id"].duplicated(keep=False)
        if dup.any():
            raise InputError(
                f"{csv}: run_id {df.loc[dup, 'run_id'].iloc[0]!r} appears on "
                f"{line_list(df.loc[dup, 'line'])}; accepted: each run once (`harness collect` "
                "rewrites runs.csv from the run directories)"
            )
    for col in SETTING_COLUMNS:
        # One bad budget or lr would silently regroup the runs (a blank budget sent every run
        # to budgets derived from 6ND): refuse it instead. Checked only, not converted.
        if col not in df.columns:
            continue
        raw = df[col]
        vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(raw.notna().to_numpy() & ~(np.isfinite(vals) & (vals > 0)))
        if bad.size:
            raise InputError(
                f"{csv}: column {col!r} has bad value(s) {value_list(list(raw.iloc[bad]))} at "
                f"{line_list(df['line'].iloc[bad])}; accepted: blank or a finite number > 0 in "
                "rows with status 'done'"
            )
    if len(df) < min_points:
        raise InputError(
            f"{csv}: {len(df)} usable row(s) ({n_excluded} excluded by status); accepted: at "
            f"least {min_points} runs with status 'done'"
        )
    df.attrs["n_excluded"] = n_excluded
    df.attrs["path"] = str(csv)
    if n_not_selected is not None:
        df.attrs["n_not_selected"] = n_not_selected
    return df


PROVENANCE_COLUMNS = frozenset(
    {"run_id", "status", "device", "harness_version", "git_sha", "line", "experiment"}
)
"""Text columns that say where or when a run ran, not what it computed: repeats of one (N, D)
may differ in them."""


def check_one_source(df: pd.DataFrame, group_by: Sequence[str], csv: Path) -> None:
    """Refuse rows at the same (N, D) that differ in a text column (a corpus, a tokenizer, a
    schedule): they are different experiments, and one law through all of them is a law of
    none. Repeats that differ only in numbers (seeds, swept lr or batch) or in provenance
    (`PROVENANCE_COLUMNS`), and columns that name each run (all values distinct), pass.

    Raises
    ------
    InputError
        Naming the column, its values, the (N, D) and the lines, and the way out (--group-by
        or --where).
    """
    cols = [
        c
        for c in df.columns
        if c not in PROVENANCE_COLUMNS
        and c not in group_by
        and c not in REQUIRED
        and (df[c].dtype == object or isinstance(df[c].dtype, pd.StringDtype))
        and df[c].nunique(dropna=False) < len(df)
    ]
    if not cols:
        return
    keys = list(group_by) + ["n_params", "n_tokens"]
    dup = df[df.duplicated(keys, keep=False)]
    for _, g in dup.groupby(keys, sort=False):
        for c in cols:
            values = g[c].astype(str).unique()
            if values.size > 1:
                n, d = float(g["n_params"].iloc[0]), float(g["n_tokens"].iloc[0])
                raise InputError(
                    f"{csv}: rows at the same N = {n:.6g}, D = {d:.6g} differ in column {c!r} "
                    f"({value_list(list(values))} at {line_list(g['line'])}): different "
                    f"experiments, not repeats; accepted: --group-by {c} to fit each, or "
                    f"--where to select one"
                )


def load_learning_curves(
    runs_dir: str | os.PathLike[str], sizes: Mapping[str, float]
) -> pd.DataFrame:
    """The learning curves of the runs in `sizes`, read from runs_dir/<run_id>/metrics.csv.

    Parameters
    ----------
    runs_dir : path-like
        The runs/ directory of a results directory.
    sizes : mapping
        {run_id: n_params}; runs without a metrics.csv are left out.

    Returns
    -------
    pandas.DataFrame
        Long format, one row per logged step: run_id, n_params, tokens, train_loss, val_loss
        (NaN between evaluations), sorted by n_params, run_id and tokens. Empty (with these
        columns) when no run has a metrics.csv.

    Raises
    ------
    InputError
        A metrics.csv that cannot be parsed or lacks the tokens, train_loss or val_loss column.
    """
    cols = ["run_id", "n_params", "tokens", "train_loss", "val_loss"]
    frames = []
    for run_id, n in sizes.items():
        path = RunDir(Path(runs_dir) / str(run_id)).metrics_csv
        if not path.is_file():
            continue
        try:
            m = pd.read_csv(path, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            continue  # created, nothing logged yet
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            first = " ".join(str(exc).split())
            raise InputError(
                f"{path}: cannot parse as CSV ({first}); accepted: a CSV with "
                f"columns {', '.join(METRICS_COLUMNS)}"
            ) from None
        m.columns = [str(c).strip() for c in m.columns]
        missing = [c for c in ("tokens", "train_loss", "val_loss") if c not in m.columns]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)}; found "
                f"{', '.join(m.columns)}; accepted: {', '.join(METRICS_COLUMNS)}"
            )
        m = m[["tokens", "train_loss", "val_loss"]].apply(pd.to_numeric, errors="coerce")
        m = m[np.isfinite(m["tokens"]) & (m["tokens"] > 0)]  # e.g. a line still being written
        m.insert(0, "n_params", float(n))
        m.insert(0, "run_id", str(run_id))
        frames.append(m)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "run_id" else float) for c in cols})
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["n_params", "run_id", "tokens"], kind="stable").reset_index(drop=True)
