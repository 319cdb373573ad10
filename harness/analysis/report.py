"""From runs.csv to fits.json (schema 1, docs/results-format.md), a summary table, figures,
and reproduce.

fits.json holds, beside "fits", the "settings" it was made with (seed, bootstrap size, column
map, groups, fits), so that `reproduce_path` can refit from the CSV alone. Numbers are plain
JSON floats rounded to 10 significant digits; keys are sorted; the input path is stored as a
file name only. The same CSV and settings therefore give a byte-identical file wherever the
directory lies.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import dataconstrained as dc
from harness.analysis import downstream as ds
from harness.analysis import fit as fitmod
from harness.analysis import identify, sweeps
from harness.analysis import isoflop as iso
from harness.analysis.fit import _ci
from harness.analysis.io import _fmt, _lines, _sha256, load_runs, resolve_csv
from harness.analysis.laws import chinchilla_loss, compute_optimal, flops
from harness.analysis.where import select_rows
from harness.atomic import atomic_write_json, check_writable
from harness.errors import InputError

__all__ = [
    "ALL_FITS",
    "COMPUTE_BUDGETS",
    "fit_frame",
    "fit_path",
    "fits_up_to_date",
    "plot_path",
    "summarize",
]

ALL_FITS: tuple[str, ...] = (
    "chinchilla",
    "compute_optimal",
    "kaplan",
    "power_law_n",
    "power_law_d",
    "power_law_c",
    "approach1",
    "isoflop",
    "heldout",
    "lr_sweep",
    "batch_sweep",
    "data_constrained",
)
"""Every fit fits.json can hold. By default each is made where the data allow; chinchilla is
required (a CSV that cannot support the joint fit is bad input unless `fits` leaves it out, or
the runs sweep lr or batch size). lr_sweep and batch_sweep appear only for runs that sweep them
(`sweeps.swept_columns`) or when asked for by name; data_constrained only for runs that repeat
data (`dataconstrained.has_repeats`) or when asked for by name."""

COMPUTE_BUDGETS: tuple[float, ...] = (1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24)
"""Budgets (FLOPs) at which compute_optimal reports N_opt, D_opt and tokens per parameter."""

SCHEMA = 1
_SIG = 10  # significant digits kept in fits.json


def _num(x: float) -> float | None:
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{_SIG}g}")


def _clean(obj: Any) -> Any:
    """Plain JSON: floats rounded, numpy scalars converted, tuples to lists, keys as str."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _num(float(obj))
    return obj


def _rng(seed: int, label: str) -> np.random.Generator:
    # One stream per fit and group, so that adding a fit does not move the others' numbers.
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def _budget_column(df: pd.DataFrame) -> np.ndarray | None:
    """The per-run compute budget if the runs form isoFLOP profiles, else None.

    Taken from a ``flops_budget`` column, else C = 6ND rounded to 3 significant digits when at
    least 2 budgets hold runs of 3 or more distinct N.
    """
    if "flops_budget" in df.columns:
        b = pd.to_numeric(df["flops_budget"], errors="coerce").to_numpy(dtype=float)
        if np.all(np.isfinite(b) & (b > 0)):
            return b
    b = iso.budgets_of(flops(df["n_params"], df["n_tokens"]))
    n_prof = sum(np.unique(df["n_params"].to_numpy()[b == c]).size >= 3 for c in np.unique(b))
    return b if n_prof >= 2 else None


def _slice(df: pd.DataFrame, fixed: str, var: str) -> tuple[pd.DataFrame, str]:
    """Rows for a one-variable law in `var`: at the `fixed` value with the most distinct `var`
    values (ties: the largest), else the frontier (lowest loss at each `var` value)."""
    best = None
    for v, g in df.groupby(fixed):
        k = g[var].nunique()
        if k >= 4 and (best is None or (k, v) >= (best[0], best[1])):
            best = (k, v, g)
    if best is not None:
        return best[2], f"{fixed}={best[1]:.6g}"
    front = df.loc[df.groupby(var)["loss"].idxmin()]
    return front, "frontier: lowest loss at each " + var


