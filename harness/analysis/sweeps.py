"""Learning-rate and batch-size sweeps: the optimal value per model size, and its scaling.

A sweep is a set of runs at one grid point (N, D) that differ only in a hyperparameter h: the
peak learning rate (runs.csv ``lr``) or the batch size in tokens (``batch_tokens``). Per point:

1. The loss per value of h: the mean over seeds, and, when the other hyperparameter is swept as
   well, the lowest over its values (h's profile with the other one tuned).
2. A parabola of loss in log h through the lowest-loss value and ``half_window`` values on
   each side (default 1: three-point parabolic interpolation of the grid minimum). Its vertex
   is h_opt. Loss against log h is asymmetric (steep towards divergence at high lr), so a
   parabola through a whole coarse sweep (factor 2 over 16x) is biased towards the flat side;
   three points around an interior minimum put the vertex between its neighbours. A vertex
   outside the swept values (lowest loss at an end) is an extrapolation: it is reported
   (``inside`` false) and left out of the power laws.
3. Power laws through the optima, least squares in log-log space: h_opt = c N^p, and
   h_opt = c' C^q with C = 6 N D. DeepSeek LLM (DeepSeek-AI 2024, sec. 3.1) fits exactly these
   against compute: eta_opt = 0.3118 C^-0.1250 and B_opt = 0.2920 C^0.3271 (B in tokens).

The 95% intervals come from a two-level bootstrap (`bootstrap_sweep`): the grid points with
replacement and, in windows wider than 3, the values within each. With 3-5 sizes they are
coarse: read them as the scale of the uncertainty, not as a calibrated interval.

Pure numpy/pandas; no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from harness.analysis import identify
from harness.analysis.common import check_n_resamples, ci95, resample_weights
from harness.analysis.isoflop import loglog_slope
from harness.errors import InputError
from harness.flops import training_flops

__all__ = [
    "SWEEP_COLUMNS",
    "PowerLaw",
    "SweepOptimum",
    "SweepResult",
    "best_per_point",
    "bootstrap_sweep",
    "fit_sweep",
    "sweep_block",
    "summary_line",
    "sweep_optimum",
    "swept_columns",
]

FloatArray = NDArray[np.float64]
Hparam = Literal["lr", "batch_tokens"]

SWEEP_COLUMNS: tuple[Hparam, ...] = ("lr", "batch_tokens")
"""runs.csv columns a grid sweeps (grid.lrs, grid.batch_sizes)."""

_POINT = ("n_params", "n_tokens")


def _point_columns(df: pd.DataFrame) -> list[str]:
    # Repeated-data grids hold runs of equal (N, D) with different unique-token budgets.
    return [*_POINT, *(["n_unique_tokens"] if "n_unique_tokens" in df.columns else [])]


def _numeric(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce")


def swept_columns(df: pd.DataFrame) -> list[Hparam]:
    """The hyperparameter columns that take 2 or more values at one grid point (N, D)."""
    out: list[Hparam] = []
    keys = _point_columns(df)
    for col in SWEEP_COLUMNS:
        if col not in df.columns:
            continue
        v = _numeric(df, col)
        if not v.notna().any():
            continue
        n = pd.DataFrame({"v": v}).join(df[keys]).groupby(keys, dropna=False)["v"].nunique()
        if (n >= 2).any():
            out.append(col)
    return out


def best_per_point(df: pd.DataFrame, swept: Sequence[str] | None = None) -> pd.DataFrame:
    """At each grid point, the runs of the swept setting with the lowest mean loss over seeds.

    The other fits (Chinchilla, isoFLOP, ...) are laws of loss at tuned hyperparameters, so
    they see one setting per point. Returns `df` itself when nothing is swept.
    """
    swept = list(swept_columns(df) if swept is None else swept)
    if not swept:
        return df
    keys = _point_columns(df)
    setting = keys + swept
    mean = df.groupby(setting, dropna=False, sort=True)["loss"].mean().reset_index()
    best = mean.loc[mean.groupby(keys, dropna=False, sort=True)["loss"].idxmin(), setting]
    out = df.merge(best, on=setting, how="inner", sort=False)
    out = out.sort_values("line" if "line" in out.columns else keys, kind="stable")
    out = out.reset_index(drop=True)
    out.attrs.update(df.attrs)
    return out


@dataclass(frozen=True, kw_only=True)
class SweepOptimum:
    """The optimum of one sweep (one grid point)."""

    n_params: float
    n_tokens: float
    values: tuple[float, ...]
    """Swept values of h, ascending."""
    losses: tuple[float, ...]
    """Loss at each value (mean over seeds; the other swept hyperparameter at its best)."""
    window: tuple[int, ...] = ()
    """Indices into `values` of the points the parabola went through."""
    opt: float = float("nan")
    """h_opt, the vertex of the parabola (NaN when none)."""
    loss_opt: float = float("nan")
    parabola: tuple[float, float, float] = (float("nan"),) * 3
    """(c0, c1, c2) of loss = c0 + c1 x + c2 x^2, x = ln h."""
    inside: bool = False
    """h_opt lies within the swept values (not an extrapolation)."""
    note: str = ""
    """Why there is no optimum, or that the lowest loss is at an end of the sweep."""

    @property
    def flops(self) -> float:
        """C = 6 N D (Kaplan et al. 2020; Hoffmann et al. 2022)."""
        return float(training_flops(float(self.n_params), self.n_tokens))


def sweep_optimum(
    values: Sequence[float] | FloatArray,
    losses: Sequence[float] | FloatArray,
    *,
    half_window: int = 1,
) -> tuple[float, float, tuple[float, float, float], tuple[int, ...], bool, str]:
    """The vertex of a parabola of loss in ln h around the lowest loss of one sweep.

    Parameters
    ----------
    values, losses : array_like
        Distinct positive swept values h and the loss at each.
    half_window : int
        Values on each side of the lowest loss that the parabola goes through.

    Returns
    -------
    (h_opt, loss_opt, (c0, c1, c2), window, inside, note)
        h_opt is NaN (and note says why) with fewer than 3 values or a parabola that opens
        downwards. inside: min(values) <= h_opt <= max(values).

    Raises
    ------
    InputError
        Values that are not finite and > 0, repeated values, or lengths that differ.
    """
    h = np.asarray(values, dtype=float)
    y = np.asarray(losses, dtype=float)
    if h.shape != y.shape or h.ndim != 1:
        raise InputError(f"sweep: {h.size} values and {y.size} losses; accepted: equal lengths")
    if not (np.all(np.isfinite(h)) and np.all(h > 0) and np.all(np.isfinite(y))):
        raise InputError("sweep: values must be finite and > 0 and losses finite")
    if np.unique(h).size != h.size:
        raise InputError("sweep: repeated values; accepted: one loss per distinct value")
    nan3 = (float("nan"),) * 3
    if h.size < 3:
        return float("nan"), float("nan"), nan3, (), False, f"{h.size} values; a parabola needs 3"
    order = np.argsort(h)
    h, y = h[order], y[order]
    i = int(np.argmin(y))
    lo, hi = max(0, i - half_window), min(h.size, i + half_window + 1)
    # At an end of the sweep keep 3 points, the minimum and the two next to it.
    lo, hi = (0, max(hi, 3)) if lo == 0 else (min(lo, h.size - 3), hi)
    win = tuple(int(order[j]) for j in range(lo, hi))
    x = np.log(h[lo:hi])
    c0, c1, c2 = (float(c) for c in np.polyfit(x, y[lo:hi], 2)[::-1])
    edge = "lowest loss at the " + ("smallest" if i == 0 else "largest") + " value swept"
    note = edge if i in (0, h.size - 1) else ""
    if not c2 > 0:
        return (
            float("nan"),
            float("nan"),
            (c0, c1, c2),
            win,
            False,
            ("parabola opens downwards" + (f"; {note}" if note else "")),
        )
    xo = -c1 / (2.0 * c2)
    opt = float(np.exp(xo))
    inside = bool(h[0] <= opt <= h[-1])
    return opt, float(c0 + c1 * xo + c2 * xo * xo), (c0, c1, c2), win, inside, note


@dataclass(frozen=True, kw_only=True)
class PowerLaw:
    """h_opt = coef * x^exponent through the optima inside their sweeps."""

    x: str
    """'n_params' or 'flops' (C = 6 N D)."""
    exponent: float
    coef: float
    n_points: int


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    """Optima of every sweep of one hyperparameter, and power laws through them."""

    hparam: str
    optima: tuple[SweepOptimum, ...]
    vs_n: PowerLaw | None
    vs_c: PowerLaw | None
    vs_n_note: str = ""
    vs_c_note: str = ""
    half_window: int = 1


_Profile = tuple[float, float, FloatArray, FloatArray]


def _profiles(df: pd.DataFrame, hparam: Hparam) -> list[_Profile]:
    """(N, D, values, losses) per grid point: mean over seeds, min over the other swept column."""
    if hparam not in df.columns:
        raise InputError(f"{hparam} sweep: no {hparam!r} column; accepted: runs.csv of harness")
    d = df.copy()
    d[hparam] = _numeric(d, hparam)
    d = d[np.isfinite(d[hparam]) & (d[hparam] > 0)]
    keys = _point_columns(d)
    others = [c for c in SWEEP_COLUMNS if c != hparam and c in d.columns]
    setting = keys + [hparam] + others
    mean = d.groupby(setting, dropna=False, sort=True)["loss"].mean().reset_index()
    prof = mean.groupby(keys + [hparam], dropna=False, sort=True)["loss"].min().reset_index()
    out = []
    for key, g in prof.groupby(keys, dropna=False, sort=True):
        n, dd = float(key[0]), float(key[1])
        out.append((n, dd, g[hparam].to_numpy(dtype=float), g["loss"].to_numpy(dtype=float)))
    return out


def _power_law(x: FloatArray, y: FloatArray, name: str, label: str) -> tuple[PowerLaw | None, str]:
    if np.unique(x).size < 2:
        return None, (
            f"{label} against {name}: {np.unique(x).size} distinct {name} among the "
            "optima inside their sweeps; accepted: at least 2"
        )
    p, k = loglog_slope(x, y)
    return PowerLaw(x=name, exponent=p, coef=float(np.exp(k)), n_points=int(x.size)), ""


def fit_sweep(df: pd.DataFrame, hparam: Hparam = "lr", *, half_window: int = 1) -> SweepResult:
    """Optimal `hparam` per grid point and its power laws in N and in C = 6ND.

    Parameters
    ----------
    df : pandas.DataFrame
        Runs with n_params, n_tokens, loss and the `hparam` column (rows from `load_runs`).
    hparam : {"lr", "batch_tokens"}
        The swept column.
    half_window : int
        Values on each side of the lowest loss the parabola goes through.

    Returns
    -------
    SweepResult

    Raises
    ------
    InputError
        No `hparam` column, or no grid point with 3 or more values of it.
    """
    if hparam not in SWEEP_COLUMNS:
        raise InputError(f"sweep: hparam={hparam!r}; accepted: {', '.join(SWEEP_COLUMNS)}")
    optima = []
    for n, d, h, y in _profiles(df, hparam):
        opt, lopt, par, win, inside, note = sweep_optimum(h, y, half_window=half_window)
        optima.append(
            SweepOptimum(
                n_params=n,
                n_tokens=d,
                values=tuple(map(float, h)),
                losses=tuple(map(float, y)),
                window=win,
                opt=opt,
                loss_opt=lopt,
                parabola=par,
                inside=inside,
                note=note,
            )
        )
    if not any(len(o.values) >= 3 for o in optima):
        most = max((len(o.values) for o in optima), default=0)
        raise InputError(
            f"{hparam} sweep: at most {most} distinct {hparam} value(s) at any "
            f"(n_params, n_tokens); accepted: at least 3 at one point"
        )
    good = [o for o in optima if o.inside]
    opt = np.array([o.opt for o in good], dtype=float)
    label = f"{hparam}_opt"
    vs_n, note_n = _power_law(np.array([o.n_params for o in good]), opt, "n_params", label)
    vs_c, note_c = _power_law(np.array([o.flops for o in good]), opt, "flops", label)
    return SweepResult(
        hparam=hparam,
        optima=tuple(optima),
        vs_n=vs_n,
        vs_c=vs_c,
        vs_n_note=note_n,
        vs_c_note=note_c,
        half_window=half_window,
    )


def _slopes(x: FloatArray, logy: FloatArray, weight: FloatArray) -> FloatArray:
    """Weighted least-squares slope of logy against ln x, one per row (resample).

    x: (k,) per point; logy, weight: (r, k); NaN in logy or weight 0 leaves a point out.
    NaN where fewer than 2 distinct x remain.
    """
    lx = np.log(x)[None, :]
    w = np.where(np.isfinite(logy), weight, 0.0)
    ly = np.where(w > 0, logy, 0.0)
    cnt = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx = (w * lx).sum(axis=1) / cnt
        my = (w * ly).sum(axis=1) / cnt
        dx = lx - mx[:, None]
        s = (w * dx * (ly - my[:, None])).sum(axis=1) / (w * dx * dx).sum(axis=1)
    n_distinct = np.array([np.unique(lx[0][row > 0]).size for row in w])
    return np.where(n_distinct >= 2, s, np.nan)


def bootstrap_sweep(
    res: SweepResult, *, n_resamples: int, rng: np.random.Generator
) -> dict[str, FloatArray]:
    """Two-level bootstrap of the exponents: resample the grid points (sizes) with
    replacement, and within each point the values of its window; refit vertices and lines.

    A window of 3 values is an exact interpolation, so its vertex is not resampled (only the
    points are); wider windows resample their values (stratified, the window kept as chosen on
    the full data, as `isoflop.bootstrap_isoflop` does). With few sizes the intervals are wide
    and coarse: they say how little a handful of optima pin down.

    Returns {"vs_n": exponents, "vs_c": exponents} (NaN for an unusable resample) for the power
    laws that `res` has.

    Raises
    ------
    InputError
        If n_resamples < 1.
    """
    check_n_resamples(n_resamples)
    good = [o for o in res.optima if o.inside]
    k = len(good)
    group_counts = resample_weights(k, n_resamples, rng)  # k = 0: (n_resamples, 0), no draw
    logh = np.full((n_resamples, k), np.nan)
    for j, o in enumerate(good):
        w = np.asarray(o.window)
        if w.size <= 3:
            logh[:, j] = np.log(o.opt)
            continue
        x = np.log(np.asarray(o.values)[w])
        y = np.asarray(o.losses)[w]
        counts = resample_weights(w.size, n_resamples, rng)
        V = np.vander(x - x.mean(), 3, increasing=True)  # centred: well-conditioned
        M = np.einsum("rm,mi,mj->rij", counts, V, V)
        v = np.einsum("rm,mi,m->ri", counts, V, y)
        ok = (counts > 0).sum(axis=1) >= 3  # 3 distinct values pin a parabola
        coef = np.full((n_resamples, 3), np.nan)
        coef[ok] = np.linalg.solve(M[ok], v[ok][..., None])[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            vertex = x.mean() - coef[:, 1] / (2 * coef[:, 2])
        logh[:, j] = np.where(coef[:, 2] > 0, vertex, np.nan)
    out: dict[str, FloatArray] = {}
    if res.vs_n is not None:
        out["vs_n"] = _slopes(np.array([o.n_params for o in good]), logh, group_counts)
    if res.vs_c is not None:
        out["vs_c"] = _slopes(np.array([o.flops for o in good]), logh, group_counts)
    return out


def sweep_block(
    df: pd.DataFrame,
    hparam: Hparam,
    *,
    n_bootstrap: int,
    rng: np.random.Generator,
    half_window: int = 1,
) -> dict[str, Any]:
    """The fits.json object of one sweep ("lr_sweep" or "batch_sweep").

    Raises
    ------
    InputError
        As `fit_sweep`.
    """
    res = fit_sweep(df, hparam, half_window=half_window)
    boots = bootstrap_sweep(res, n_resamples=n_bootstrap, rng=rng) if n_bootstrap else {}
    block: dict[str, Any] = {
        "hparam": hparam,
        "points": [
            {
                "n_params": o.n_params,
                "n_tokens": o.n_tokens,
                "flops": o.flops,
                "values": list(o.values),
                "losses": list(o.losses),
                "opt": o.opt,
                "loss_opt": o.loss_opt,
                "parabola": list(o.parabola),
                "window": list(o.window),
                "inside": o.inside,
                "note": o.note,
            }
            for o in res.optima
        ],
        "n_inside": sum(o.inside for o in res.optima),
        "half_window": res.half_window,
        "n_bootstrap": n_bootstrap,
        "source": "parabola in log h per (N, D); h_opt = c x^p (DeepSeek LLM 2024, sec. 3.1)",
    }
    for key, law, note in (("vs_n", res.vs_n, res.vs_n_note), ("vs_c", res.vs_c, res.vs_c_note)):
        if law is None:
            block[key] = {"skipped": note}
            continue
        b = boots.get(key)
        n_failed = int(np.sum(~np.isfinite(b))) if b is not None else 0
        block[key] = {
            "x": law.x,
            "exponent": law.exponent,
            "coef": law.coef,
            "n_points": law.n_points,
            "ci95": {"exponent": ci95(b)} if b is not None else {},
            "n_bootstrap": n_bootstrap,
            "n_bootstrap_failed": n_failed,
            **identify.failure_verdict(n_failed, n_bootstrap, "a resample without an optimum"),
        }
    return block


def summary_line(block: dict[str, Any]) -> str:
    """One line of `harness fit`'s summary for an lr_sweep or batch_sweep block."""
    h = block["hparam"]
    opts = ", ".join(
        f"N={p['n_params']:.3g}: {p['opt']:.3g}" + ("" if p["inside"] else " (outside)")
        if p["opt"] is not None
        else f"N={p['n_params']:.3g}: none"
        for p in block["points"]
    )
    parts = [f"{h}_opt per point: {opts}"]
    for key, x in (("vs_n", "N"), ("vs_c", "C")):
        law = block.get(key, {})
        if "exponent" in law:
            ci = law.get("ci95", {}).get("exponent")
            ci_s = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci and None not in ci else ""
            if law.get("determined") is False:
                ci_s = f" (NOT DETERMINED: {law['n_bootstrap_failed']} of {law['n_bootstrap']} "
                ci_s += "resamples failed)"
            parts.append(f"{h}_opt ∝ {x}^{law['exponent']:.3g}{ci_s}")
    return "; ".join(parts)
