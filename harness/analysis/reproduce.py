"""`harness reproduce`: refit from the stored CSV alone and decide whether the stored fits.json
holds, on what matters scientifically.

Floating-point results differ in their last bits between CPUs (numpy picks SIMD kernels at run
time) and library versions, and ill-conditioned fits amplify those bits. So values are not
compared bit for bit but each by what it is (`compare`):

- Point estimates (a law's parameters and values derived from them): within
  ``rtol |value|`` plus the numerical precision of the optimum on each side
  (`identify.precision`: how far the optimum can move while the objective changes by less than
  a relative 1e-9).
- Interval ends: within 4 standard errors of the difference of two Monte Carlo estimates of
  the same percentile, sqrt(se_stored^2 + se_refit^2), each se by order statistics
  (`identify.percentile_se`); for a block stored without them, se ~ 0.68 (hi - lo) / sqrt(n),
  the normal approximation of a percentile's error at n resamples.
- A quantity that either side calls undetermined (start-grid edge, a flat direction, an
  interval over decades, a law whose bootstrap mostly fails) is not compared by value; both
  sides must call it undetermined, and the report says so.
- Solver messages, failure counts, convergence flags, precisions and Monte Carlo errors are
  shown when they differ but never fail a reproduction.
- Everything else (the input's sha256, settings, counts, budgets) must be equal; numbers within
  ``rtol``.

Figures are redrawn from the CSV and the refit; the report counts those byte-identical to the
stored ones, which needs the same matplotlib version and fonts besides the same numbers. They
never decide the outcome.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis import identify
from harness.analysis.common import ci95, fmt, inside, json_num, read_fits_json
from harness.analysis.drawing import plot_path
from harness.analysis.fitting import ALL_FITS, SCHEMA, fits_dict, stored_settings
from harness.analysis.io import resolve_csv
from harness.analysis.predict import load_law, predict
from harness.analysis.registry import COMPANIONS
from harness.analysis.samples import read_samples, samples_path, write_samples
from harness.atomic import atomic_write_json
from harness.errors import InputError

__all__ = ["MC_SIGMAS", "Comparison", "compare", "reproduce_path"]

MC_SIGMAS = 4.0
"""Interval ends agree within this many standard errors of their Monte Carlo difference."""
_INFO = frozenset(
    {
        "message",
        "n_bootstrap_failed",
        "converged",
        "edge_params",
        "on_grid_edge",
        "ci95_mc_se",
        "precision",
        "residual_sd_log_precision",
        "undetermined_reason",
        "grad_max",
        "criterion",  # the task chains' held-out errors: how a form was chosen, not a result
    }
)
_ADDED = frozenset(
    {
        "residual_sd_log",
        "residual_sd_log_precision",
        "dof",
        "fitted_range",
        "extrapolation_decades",
        "n_bootstrap_failed",
    }
)
"""Fields a law's block has had since 2026-12-07: a fits.json written before lacks them, and
that is no difference (shown as informational)."""
_ADDED_PATHS = (re.compile(r"^tasks\.tasks\.[^.]+\.heldout$"),)
"""Objects added since 2026-12-07 outside a law's block (a task chain's held-out check): a
fits.json written before lacks them, and that is no difference (shown as informational)."""
_MISSING = "<missing>"


@dataclass
class Comparison:
    """The outcome of `compare`: every stored leaf lands in exactly one list or count."""

    differ: list[tuple[str, Any, Any, str]] = field(default_factory=list)
    """(value, stored, refit, tolerance or reason): these fail the reproduction."""
    undetermined: list[str] = field(default_factory=list)
    """Values undetermined on both sides (compared as such)."""
    informational: list[tuple[str, Any, Any]] = field(default_factory=list)
    """Values that differ but never fail: solver messages, failure counts, precisions."""
    n_agree: int = 0
    """Values that agree within their tolerance."""

    @property
    def ok(self) -> bool:
        return not self.differ

    @property
    def n_compared(self) -> int:
        return self.n_agree + len(self.differ) + len(self.undetermined) + len(self.informational)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _get(obj: Any, *keys: Any) -> Any:
    """obj[k1][k2]...; _MISSING where a key is absent (null is a value, not an absence)."""
    for k in keys:
        if isinstance(obj, Mapping) and k in obj:
            obj = obj[k]
        elif isinstance(obj, list) and isinstance(k, int) and 0 <= k < len(obj):
            obj = obj[k]
        else:
            return _MISSING
    return obj


def _num_or(x: Any, default: float) -> float:
    return float(x) if _is_num(x) and math.isfinite(x) else default


@dataclass(frozen=True)
class _Block:
    """What the comparison of one law's block needs beyond its values. The refit (``r``) is
    computed now from the CSV and is trusted; the stored side is data from elsewhere: its
    precisions and Monte Carlo errors never widen a tolerance, and what it calls undetermined
    must match the refit."""

    r: Mapping[str, Any]
    skip: frozenset[str]
    """Quantities compared as undetermined (undetermined on both sides, or a flip within
    Monte Carlo error)."""
    point_skip: frozenset[str]
    """Quantities whose point value is not compared: undetermined by the optimum itself (grid
    edge, flat direction, ridge), not only by the width of their interval."""
    law_undetermined: bool


def _undetermined_of(side: Mapping[str, Any], path: str) -> dict[str, str]:
    u = side.get("undetermined") or {}
    if isinstance(u, list) and all(isinstance(k, str) for k in u):  # older data-constrained
        return dict.fromkeys(u, "no run's prediction depends on it")
    if not isinstance(u, Mapping) or not all(isinstance(k, str) for k in u):
        raise InputError(
            f"{path}.undetermined = {str(u)[:80]!r}; accepted: an object "
            "{quantity: reason} as `harness fit` writes"
        )
    return {k: str(v) for k, v in u.items()}


def _leaf_paths(obj: Any, keys: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, Mapping):
        return [p for k, v in obj.items() for p in _leaf_paths(v, (*keys, k))]
    if isinstance(obj, list) and not (obj and isinstance(obj[0], Mapping)):
        return [(*keys, i) for i in range(len(obj))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _leaf_paths(v, (*keys, i))]
    return [keys]


def _label(path: str, keys: tuple[Any, ...]) -> str:
    out = path
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def compare(stored: Mapping[str, Any], new: Mapping[str, Any], *, rtol: float = 1e-6) -> Comparison:
    """Compare two fits.json objects by the rules of the module docstring.

    Parameters
    ----------
    stored, new : mapping
        The stored fits.json and the refit (without "reference").
    rtol : float
        Relative tolerance of point estimates and other numbers.

    Returns
    -------
    Comparison
    """
    out = Comparison()
    settings = stored.get("settings")
    if isinstance(settings, Mapping) and "n_convention" not in settings:
        # Written before the setting existed: N was the non-embedding count, its default.
        stored = {**stored, "settings": {**settings, "n_convention": "non_embedding"}}
    n_boot = _get(new, "settings", "n_bootstrap")
    _walk(stored, new, "", None, out, rtol, _num_or(n_boot, 0.0))
    return out


def _walk(
    s: Any, r: Any, path: str, block: _Block | None, out: Comparison, rtol: float, n_boot: float
) -> None:
    if isinstance(s, Mapping) and isinstance(r, Mapping):
        if block is None and ("params" in s or "ci95" in s or "params" in r or "ci95" in r):
            _walk_block(s, r, path, out, rtol, n_boot)
            return
        for k in sorted(set(s) | set(r), key=str):
            here = f"{path}.{k}" if path else str(k)
            if k not in s and any(p.match(here) for p in _ADDED_PATHS):
                out.informational.append((here, None, "added since this fits.json was written"))
                continue
            _walk(
                s.get(k, _MISSING),
                r.get(k, _MISSING),
                f"{path}.{k}" if path else str(k),
                block,
                out,
                rtol,
                n_boot,
            )
        return
    if (
        isinstance(s, list)
        and isinstance(r, list)
        and s
        and isinstance(s[0], Mapping)
        and "key" in s[0]
    ):
        # Groups of a grouped fit, matched by their key, not their position.
        def by_key(groups: list[Any]) -> dict[str, Any]:
            out_: dict[str, Any] = {}
            for g in groups:
                key = g.get("key") if isinstance(g, Mapping) else None
                if not isinstance(key, Mapping):
                    raise InputError(f"{path}: a group without a key object ({str(g)[:60]!r})")
                label = ",".join(f"{k}={v}" for k, v in sorted(key.items()))
                if label in out_:
                    raise InputError(f"{path}: group {label} appears twice")
                out_[label] = g
            return out_

        a, b = by_key(s), by_key(r)
        for k in sorted(set(a) | set(b)):
            _walk(a.get(k, _MISSING), b.get(k, _MISSING), f"{path}[{k}]", block, out, rtol, n_boot)
        return
    if isinstance(s, list) and isinstance(r, list) and len(s) == len(r):
        for i, (x, y) in enumerate(zip(s, r, strict=True)):
            _walk(x, y, f"{path}[{i}]", block, out, rtol, n_boot)
        return
    _leaf(s, r, path, rtol * abs(r) if _is_num(r) else 0.0, out)


def _leaf(s: Any, r: Any, path: str, tol: float, out: Comparison, why: str = "") -> None:
    if isinstance(s, bool) or isinstance(r, bool):  # True is not 1
        if s is r:
            out.n_agree += 1
        else:
            out.differ.append((path, s, r, "must be equal"))
        return
    if _is_num(s) and _is_num(r):
        if abs(s - r) <= tol + 1e-300:
            out.n_agree += 1
        else:
            out.differ.append((path, s, r, why or f"tolerance {tol:.3g}"))
    elif s == r:
        out.n_agree += 1
    else:
        out.differ.append((path, s, r, why or "must be equal"))


def _walk_block(
    s: Mapping[str, Any],
    r: Mapping[str, Any],
    path: str,
    out: Comparison,
    rtol: float,
    n_boot: float,
) -> None:
    us, ur = _undetermined_of(s, path), _undetermined_of(r, path)
    flips = sorted(set(us) ^ set(ur))
    # A law both sides call undetermined has intervals from a bootstrap that mostly failed:
    # which of its parameters those intervals also flag is no result (results/gadre2024's
    # overtraining: 567 of 1000 failed, b's interval 3.7 decades on AVX2, under 2 on AVX-512).
    und_both = s.get("determined", True) is False and r.get("determined", True) is False
    accepted = {k for k in flips if und_both or _interval_flip(r, k, us.get(k) or ur.get(k, ""))}
    if set(flips) - accepted:
        out.differ.append(
            (
                f"{path}.undetermined",
                sorted(us),
                sorted(ur),
                "the same quantities must be undetermined on both sides",
            )
        )
    elif flips:  # intervals at the decades threshold, within their Monte Carlo error
        out.informational.append((f"{path}.undetermined", sorted(us), sorted(ur)))
    both = set(us) & set(ur)
    skip = frozenset(both | accepted)
    point_skip = frozenset(
        k for k in skip if not ur.get(k, us.get(k, "")).startswith("95% interval")
    )
    law_und = r.get("determined", True) is False
    if s.get("determined", True) != r.get("determined", True):
        if _share_flip(r):  # the refit's failure share is within MC error of the threshold
            out.informational.append(
                (f"{path}.determined", s.get("determined"), r.get("determined"))
            )
            law_und = True
        else:
            out.differ.append(
                (
                    f"{path}.determined",
                    s.get("determined"),
                    r.get("determined"),
                    "both sides must call the law determined or not",
                )
            )
    b = _Block(r, skip, point_skip, law_und)
    law_und_both = law_und and s.get("determined", True) is False
    for k in sorted(set(s) | set(r), key=str):
        sv, rv = s.get(k, _MISSING), r.get(k, _MISSING)
        here = f"{path}.{k}"
        if sv is _MISSING and k in _ADDED:
            out.informational.append((here, None, "added since this fits.json was written"))
            continue
        if k in ("undetermined", "determined"):
            if k == "undetermined" and not flips and us != ur:  # the same keys, other numbers
                out.informational.append((here, sv, rv))
            else:
                out.n_agree += 1
            continue
        if k in _INFO:
            for keys in _leaf_paths(sv if sv is not _MISSING else rv):
                x, y = _get(sv, *keys), _get(rv, *keys)
                if x == y or (_is_num(x) and _is_num(y) and math.isclose(x, y, rel_tol=rtol)):
                    out.n_agree += 1
                else:
                    out.informational.append((_label(here, keys), x, y))
            continue
        if k in ("objective", "residual_sd_log"):  # the scatter is the objective's kin
            # Always compared: the minimum is determined even where the optimum is not (a
            # ridge), but an optimizer that stops on a ridge stops at other heights, so a looser
            # tolerance then. Plus 1e-18: a law through every point ends at round-off size.
            # The scatter (a sum of squares the Huber objective does not fix) moves along a
            # ridge by its own precision: within it, or where that is infinite, no difference.
            loose = bool(ur) or law_und
            tol = (1e-3 if loose else max(rtol, identify.PRECISION_RTOL_F)) * abs(
                _num_or(rv, 0.0)
            ) + 1e-18
            if k == "residual_sd_log":
                sd_prec = r.get("residual_sd_log_precision", 0.0)
                if sd_prec is None or not _is_num(sd_prec) or not math.isfinite(sd_prec):
                    out.informational.append((here, sv, rv))
                    continue
                tol += 2.0 * sd_prec
            _leaf(sv, rv, here, tol, out)
            continue
        if k == "ci95":
            _walk_intervals(sv, rv, here, b, out, rtol, n_boot)
            continue
        inner = isinstance(sv, Mapping) and k == "params"
        names = (
            sorted(set(sv) | set(rv if isinstance(rv, Mapping) else {}), key=str) if inner else [k]
        )
        for name in names:
            x = sv.get(name, _MISSING) if inner else sv
            y = (
                rv.get(name, _MISSING)
                if inner and isinstance(rv, Mapping)
                else (_MISSING if inner else rv)
            )
            label = f"{here}.{name}" if inner else here
            # A law the data do not determine (its bootstrap failed too often) is compared as
            # such on both sides, its point values not by value: with about as many runs as
            # parameters its optimum moves with the float kernels (results/shakespeare_neox).
            if name in b.point_skip or (inner and b.law_undetermined and law_und_both):
                out.undetermined.append(label)
                continue
            if isinstance(x, Mapping) and isinstance(y, Mapping):
                for keys in sorted(set(_leaf_paths(x)) | set(_leaf_paths(y)), key=str):
                    xs, ys = _get(x, *keys), _get(y, *keys)
                    tol = rtol * abs(_num_or(ys, 0.0)) + _precision(r, name, keys)
                    _leaf(xs, ys, _label(label, keys), tol, out)
            elif isinstance(x, (Mapping, list)) or isinstance(y, (Mapping, list)):
                _walk(x, y, label, b, out, rtol, n_boot)
            else:
                tol = rtol * abs(_num_or(y, 0.0)) + _precision(r, name, ())
                _leaf(x, y, label, tol, out)


def _share_flip(r: Mapping[str, Any]) -> bool:
    """Whether the refit's bootstrap failure count lies within MC_SIGMAS binomial standard
    errors of the threshold share (`identify.FAILED_SHARE_MAX`): then which side of it a
    count falls on is Monte Carlo noise."""
    q = identify.FAILED_SHARE_MAX
    n, k = _num_or(r.get("n_bootstrap"), 0.0), _num_or(r.get("n_bootstrap_failed"), -1)
    return n > 0 and k >= 0 and abs(k - q * n) <= MC_SIGMAS * math.sqrt(n * q * (1 - q))


def _interval_flip(r: Mapping[str, Any], name: str, reason: str) -> bool:
    """Whether ``name`` is undetermined on one side only by the interval rule, with the refit's
    interval at the decades threshold within its Monte Carlo error: narrowed by MC_SIGMAS
    standard errors it is determined, widened it is not."""
    if not reason.startswith("95% interval"):
        return False
    ci = _get(r.get("ci95"), name)
    se = _get(r.get("ci95_mc_se"), name)
    if not (
        isinstance(ci, list)
        and len(ci) == 2
        and all(_is_num(v) for v in ci)
        and isinstance(se, list)
        and len(se) == 2
    ):
        return False
    s_lo, s_hi = (MC_SIGMAS * _num_or(v, 0.0) for v in se)
    wide = [ci[0] - s_lo, ci[1] + s_hi]
    narrow = [ci[0] + s_lo, ci[1] - s_hi]
    flagged = bool(identify.undetermined_by_interval({name: wide})) or wide[0] <= 0 < ci[0]
    # Narrowed past itself (Monte Carlo errors wider than the interval), it spans nothing.
    clear = narrow[0] >= narrow[1] or not identify.undetermined_by_interval({name: narrow})
    return flagged and clear


def _precision(r: Mapping[str, Any], name: str, keys: tuple[Any, ...]) -> float:
    """Twice the refit's precision of a quantity (each side may stop anywhere within it)."""
    return 2.0 * _num_or(_get(r.get("precision"), name, *keys), 0.0)