def _envelope(C: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Indices of the compute envelope: runs with lower loss than every cheaper run."""
    order = np.argsort(C, kind="stable")
    keep, best = [], np.inf
    for i in order:
        if L[i] < best:
            keep.append(i)
            best = L[i]
    return np.array(keep, dtype=int)


def _fit_block(
    res: fitmod.FitResult, boots: list[dict[str, float]], n_failed: int, n_boot: int
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "params": dict(res.params),
        "ci95": {k: _ci(b[k] for b in boots) for k in res.params} if boots else {},
        "objective": res.objective,
        "converged": res.converged,
        "message": res.message,
        "n_starts": res.n_starts,
        "n_points": res.n_points,
        "on_grid_edge": res.on_grid_edge,
        "edge_params": list(res.edge_params),
        "n_bootstrap": n_boot,
        "n_bootstrap_failed": n_failed,
    }
    out.update(
        identify.law_fields(
            res.params, res.precision, res.undetermined, boots, out["ci95"], n_failed, n_boot
        )
    )
    return out


def _leafwise(f: Any, *trees: Any) -> Any:
    """f applied leaf by leaf to nested dicts of one shape (or to plain values)."""
    if isinstance(trees[0], Mapping):
        return {k: _leafwise(f, *(t[k] for t in trees)) for k in trees[0]}
    return f(*trees)


def _compute_optimal_block(
    chin: fitmod.FitResult,
    boots: Sequence[Mapping[str, float]],
    chin_undetermined: Mapping[str, str],
) -> dict[str, Any]:
    """N_opt, D_opt and tokens per parameter at COMPUTE_BUDGETS from a Chinchilla fit, with
    bootstrap intervals, their Monte Carlo errors, and the numerical precision propagated from
    the fit's (a quantity is undetermined when a parameter it depends on is)."""
    keys = [f"{c:.0e}" for c in COMPUTE_BUDGETS]
    budgets = list(zip(keys, COMPUTE_BUDGETS, strict=True))

    def values(p: Mapping[str, float]) -> dict[str, Any]:
        co = compute_optimal(p["A"], p["B"], p["alpha"], p["beta"])
        return {
            "a": co.a,
            "b": co.b,
            "G": co.G,
            "n_opt": {k: float(co.n_opt(c)) for k, c in budgets},
            "d_opt": {k: float(co.d_opt(c)) for k, c in budgets},
            "tokens_per_param": {k: float(co.tokens_per_param(c)) for k, c in budgets},
        }

    block = values(chin.params)
    cos = [
        values(b) for b in boots if all(np.isfinite(v) and v > 0 for k, v in b.items() if k != "E")
    ]
    ci95: dict[str, Any] = {}
    se: dict[str, Any] = {}
    if cos:
        for k in ("a", "b"):
            ci95[k] = _ci(c[k] for c in cos)
            se[k] = identify.interval_se([c[k] for c in cos])
        ci95["tokens_per_param"] = {b: _ci(c["tokens_per_param"][b] for c in cos) for b in keys}
        se["tokens_per_param"] = {
            b: identify.interval_se([c["tokens_per_param"][b] for c in cos]) for b in keys
        }
    # a = beta/(alpha+beta) and b need only the exponents; the rest all four parameters.
    deps = {k: ("alpha", "beta") if k in ("a", "b") else ("A", "B", "alpha", "beta") for k in block}
    # First-order propagation of each parameter's precision (independent worst cases added in
    # quadrature); a quantity depending on a parameter of infinite precision gets it too.
    moved = {
        p: values({**chin.params, p: chin.params[p] + chin.precision[p]})
        for p in ("A", "B", "alpha", "beta")
        if math.isfinite(chin.precision.get(p, math.inf))
    }
    prec: dict[str, Any] = {}
    for k, value in block.items():
        if any(p not in moved for p in deps[k]):
            prec[k] = _leafwise(lambda v: math.inf, value)
            continue
        sq = _leafwise(lambda v: 0.0, value)
        for p in deps[k]:
            sq = _leafwise(lambda s_, m, v: s_ + (m - v) ** 2, sq, moved[p][k], value)
        prec[k] = _leafwise(math.sqrt, sq)
    undetermined = {}
    for k in block:
        why = [f"chinchilla {p}: {chin_undetermined[p]}" for p in deps[k] if p in chin_undetermined]
        if why:
            undetermined[k] = "; ".join(why)
    return {
        **block,
        "ci95": ci95,
        "ci95_mc_se": se,
        "precision": prec,
        "undetermined": undetermined,
        "source": "chinchilla approach 3, Hoffmann et al. 2022 eq. 4",
    }


def fit_frame(
    df: pd.DataFrame,
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    fits: Sequence[str] | None = None,
    label: str = "",
    isoflop_minimum: str = "parabola",
    heldout_quantile: float = 0.75,
    kept: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every requested fit of one set of runs, as the "fits" object of fits.json.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows from `load_runs` (n_params, n_tokens, loss; flops_budget optional).
    seed : int
        Bootstrap seed.
    n_bootstrap : int
        Resamples per bootstrap (0 for none).
    fits : sequence of str, optional
        Names from ALL_FITS; None for every fit the data allow (chinchilla required).
    label : str
        Group label, mixed into the per-fit random streams.
    isoflop_minimum : {"parabola", "akima"}
        Minimum finder of approach 2.
    heldout_quantile : float
        Runs with C at or below this quantile of C train the held-out check.
    kept : dict, optional
        Receives "chinchilla": the Chinchilla fit with its bootstrap samples
        (`downstream.Step1Fit`), for a later stage that needs the same law on the same runs.

    Returns
    -------
    dict

    Raises
    ------
    InputError
        Unknown fit names, or data that cannot support a requested fit.
    """
    if fits is not None:
        unknown = [f for f in fits if f not in ALL_FITS]
        if unknown:
            raise InputError(f"--fits: unknown {unknown}; accepted: {', '.join(ALL_FITS)}")
        if not fits:
            raise InputError(f"--fits names no fit; accepted: one or more of {', '.join(ALL_FITS)}")
    want = set(ALL_FITS if fits is None else fits)
    explicit = fits is not None
    if n_bootstrap < 0:
        raise InputError(f"--bootstrap {n_bootstrap}; accepted: an integer >= 0")
    # Runs that sweep lr or batch size: the laws below see the best setting per (N, D); the
    # sweeps themselves are fitted at the end (lr_sweep, batch_sweep).
    swept = sweeps.swept_columns(df)
    full, df = df, sweeps.best_per_point(df, swept)
    N = df["n_params"].to_numpy(dtype=float)
    D = df["n_tokens"].to_numpy(dtype=float)
    L = df["loss"].to_numpy(dtype=float)
    C = flops(N, D)
    out: dict[str, Any] = {}

    def optional(name: str, fn: Any) -> None:
        # A fit the user did not ask for by name is made only where the data allow it.
        if name not in want:
            return
        try:
            out[name] = fn()
        except InputError as exc:
            if explicit:
                raise
            out[name] = {"skipped": str(exc)}

    chin: fitmod.FitResult | None = None
    chin_boot: list[dict[str, float]] = []
    if "chinchilla" in want:
        try:
            chin = fitmod.fit_chinchilla(N, D, L)
        except InputError as exc:
            if explicit or not swept:
                raise
            out["chinchilla"] = {"skipped": str(exc)}  # a sweep at too few (N, D) points
    if chin is not None:
        nf = 0
        if n_bootstrap:
            chin_boot, nf = fitmod.bootstrap_chinchilla(
                N, D, L, chin, n_resamples=n_bootstrap, rng=_rng(seed, label + "chinchilla")
            )
        out["chinchilla"] = _fit_block(chin, chin_boot, nf, n_bootstrap)
        if kept is not None:
            kept["chinchilla"] = ds.Step1Fit(chin, chin_boot, nf, len(N))

    if "compute_optimal" in want:
        if chin is None:
            if explicit:
                raise InputError("--fits compute_optimal needs chinchilla too")
        elif not all(np.isfinite(v) and v > 0 for k, v in chin.params.items() if k != "E"):
            # A fit with loss rising in N or D (alpha or beta <= 0) has no compute optimum.
            bad = ", ".join(f"{k}={v:.4g}" for k, v in chin.params.items() if k != "E")
            out["compute_optimal"] = {"skipped": f"chinchilla fit has no compute optimum ({bad})"}
        else:
            out["compute_optimal"] = _compute_optimal_block(
                chin, chin_boot, out["chinchilla"]["undetermined"]
            )

    def kaplan() -> dict[str, Any]:
        r = fitmod.fit_kaplan(N, D, L)
        bs, nf = ([], 0)
        if n_bootstrap:
            bs, nf = fitmod.bootstrap_kaplan(
                N, D, L, r, n_resamples=n_bootstrap, rng=_rng(seed, label + "kaplan")
            )
        return _fit_block(r, bs, nf, n_bootstrap)

    def power_law(name: str, x: np.ndarray, y: np.ndarray, where: str) -> dict[str, Any]:
        r = fitmod.fit_power_law(x, y, name=name)
        bs, nf = ([], 0)
        if n_bootstrap:
            bs, nf = fitmod.bootstrap_power_law(
                x, y, r, n_resamples=n_bootstrap, rng=_rng(seed, label + name)
            )
        block = _fit_block(r, bs, nf, n_bootstrap)
        block["data"] = where
        return block

    def pl_n() -> dict[str, Any]:
        sub, where = _slice(df, "n_tokens", "n_params")
        return power_law("power_law_n", sub["n_params"].to_numpy(), sub["loss"].to_numpy(), where)

    def pl_d() -> dict[str, Any]:
        sub, where = _slice(df, "n_params", "n_tokens")
        return power_law("power_law_d", sub["n_tokens"].to_numpy(), sub["loss"].to_numpy(), where)

    budget = _budget_column(df)

    def pl_c() -> dict[str, Any]:
        if budget is not None:
            idx = np.array(
                [np.flatnonzero(budget == c)[np.argmin(L[budget == c])] for c in np.unique(budget)]
            )
            x, where = budget[idx], "lowest loss per compute budget"
        else:
            idx = _envelope(C, L)
            x, where = C[idx], "compute envelope (runs better than every cheaper run)"
        return power_law("power_law_c", x, L[idx], where)

    def approach1() -> dict[str, Any]:
        if budget is None:
            raise InputError(
                "approach 1: the runs form no compute budgets (no flops_budget "
                "column and no 2 budgets with 3 or more model sizes)"
            )
        r = iso.fit_approach1(N, D, L, budget)
        return {
            "budgets": list(r.budgets),
            "n_opt": list(r.n_opt),
            "d_opt": list(r.d_opt),
            "loss_opt": list(r.loss_opt),
            "a": r.a,
            "b": r.b,
        }

    def isoflop() -> dict[str, Any]:
        if budget is None:
            raise InputError(
                "isoFLOP (approach 2): the runs form no compute budgets (no "
                "flops_budget column and no 2 budgets with 3 or more model sizes)"
            )
        r = iso.fit_isoflop(N, L, budget, minimum=isoflop_minimum)  # type: ignore[arg-type]
        block: dict[str, Any] = {
            "budgets": list(r.budgets),
            "n_opt": list(r.n_opt),
            "d_opt": list(r.d_opt),
            "loss_opt": list(r.loss_opt),
            "a": r.a,
            "b": r.b,
            "log_k_n": r.log_k_n,
            "log_k_d": r.log_k_d,
            "skipped_budgets": list(r.skipped),
            "minimum": r.minimum,
            "ci95": {},
            "n_bootstrap": n_bootstrap,
            "n_bootstrap_failed": 0,
        }
        if n_bootstrap:
            a, b, nf = iso.bootstrap_isoflop(
                N, L, r, n_resamples=n_bootstrap, rng=_rng(seed, label + "isoflop")
            )
            block["ci95"] = {"a": _ci(a), "b": _ci(b)}
            block["ci95_mc_se"] = {"a": identify.interval_se(a), "b": identify.interval_se(b)}
            block["n_bootstrap_failed"] = nf
        return block

    def heldout() -> dict[str, Any]:
        # Choshen et al. 2024: fit on the cheaper runs, predict the rest, report the absolute
        # relative error |L_pred - L| / L of the predictions.
        thr = float(np.quantile(C, heldout_quantile))
        tr, te = C <= thr, C > thr
        if te.sum() < 1:
            raise InputError("held-out check: no run above the compute threshold")
        r = fitmod.fit_chinchilla(N[tr], D[tr], L[tr])
        p = r.params
        pred = chinchilla_loss(N[te], D[te], p["E"], p["A"], p["B"], p["alpha"], p["beta"])
        are = np.abs(pred - L[te]) / L[te]
        return {
            "law": "chinchilla",
            "flops_threshold": thr,
            "quantile": heldout_quantile,
            "n_train": int(tr.sum()),
            "n_test": int(te.sum()),
            "are_mean": float(are.mean()),
            "are_max": float(are.max()),
            "are_median": float(np.median(are)),
            "params": dict(p),
            "precision": dict(r.precision),
            "undetermined": dict(r.undetermined),
        }

    optional("kaplan", kaplan)
    optional("power_law_n", pl_n)
    optional("power_law_d", pl_d)
    optional("power_law_c", pl_c)
    optional("approach1", approach1)
    optional("isoflop", isoflop)
    optional("heldout", heldout)

    def data_constrained() -> dict[str, Any]:
        # Muennighoff et al. 2023: repeated tokens and excess parameters lose value.
        src = str(df.attrs.get("path", "runs.csv"))
        U = dc.unique_tokens_of(df, src)
        if U is None:
            raise InputError(
                f"{src}: data-constrained fit: no n_unique_tokens or epochs column; "
                "accepted: runs.csv of `harness run`, or a CSV with one of them"
            )
        r = dc.fit_data_constrained(N, D, U, L)
        bs, nf = ([], 0)
        if n_bootstrap:
            bs, nf = dc.bootstrap_data_constrained(
                N, D, U, L, r, n_resamples=n_bootstrap, rng=_rng(seed, label + "data_constrained")
            )
        block = _fit_block(r, bs, nf, n_bootstrap)
        n_rep, n_exc = dc.repeat_counts(N, D, U, r.params)
        block.update(
            n_repeated=n_rep, n_excess_params=n_exc, source="Muennighoff et al. 2023, eq. 5-7"
        )
        for k in dc.undetermined(N, D, U, r.params):
            # No run's prediction depends on it: its value is wherever the optimizer left it
            # (kept, the law's predictions use it), and it has no interval.
            block["ci95"][k] = [float("nan"), float("nan")]
        return block

    if "data_constrained" in want:
        try:
            repeats = dc.has_repeats(df, str(df.attrs.get("path", "runs.csv")))
        except InputError as exc:
            if explicit:
                raise
            out["data_constrained"] = {"skipped": str(exc)}
        else:
            if repeats or explicit:
                optional("data_constrained", data_constrained)
    for name, col in (("lr_sweep", "lr"), ("batch_sweep", "batch_tokens")):
        if col in swept or (explicit and name in want):
            optional(
                name,
                lambda col=col, name=name: sweeps.sweep_block(
                    full, col, n_bootstrap=n_bootstrap, rng=_rng(seed, label + name)
                ),
            )
    return out


def fits_up_to_date(csv: str | os.PathLike[str]) -> bool:
    """fits.json beside ``csv`` was made from exactly these bytes, and figures/ is not empty.

    `harness run` uses this to skip refitting and replotting when no run was added.
    """
    csv = Path(csv)
    fits, figures = csv.parent / "fits.json", csv.parent / "figures"
    try:
        stored = json.loads(fits.read_text(encoding="utf-8"))["input"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    dsc = csv.parent / ds.DOWNSTREAM_CSV
    if dsc.is_file():  # a fine-tuning result added or changed since the fit
        try:
            doc = json.loads(fits.read_text(encoding="utf-8"))
            if doc["downstream"]["input"]["sha256"] != _sha256(dsc):
                return False
        except (OSError, ValueError, KeyError, TypeError):
            return False
    return stored == _sha256(csv) and figures.is_dir() and any(figures.iterdir())


def _group_keys(df: pd.DataFrame, group_by: Sequence[str], csv: Path) -> list[tuple[Any, ...]]:
    missing = [c for c in group_by if c not in df.columns]
    if missing:
        raise InputError(
            f"{csv}: --group-by column(s) {missing} not in the file; accepted: "
            f"{', '.join(c for c in df.columns if c != 'line')}"
        )
    for c in group_by:
        blank = df[c].isna() | (df[c].astype(str).str.strip() == "")
        if blank.any():
            raise InputError(
                f"{csv}: --group-by column {c!r} is blank at "
                f"{_lines(df.loc[blank, 'line'])}; accepted: a value in every row "
                "of the runs fitted"
            )
    return sorted({tuple(r) for r in df[list(group_by)].astype(str).itertuples(index=False)})


REFERENCE_FILE = "corpus.json"
"""Beside runs.csv for a synthetic corpus (`harness.synthetic`): its exact entropy rate."""


def reference_of(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The true loss floor of the corpus, from corpus.json in ``directory``, or None.

    Only a reference: fits never use it, and `reproduce_path` leaves it out of the comparison
    (a CSV copied without corpus.json still reproduces). None where the file is absent or has
    no floor in nats per token (a BPE run's tokens are not the source's symbols).

    Raises
    ------
    InputError
        corpus.json is not valid JSON.
    """
    path = Path(directory) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path}: not valid JSON ({exc}); accepted: the corpus.json "
            "`harness run` writes for a synthetic corpus, or no file"
        ) from None
    floor = doc.get("loss_floor_nats_per_token") if isinstance(doc, dict) else None
    if not isinstance(floor, (int, float)):
        return None
    return {
        "file": REFERENCE_FILE,
        "spec": doc.get("spec"),
        "entropy_rate_nats_per_token": float(floor),
        "entropy_rate_bits_per_byte": doc.get("entropy_rate_bits_per_byte"),
        "window_floor_nats_per_token": doc.get("window_floor_nats_per_token"),
        "seq_len": doc.get("seq_len"),
        "eval_floor_nats_per_token": doc.get("eval_floor_nats_per_token"),
        "eval_tokens": doc.get("eval_tokens"),
    }


def fits_dict(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    column_map: Mapping[str, str] | None = None,
    group_by: Sequence[str] | None = None,
    fits: Sequence[str] | None = None,
    isoflop_minimum: str = "parabola",
    target_accuracy: float | None = None,
    where: str | None = None,
) -> dict[str, Any]:
    """The fits.json object for a CSV (see `fit_path`), not yet written.

    When a downstream.csv (fine-tuning results) lies beside the CSV, the object also holds
    "downstream" (`downstream.fit_downstream`: accuracy from loss, chained from N and D, labels
    needed) with that file's own "input" record, and settings.target_accuracy.

    Raises
    ------
    InputError
        Bad input (see `load_runs` and `fit_frame`).
    """
    csv = resolve_csv(path)
    df = load_runs(csv, column_map)
    n_excluded = int(df.attrs.get("n_excluded", 0))
    if where:
        df = select_rows(df, where, csv)
    group_by = list(group_by or [])
    settings = {
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "column_map": dict(column_map or {}),
        "group_by": group_by,
        "fits": None if fits is None else list(fits),
        "isoflop_minimum": isoflop_minimum,
    }
    input_record = {
        "path": csv.name,
        "sha256": _sha256(csv),
        "n_points": len(df),
        "n_excluded": n_excluded,
    }
    if where:  # absent otherwise, so fits.json files written before --where are unchanged
        settings["where"] = where
        input_record["n_not_selected"] = int(df.attrs["n_not_selected"])
    doc: dict[str, Any] = {"schema": SCHEMA, "input": input_record, "settings": settings}
    ds_csv = csv.parent / ds.DOWNSTREAM_CSV
    # Read (and checked) before the fits: a bad downstream.csv is refused at once, not after
    # minutes of bootstrap.
    dsdf = ds.load_downstream(ds_csv) if ds_csv.is_file() and ds_csv != csv else None
    kw = dict(seed=seed, n_bootstrap=n_bootstrap, fits=fits, isoflop_minimum=isoflop_minimum)
    kept: dict[str, Any] = {}
    if not group_by:
        try:
            doc["fits"] = fit_frame(df, kept=kept, **kw)  # type: ignore[arg-type]
        except InputError as exc:  # named with the file, as every other input error is
            msg = str(exc) if str(exc).startswith(str(csv)) else f"{csv}: {exc}"
            if where:
                msg += f" (the {len(df)} runs --where {where!r} selects)"
            raise InputError(msg) from None
    else:
        groups = []
        for key in _group_keys(df, group_by, csv):
            sel = (df[group_by].astype(str) == pd.Series(key, index=group_by)).all(axis=1)
            sub = df[sel].reset_index(drop=True)
            label = "|".join(key)
            key_map = dict(zip(group_by, key, strict=True))
            try:
                body = fit_frame(sub, label=label, **kw)  # type: ignore[arg-type]
            except InputError as exc:
                raise InputError(f"{csv}: group {key_map}: {exc}") from None
            groups.append({"key": key_map, "n_points": len(sub), "fits": body})
        doc["groups"] = groups
    ref = reference_of(csv.parent)
    if ref is not None:  # synthetic corpus: the true entropy rate, for comparison with E
        doc["reference"] = ref
    if dsdf is not None:
        # A sibling of "fits", not inside it: grouped fits have no single "fits", and the
        # fine-tuning results are another file with their own hash. Step 1 is the Chinchilla
        # fit of "fits" (fitted on all the pretraining runs of this CSV when grouped).
        settings["target_accuracy"] = target_accuracy
        block = ds.fit_downstream(
            dsdf,
            df,
            seed=seed,
            n_bootstrap=n_bootstrap,
            target_accuracy=target_accuracy,
            step1_fit=kept.get("chinchilla"),
        )
        doc["downstream"] = {"input": ds.downstream_input(ds_csv, dsdf), **block}
    return _clean(doc)