def _walk_intervals(
    sv: Any, rv: Any, path: str, b: _Block, out: Comparison, rtol: float, n_boot: float
) -> None:
    """Interval ends of one block: within MC_SIGMAS standard errors of the difference of two
    estimates, sqrt(2) se, se the refit's (order statistics; else the normal approximation)."""
    if isinstance(sv, list) and isinstance(rv, list):  # one interval, e.g. a point's
        sv, rv = {"": sv}, {"": rv}
    if not isinstance(sv, Mapping) or not isinstance(rv, Mapping):
        _leaf(sv, rv, path, 0.0, out)
        return
    n_boot = _num_or(b.r.get("n_bootstrap"), 0.0) or n_boot
    for name in sorted(set(sv) | set(rv), key=str):
        x, y = sv.get(name, _MISSING), rv.get(name, _MISSING)
        label = f"{path}.{name}" if name else path
        if name in b.skip or b.law_undetermined:
            for keys in _leaf_paths(x if x is not _MISSING else y):
                out.undetermined.append(_label(label, keys))
            continue
        for keys in sorted(set(_leaf_paths(x)) | set(_leaf_paths(y)), key=str):
            xs, ys = _get(x, *keys), _get(y, *keys)
            here = _label(label, keys)
            if not (_is_num(xs) and _is_num(ys)):
                _leaf(xs, ys, here, 0.0, out)
                continue
            se = _num_or(_get(b.r.get("ci95_mc_se"), name, *keys), math.nan)
            how = "order statistics"
            if math.isnan(se):  # no errors stored with the refit: the normal approximation
                lo_hi = _get(y, *keys[:-1]) if keys else y
                width = (
                    abs(lo_hi[1] - lo_hi[0])
                    if isinstance(lo_hi, list)
                    and len(lo_hi) == 2
                    and all(_is_num(v) for v in lo_hi)
                    else 0.0
                )
                se = 0.68 * width / math.sqrt(n_boot) if n_boot else 0.0
                how = "normal approx."
            tol = MC_SIGMAS * math.sqrt(2.0) * se + rtol * abs(ys)
            _leaf(
                xs, ys, here, tol, out, why=f"{MC_SIGMAS:g} MC standard errors = {tol:.3g} ({how})"
            )