def fit_path(
    path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    column_map: Mapping[str, str] | None = None,
    group_by: Sequence[str] | None = None,
    fits: Sequence[str] | None = None,
    isoflop_minimum: str = "parabola",
    target_accuracy: float | None = None,
    where: str | None = None,
) -> Path:
    """Fit the runs in PATH and write fits.json atomically beside the CSV (or at `out`).

    Parameters
    ----------
    path : path-like
        runs.csv, another CSV, or a directory holding runs.csv.
    out : path-like, optional
        Where to write; default ``<csv dir>/fits.json``.
    seed : int
        Bootstrap seed.
    n_bootstrap : int
        Resamples per bootstrap (>= 0).
    column_map : mapping, optional
        {canonical column: the CSV's column}.
    group_by : sequence of str, optional
        Fit each group of these columns separately (fits.json then has "groups").
    fits : sequence of str, optional
        Names from ALL_FITS; default all the data allow.
    isoflop_minimum : {"parabola", "akima"}
        Minimum finder of approach 2.
    target_accuracy : float, optional
        Target of the labels-needed analysis of a downstream.csv beside the CSV.
    where : str, optional
        Fit only the runs this pandas expression selects (`select_rows`); recorded in
        settings, so `reproduce` refits the same rows.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    InputError
        Bad input.
    """
    csv = resolve_csv(path)
    doc = fits_dict(
        csv,
        seed=seed,
        n_bootstrap=n_bootstrap,
        column_map=column_map,
        group_by=group_by,
        fits=fits,
        isoflop_minimum=isoflop_minimum,
        target_accuracy=target_accuracy,
        where=where,
    )
    target = Path(out) if out is not None else csv.parent / "fits.json"
    return atomic_write_json(target, doc)


def _summarize_fits(fits: Mapping[str, Any], indent: str = "") -> list[str]:
    lines = []
    for name in ALL_FITS:
        if name not in fits:
            continue
        f = fits[name]
        if "skipped" in f:
            lines.append(f"{indent}{name:<16} skipped: {f['skipped']}")
            continue
        if "params" in f and name != "heldout":
            ci = f.get("ci95", {})
            parts = []
            for k, v in f["params"].items():
                c = ci.get(k)
                parts.append(f"{k}={_fmt(v)}" + (f" [{_fmt(c[0])}, {_fmt(c[1])}]" if c else ""))
            flag = "" if f.get("converged", True) else "  NOT CONVERGED"
            flag += "  ON GRID EDGE: " + ",".join(f["edge_params"]) if f.get("on_grid_edge") else ""
            lines.append(f"{indent}{name:<16} " + "  ".join(parts) + flag)
            if f.get("determined") is False:
                lines.append(
                    f"{indent}{'':<16} NOT DETERMINED by these data: "
                    f"{f.get('undetermined_reason', '')}"
                )
            elif f.get("undetermined") and name != "data_constrained":
                lines.append(
                    f"{indent}{'':<16} undetermined: "
                    + "; ".join(f"{k} {why}" for k, why in f["undetermined"].items())
                )
            if name == "data_constrained":
                und = ", ".join(f["undetermined"]) or "none"
                lines.append(
                    f"{indent}{'':<16} {f['n_repeated']} runs repeat data, "
                    f"{f['n_excess_params']} have N > N_opt(U); undetermined: {und}"
                )
        elif name in ("isoflop", "approach1"):
            ci = f.get("ci95", {})
            a = f"a={_fmt(f['a'])}" + (
                f" [{_fmt(ci['a'][0])}, {_fmt(ci['a'][1])}]" if "a" in ci else ""
            )
            lines.append(
                f"{indent}{name:<16} N_opt ∝ C^a: {a}  D_opt ∝ C^b: b={_fmt(f['b'])}  "
                f"({len(f['budgets'])} budgets)"
            )
        elif name == "compute_optimal":
            tpp = f["tokens_per_param"]
            lines.append(
                f"{indent}{name:<16} a={_fmt(f['a'])} b={_fmt(f['b'])}  tokens/param: "
                + ", ".join(f"{k}: {_fmt(v)}" for k, v in tpp.items())
            )
        elif name in ("lr_sweep", "batch_sweep"):
            lines.append(f"{indent}{name:<16} " + sweeps.summary_line(f))
        elif name == "heldout":
            lines.append(
                f"{indent}{name:<16} ARE mean={_fmt(f['are_mean'])} "
                f"max={_fmt(f['are_max'])} ({f['n_train']} train, {f['n_test']} test)"
            )
    return lines