# ---------------------------------------------------------------------------------------------
# reproduce PATH


def _stored(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any], Path]:
    """(fits.json path, its content, the CSV it was made from) for a reproduce PATH."""
    p = Path(path)
    if p.is_dir():
        fj = p / "fits.json"
    elif p.name == "fits.json":
        fj = p
    else:
        fj = p.parent / "fits.json"
    if not fj.is_file():
        raise InputError(
            f"{fj}: no stored fits.json to compare with; accepted: a directory or "
            "CSV with fits.json beside it (run `harness fit` first)"
        )
    doc = read_fits_json(fj, SCHEMA)
    source = doc.get("input")
    name = source.get("path", "runs.csv") if isinstance(source, dict) else None
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise InputError(f"{fj}: input.path = {name!r}; accepted: the CSV's file name")
    csv = fj.parent / name
    if p.is_file() and p.name != "fits.json":
        csv = p
    return fj, doc, resolve_csv(csv)


def reproduce_path(
    path: str | os.PathLike[str], *, rtol: float = 1e-6, replot: bool = True
) -> tuple[bool, str]:
    """Refit and replot from the CSV alone (in a temp dir) and compare with the stored fits.json.

    The stored files are never overwritten. A ``published.json`` beside fits.json (keys: group
    labels "v1|v2|..." or "all"; values {"a": number}) adds the published exponents to the table.

    Parameters
    ----------
    path : path-like
        The results directory, its CSV, or its fits.json.
    rtol : float
        Relative tolerance of point estimates (see `compare`).
    replot : bool
        Also redraw the figures (in the temp dir) and count those byte-identical to stored ones.

    Returns
    -------
    (bool, str)
        Whether the stored fits hold (`compare`), and a printable report.

    Raises
    ------
    InputError
        No stored fits.json, or bad input.
    """
    fj, stored, csv = _stored(path)
    s = stored_settings(fj, stored)
    refit_samples: dict[str, Any] = {}
    # A fits.json made by default (no --fits) is compared on the laws it has: a law added to
    # the registry since is not refitted (the curve laws cost the most of a refit).
    newer: list[str] = []
    omit = _newer_laws(stored) if s.get("fits") is None else []
    new = fits_dict(
        csv,
        samples=refit_samples,
        seed=s.get("seed", 0),
        n_bootstrap=s.get("n_bootstrap", 1000),
        column_map=s.get("column_map") or None,
        group_by=s.get("group_by") or None,
        fits=s.get("fits"),
        isoflop_minimum=s.get("isoflop_minimum", "parabola"),
        target_accuracy=s.get("target_accuracy"),
        where=s.get("where"),
        n_convention=s.get("n_convention", "non_embedding"),
        # Absent: nothing was subsampled, or the file predates the cap; either way, every row.
        max_rows=s.get("max_rows"),
        omit=omit,
        omitted=newer,
    )
    if "reference" in stored and "reference" not in new:
        # The corpus' entropy rate is recorded, not refitted: a CSV copied without corpus.json
        # keeps the stored value, so the figures redraw the same H line.
        new = {**new, "reference": stored["reference"]}
    figs: list[Path] = []
    same_figs = n_stored = 0
    with tempfile.TemporaryDirectory(prefix="harness-reproduce-") as tmp:
        tmpcsv = Path(tmp) / csv.name
        tmpcsv.write_bytes(csv.read_bytes())
        for companion in COMPANIONS:  # fine-tunes and task scores: inputs of the figures too
            table = csv.parent / companion.file
            if table.is_file() and table != csv:
                (Path(tmp) / companion.file).write_bytes(table.read_bytes())
        atomic_write_json(Path(tmp) / "fits.json", new)
        # The refit's own bootstrap samples: the figures' bands are drawn from them.
        write_samples(samples_path(Path(tmp) / "fits.json"), refit_samples)
        if replot:
            figs = plot_path(
                tmpcsv,
                out_dir=Path(tmp) / "figures",
                column_map=s.get("column_map") or None,
                group_by=s.get("group_by"),
            )
            stored_figs = [fj.parent / "figures" / f.name for f in figs]
            n_stored = sum(f.is_file() for f in stored_figs)
            same_figs = sum(
                g.is_file() and g.read_bytes() == f.read_bytes()
                for f, g in zip(figs, stored_figs, strict=True)
            )
    # The synthetic corpus' entropy rate is a reference beside the CSV, not a result of it.
    refit = {k: v for k, v in new.items() if k != "reference"}
    try:
        cmp = compare({k: v for k, v in stored.items() if k != "reference"}, refit, rtol=rtol)
    except InputError as exc:
        raise InputError(f"{fj}: {exc}") from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a mangled stored file
        raise InputError(
            f"{fj}: not laid out as `harness fit` writes it ({type(exc).__name__}: "
            f"{exc}); accepted: a fits.json of schema {SCHEMA}"
        ) from None
    sample_problems, sample_note = check_samples(fj, stored)
    lines = [
        f"reproduce {csv}: {cmp.n_compared} stored values against a refit from the CSV: "
        f"{cmp.n_agree} agree, {len(cmp.undetermined)} undetermined on both sides, "
        f"{len(cmp.informational)} informational differences, {len(cmp.differ)} differ"
    ]
    if cmp.differ:
        # What the refit read first (a changed CSV, other settings): it explains the rest.
        first = sorted(cmp.differ, key=lambda d: not d[0].startswith(("input.", "settings.")))
        w = max(len(k) for k, *_ in first[:60])
        lines.append(f"{'value':<{w}}  {'stored':>14}  {'refit':>14}  rule")
        for k, x, y, why in first[:60]:
            lines.append(f"{k:<{w}}  {fmt(x):>14}  {fmt(y):>14}  {why}")
        if len(cmp.differ) > 60:
            lines.append(f"... and {len(cmp.differ) - 60} more")
    validation_problems: list[str] = []
    vj = fj.parent / VALIDATION_JSON
    if vj.is_file():
        try:
            validation = json.loads(vj.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(
                f"{vj}: not valid JSON ({exc}); accepted: the file `harness validate` writes"
            ) from None
        validation_problems = check_validation(fj, validation)
        lines.append(
            f"validation ({VALIDATION_JSON}): measured {fmt(validation.get('measured_loss'))} "
            f"against {fmt(validation.get('predicted_loss'))} "
            f"[{', '.join(fmt(v) for v in validation.get('predicted_loss_ci95') or [])}]"
            + (": prediction recomputed, the same" if not validation_problems else ":")
        )
        lines += [f"  {p}" for p in validation_problems]
    if newer:
        lines.append(
            f"{fj.name} predates the law(s) {', '.join(newer)}: not refitted, the stored file "
            "cannot be compared on them (`harness fit` adds them)"
        )
    if sample_problems:
        lines.append(
            f"{samples_path(fj).name} does not hold the samples fits.json's intervals were "
            f"taken from ({len(sample_problems)} problems):"
        )
        lines += [f"  {p}" for p in sample_problems[:20]]
    if sample_note:
        lines.append(sample_note)
    if _predates_fields(stored):
        lines.append(
            f"{fj} predates the fields reproduce compares by (precision, ci95_mc_se, "
            "undetermined), so its values were compared without them: `harness fit` "
            "rewrites it with them, from the same CSV and settings"
        )
    if cmp.undetermined:
        laws = sorted({_law_of(k) for k in cmp.undetermined})
        lines.append(
            f"undetermined on both sides (not compared by value): "
            f"{len(cmp.undetermined)} values of {', '.join(laws[:8])}"
            + (f" and {len(laws) - 8} more" if len(laws) > 8 else "")
        )
    if cmp.informational:
        # Messages, counts and flags in full; precisions, Monte Carlo errors and the numbers
        # inside reasons are estimates of an estimate's error: counted only.
        minor = (".precision", ".ci95_mc_se", ".undetermined")
        shown = [i for i in cmp.informational if not any(m in i[0] for m in minor)]
        lines.append(
            f"informational (never fail): {len(shown)} solver messages, failure counts "
            f"or flags, {len(cmp.informational) - len(shown)} precisions, Monte Carlo "
            "errors or reasons differ"
        )
        for k, x, y in shown[:20]:
            lines.append(f"  {k}: {fmt(x)} -> {fmt(y)}")
        if len(shown) > 20:
            lines.append(f"  ... and {len(shown) - 20} more")
    if replot:
        lines.append(
            f"figures: {len(figs)} redrawn; {n_stored} stored, {same_figs} of them "
            "byte-identical (informational: bytes need the same numbers, matplotlib "
            "version and fonts)"
        )
    pub_file = fj.parent / "published.json"
    if pub_file.is_file():
        lines += _published_table(json.loads(pub_file.read_text()), new)
    return cmp.ok and not sample_problems and not validation_problems, "\n".join(lines)


VALIDATION_JSON = "validation.json"


def check_validation(fj: Path, stored: Mapping[str, Any]) -> list[str]:
    """What validation.json (`harness validate`) says that the stored fit no longer predicts:
    the loss and its interval at the (N, D) it trained, recomputed from fits.json and its
    samples, and whether the measured loss lies inside."""
    try:
        law = load_law(fj, "chinchilla")
        (again,) = predict(law, [float(stored["n_params"])], [float(stored["n_tokens"])])
        problems = []
        pairs = [("predicted_loss", stored["predicted_loss"], again["loss"])]
        pairs += list(
            zip(
                ("ci95 lo", "ci95 hi"),
                stored["predicted_loss_ci95"],
                again["loss_ci95"],
                strict=True,
            )
        )
        for key, a, b in pairs:
            if a is None or b is None or not math.isclose(float(a), b, rel_tol=1e-9):
                problems.append(f"{VALIDATION_JSON} {key} = {a}; the stored fit gives {b}")
        if inside(stored["measured_loss"], stored["predicted_loss_ci95"]) != bool(
            stored["within_interval"]
        ):
            problems.append(f"{VALIDATION_JSON} within_interval does not follow from its numbers")
        return problems
    except (KeyError, TypeError, ValueError) as exc:
        return [f"{VALIDATION_JSON}: not laid out as `harness validate` writes it ({exc!r})"]


def _newer_laws(stored: Mapping[str, Any]) -> list[str]:
    """The registry's laws a fits.json has no block of (in any group): made since it was
    written, or not applicable to its data (which the refit would not make either)."""
    blocks = stored.get("fits") if isinstance(stored.get("fits"), Mapping) else {}
    have = set(blocks)
    for g in stored.get("groups") or []:
        if isinstance(g, Mapping) and isinstance(g.get("fits"), Mapping):
            have |= set(g["fits"])
    return [law for law in ALL_FITS if law not in have]


def _law_blocks(stored: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """{"law" or "group/law": block} of a fits.json, the keys as fits.bootstrap.npz uses."""
    if "groups" in stored:
        by = stored.get("settings", {}).get("group_by") or []
        return _with_sizes(
            {
                f"{'|'.join(str(g['key'].get(c)) for c in by)}/{law}": block
                for g in stored["groups"]
                for law, block in g["fits"].items()
            }
        )
    out = dict(stored.get("fits", {}))
    tasks = (
        stored.get("tasks", {}).get("tasks", {}) if isinstance(stored.get("tasks"), Mapping) else {}
    )
    for task, block in tasks.items():  # each task's steps, as `taskscale.fit_tasks` keys them
        if isinstance(block, Mapping):
            for step in ("step1", "step2"):
                if isinstance(block.get(step), Mapping) and "params" in block[step]:
                    out[f"tasks/{task}/{step}"] = block[step]
    return _with_sizes(out)


def _with_sizes(blocks: dict[str, Any]) -> dict[str, Any]:
    """A loss-curve law's block holds one block per model size ("sizes"), stored in
    fits.bootstrap.npz as "law/size/param" (`registry.anneal_curve`): listed as such."""
    out = dict(blocks)
    for law, block in blocks.items():
        sizes = block.get("sizes") if isinstance(block, Mapping) else None
        if isinstance(sizes, Mapping):
            out.update({f"{law}/{k}": b for k, b in sizes.items() if isinstance(b, Mapping)})
    return out


def check_samples(fj: Path, stored: Mapping[str, Any]) -> tuple[list[str], str]:
    """Whether fits.bootstrap.npz holds the samples of fits.json's intervals: for each law with
    a bootstrap, one sample per kept resample (n_bootstrap less n_bootstrap_failed), and the
    stored 95% interval of each parameter equal (to fits.json's 10 digits) to the one its
    samples give.

    Returns (problems, note): the note says the file is absent (a fits.json made before it).
    """
    path = samples_path(fj)
    if not path.is_file():
        return [], (
            f"no {path.name} beside {fj.name}: `harness fit` writes it (predictions with "
            "intervals need it)"
        )
    arrays = read_samples(path)
    blocks = _law_blocks(stored)
    problems = []
    seen = set()
    for key, values in sorted(arrays.items()):
        law, _, param = key.rpartition("/")
        block = blocks.get(law)
        if not isinstance(block, Mapping) or param not in block.get("params", {}):
            problems.append(f"{key}: no such law parameter in {fj.name}")
            continue
        seen.add(law)
        n = int(block.get("n_bootstrap", 0)) - int(block.get("n_bootstrap_failed", 0))
        # Files written before 2026-12-07 kept every resample, failed ones too.
        if values.size != n and values.size != int(block.get("n_bootstrap", 0)):
            problems.append(
                f"{key}: {values.size} samples; fits.json counts {n} kept resamples "
                "(n_bootstrap - n_bootstrap_failed)"
            )
        stored_ci = block.get("ci95", {}).get(param)
        if isinstance(stored_ci, list) and None not in stored_ci:
            got = [json_num(v) for v in ci95(values)]
            if got != stored_ci:
                problems.append(f"{key}: interval {got} from the samples; fits.json {stored_ci}")
    for law, block in blocks.items():
        # A law with parameters and their bootstrap intervals (`registry.base.law_block`) has
        # its samples stored; compute_optimal's intervals are derived, and have none.
        # So are the held-out check's, of its predictions.
        sampled = (
            isinstance(block, Mapping)
            and "params" in block
            and block.get("ci95")
            and law.rpartition("/")[2] != "heldout"  # "heldout" or "group/heldout"
        )
        if sampled and law not in seen:
            problems.append(f"{law}: fits.json has intervals and {path.name} no samples")
    return problems, ""


def _predates_fields(doc: Any) -> bool:
    """Whether a law block (one with "params" and "objective") lacks "precision"."""
    if isinstance(doc, Mapping):
        if "params" in doc and "objective" in doc and "precision" not in doc:
            return True
        return any(_predates_fields(v) for v in doc.values())
    if isinstance(doc, list):
        return any(_predates_fields(v) for v in doc)
    return False


def _law_of(label: str) -> str:
    """The block a compared value belongs to: 'fits.chinchilla' of 'fits.chinchilla.ci95.A[1]'."""
    for marker in (".params.", ".ci95.", ".n_opt.", ".d_opt.", ".tokens_per_param."):
        if marker in label:
            return label.split(marker)[0]
    return label.rsplit(".", 1)[0]


def _published_table(pub: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Rows: group, published a, refitted a (isoflop, approach1), difference."""
    fits_by = {"all": new.get("fits", {})}
    order = new.get("settings", {}).get("group_by") or []
    for g in new.get("groups", []):
        fits_by["|".join(str(g["key"][c]) for c in order)] = g["fits"]
    rows = [
        f"{'configuration':<44} {'published a':>11} {'isoflop a':>10} {'diff':>7} "
        f"{'approach1 a':>11}"
    ]
    for key, val in sorted(pub.get("exponents", {}).items()):
        f = fits_by.get(key, {})
        a2 = f.get("isoflop", {}).get("a")
        a1 = f.get("approach1", {}).get("a")
        d = "-" if a2 is None else f"{a2 - val['a']:+.3f}"
        rows.append(f"{key:<44} {val['a']:>11.3f} {fmt(a2):>10} {d:>7} {fmt(a1):>11}")
    return ["published exponents (N_opt ∝ C^a): " + pub.get("source", "")] + rows