def summarize(fits: Mapping[str, Any]) -> str:
    """A short human-readable table of a fits.json object (or of its "fits" part).

    Parameters
    ----------
    fits : mapping
        The whole fits.json object, or its "fits" mapping.

    Returns
    -------
    str
    """
    lines = []
    if "input" in fits:
        inp = fits["input"]
        lines.append(
            f"{inp['path']}: {inp['n_points']} runs used, {inp['n_excluded']} excluded "
            "(status not 'done')"
        )
        where = fits.get("settings", {}).get("where")
        if where:
            lines[-1] += f", {inp['n_not_selected']} not selected by --where {where!r}"
    if "groups" in fits:
        for g in fits["groups"]:
            lines.append(
                ", ".join(f"{k}={v}" for k, v in g["key"].items()) + f" ({g['n_points']} runs)"
            )
            lines += _summarize_fits(g["fits"], "  ")
    else:
        lines += _summarize_fits(fits.get("fits", fits))
    if "downstream" in fits:
        lines += ds.summarize_downstream(fits["downstream"])
    if "reference" in fits:
        lines.append(_reference_line(fits["reference"], fits.get("fits", {})))
    return "\n".join(lines)


def _reference_line(ref: Mapping[str, Any], fits: Mapping[str, Any]) -> str:
    h = ref["entropy_rate_nats_per_token"]
    line = f"true entropy rate H = {h:.4f} nats/token ({ref.get('file')})"
    if ref.get("window_floor_nats_per_token") is not None:
        line += f", floor at seq_len {ref.get('seq_len')}: {ref['window_floor_nats_per_token']:.4f}"
    if ref.get("eval_floor_nats_per_token") is not None:  # the sampled evaluation tokens' floor
        line += (
            f", on the {ref.get('eval_tokens')} evaluation tokens: "
            f"{ref['eval_floor_nats_per_token']:.4f}"
        )
    chin = fits.get("chinchilla", {})
    e = chin.get("params", {}).get("E")
    if e is not None:
        ci = chin.get("ci95", {}).get("E")
        line += f"; chinchilla E - H = {e - h:+.4f}"
        if ci and None not in ci:
            line += f" [{ci[0] - h:+.4f}, {ci[1] - h:+.4f}]"
    return line


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and obj and isinstance(obj[0], Mapping) and "key" in obj[0]:
        for g in obj:
            label = ",".join(f"{k}={v}" for k, v in sorted(g["key"].items()))
            out.update(_leaves(g, f"{prefix}[{label}]"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(_leaves(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


def plot_path(
    path: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    column_map: Mapping[str, str] | None = None,
    group_by: Sequence[str] | None = None,
) -> list[Path]:
    """Write the standard figures (PNG and SVG) for the runs in PATH.

    Uses fits.json beside the CSV when present (its fitted laws are drawn); otherwise fits
    the Chinchilla law without bootstrap. Files go to ``<csv dir>/figures`` or `out_dir`.
    When a ``runs/`` directory lies beside the CSV and the CSV has a run_id column,
    learning_curves.png/.svg is drawn from the runs' metrics.csv files as well. When a
    downstream.csv lies beside the CSV, the downstream figures (accuracy against loss,
    compute and labelled-set size) are drawn too.

    Parameters
    ----------
    path : path-like
        runs.csv, another CSV, or a directory holding runs.csv.
    out_dir : path-like, optional
        Where to write.
    column_map : mapping, optional
        {canonical column: the CSV's column}.
    group_by : sequence of str, optional
        One set of figures per group.

    Returns
    -------
    list of pathlib.Path
        Files written, sorted.

    Raises
    ------
    InputError
        Bad input.
    """
    csv = resolve_csv(path)
    df = load_runs(csv, column_map)
    stored: dict[str, Any] = {}
    fj = csv.parent / "fits.json"
    if fj.is_file():
        try:
            stored = json.loads(fj.read_text())
        except json.JSONDecodeError:
            stored = {}
        if not group_by:
            group_by = stored.get("settings", {}).get("group_by") or None
    target = Path(out_dir) if out_dir is not None else csv.parent / "figures"
    check_writable(target, folder=True, what="figures folder")
    runs_dir = csv.parent / "runs"
    # Reproduce replots in a temp dir without corpus.json: the refit's "reference" carries it.
    ref = stored.get("reference") or reference_of(csv.parent) or {}
    floor = ref.get("entropy_rate_nats_per_token")
    # Every figure is drawn into a staging folder first and moved into place only when all of
    # them are drawn: bad input found half-way (a run's metrics.csv, downstream.csv) leaves the
    # figures folder as it was. (Figures a later run no longer draws are not removed.)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        drawn = [
            f.relative_to(staging)
            for f in dict.fromkeys(
                _draw_figures(df, stored, csv, staging, group_by, runs_dir, floor)
            )
        ]
        for f in drawn:  # relative paths: a group value with "/" draws into a subfolder
            (target / f).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / f, target / f)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(target / f for f in drawn)


def _draw_figures(
    df: pd.DataFrame,
    stored: Mapping[str, Any],
    csv: Path,
    target: Path,
    group_by: Sequence[str] | None,
    runs_dir: Path,
    floor: float | None,
) -> list[Path]:
    """`plot_path`'s figures, written into ``target``; the files written."""
    from harness.analysis import plots

    written: list[Path] = []
    if group_by:
        by_key = {
            "|".join(str(g["key"].get(c)) for c in group_by): g["fits"]
            for g in stored.get("groups", [])
        }
        for key in _group_keys(df, group_by, csv):
            sel = (df[list(group_by)].astype(str) == pd.Series(key, index=group_by)).all(axis=1)
            sub = df[sel].reset_index(drop=True)
            label = "|".join(key)
            written += plots.write_standard_figures(
                sub,
                by_key.get(label),
                target,
                suffix="_" + "_".join(key),
                runs_dir=runs_dir,
                floor=floor,
            )
    else:
        written += plots.write_standard_figures(
            df, stored.get("fits"), target, runs_dir=runs_dir, floor=floor
        )
    if (csv.parent / ds.DOWNSTREAM_CSV).is_file() and csv.name != ds.DOWNSTREAM_CSV:
        from harness.analysis import downstream_plots

        dsdf = ds.load_downstream(csv.parent / ds.DOWNSTREAM_CSV)
        block = stored.get("downstream")
        if block is None:  # not fitted yet: fit without intervals for the figures
            block = _clean(ds.fit_downstream(dsdf, df, n_bootstrap=0))
        written += downstream_plots.write_downstream_figures(dsdf, block, target)
    return written
