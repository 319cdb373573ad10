"""Standard scaling-law figures. Each plot function draws on a given Axes and returns its Figure;
nothing here calls plt.show or touches pyplot's global state (figures are built from
matplotlib.figure.Figure with the Agg canvas). Saved files are deterministic: SVG with a fixed
hash salt and no date, PNG without the software/version metadata.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede any pyplot import elsewhere in this process

import matplotlib as mpl  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from harness.analysis.laws import chinchilla_loss, flops  # noqa: E402
from harness.atomic import atomic_write  # noqa: E402
from harness.flops import tokens_for_flops, training_flops
from harness.units import si  # noqa: E402

__all__ = [
    "colours",
    "is_full_grid",
    "new_axes",
    "plot_contour",
    "plot_extrapolation",
    "plot_loss_heatmap",
    "plot_isoflop",
    "plot_learning_curves",
    "plot_loss_vs_d",
    "plot_loss_vs_n",
    "plot_optimal",
    "plot_residuals",
    "plot_sweep",
    "plot_sweep_optima",
    "save_figure",
    "si_ticks",
    "write_learning_curves",
]

_SALT = "scaling-harness"


def new_axes(figsize: tuple[float, float] = (6.0, 4.2)) -> Axes:
    """A fresh Axes on its own Figure (not registered with pyplot)."""
    # Constrained layout is computed while drawing: no extra draw pass as bbox_inches="tight".
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    return fig.add_subplot()


def figure_of(ax: Axes) -> Figure:
    fig = ax.get_figure()
    assert isinstance(fig, Figure)
    return fig


def palette(k: int) -> list[Any]:
    cmap = mpl.colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.0, 0.9, max(k, 1))]


# One colour map per quantity, so that a model size or a token count has the same colour in
# every figure of an experiment (each figure colours the experiment's same sorted values).
_COLOUR_MAPS = {"N": "viridis", "D": "plasma", "C": "cividis"}


def colours(values: Any, kind: str) -> dict[float, Any]:
    """{value: colour} for the sorted distinct `values` of quantity `kind` ('N', 'D' or 'C'):
    N from viridis, D from plasma, compute from cividis, small to large."""
    vs = np.unique(np.asarray(values, dtype=float))
    cmap = mpl.colormaps[_COLOUR_MAPS[kind]]
    ts = np.linspace(0.0, 0.85, vs.size)
    return {float(v): cmap(t) for v, t in zip(vs, ts, strict=True)}


def _si_log_axis(axis: Any) -> None:
    """SI labels on a log axis: the decades; between them the 2 and 5 multiples when one decade
    is in view, or every multiple when none is (a loss axis from 2.3 to 4 reads '3', '4').
    matplotlib's default reads '3 x 10^0', and labels 2, 3, 4 and 6 x 10^k on a narrow axis,
    which collide."""

    def decades_in_view() -> float:
        lo, hi = sorted(axis.get_view_interval())
        if lo <= 0:
            return np.inf
        return np.floor(np.log10(hi) + 1e-9) - np.ceil(np.log10(lo) - 1e-9) + 1

    def major(x: float, _pos: int | None) -> str:
        return si(x)

    def minor(x: float, _pos: int | None) -> str:
        mant = x / 10.0 ** np.floor(np.log10(x) + 1e-9)
        k = decades_in_view()
        if k < 1 or (k < 2 and any(abs(mant - m) < 1e-6 for m in (2.0, 5.0))):
            return si(x)
        return ""

    axis.set_major_formatter(mpl.ticker.FuncFormatter(major))
    axis.set_minor_formatter(mpl.ticker.FuncFormatter(minor))


def si_ticks(fig: Figure) -> None:
    """SI tick labels on every log axis of `fig` whose ticks are not set by hand. An axis that
    spans less than half a decade (a loss from 1.0 to 1.7) gets evenly spaced ticks: a log
    locator would put one there, or none."""
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale != "log" or isinstance(axis.get_major_formatter(), mpl.ticker.FixedFormatter):
                continue
            lo, hi = sorted(axis.get_view_interval())
            if lo > 0 and np.log10(hi / lo) < 0.5:
                axis.set_major_locator(mpl.ticker.MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
                axis.set_minor_locator(mpl.ticker.NullLocator())
            _si_log_axis(axis)


def _floor_line(ax: Axes, floor: float | None) -> None:
    # The source's true entropy rate (synthetic corpus): no model can go below it.
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=0.8, label=f"entropy rate H={floor:.3f}")


def chinchilla_formula(params: Mapping[str, float]) -> str:
    """The fitted law as one line of mathtext (Hoffmann et al. 2022, eq. 2)."""
    p = params
    return (
        f"$L = {p['E']:.3g} + {si(p['A'])}/N^{{{p['alpha']:.3f}}} "
        f"+ {si(p['B'])}/D^{{{p['beta']:.3f}}}$"
    )


def _band(samples: Mapping[str, np.ndarray] | None, n: Any, d: Any) -> tuple[Any, Any] | None:
    """The 2.5 and 97.5 percentiles of the bootstrap's L(n, d), or None without samples."""
    if not samples or any(k not in samples for k in ("E", "A", "B", "alpha", "beta")):
        return None
    n, d = np.broadcast_arrays(np.asarray(n, dtype=float), np.asarray(d, dtype=float))
    preds = chinchilla_loss(
        n[None, :],
        d[None, :],
        **{
            k: np.asarray(samples[k], dtype=float)[:, None]
            for k in ("E", "A", "B", "alpha", "beta")
        },
    )
    preds = preds[np.isfinite(preds).all(axis=1)]
    if len(preds) < 20:
        return None
    return np.percentile(preds, 2.5, axis=0), np.percentile(preds, 97.5, axis=0)


def _loss_slices(
    ax: Axes,
    df: pd.DataFrame,
    x: str,
    by: str,
    by_label: str,
    xlabel: str,
    params: Mapping[str, float] | None,
    floor: float | None = None,
    samples: Mapping[str, np.ndarray] | None = None,
    undetermined: bool = False,
) -> Figure:
    """Loss against column ``x``, one colour per value of column ``by``, with the fitted
    Chinchilla law along each slice and its bootstrap 95% band (``x`` and ``by`` are n_params
    and n_tokens in some order). A law the data do not determine is drawn dashed, without a
    band, and says so in the legend."""
    if undetermined:
        samples = None
    values = np.unique(df[by])
    many = values.size > 12
    colour = colours(values, "D" if by == "n_tokens" else "N")
    for v in values:
        c = colour[float(v)]
        g = df[df[by] == v].sort_values(x)
        ax.plot(g[x], g["loss"], "o", color=c, ms=4, label=None if many else f"{by_label}={si(v)}")
        if params is not None and not many:
            grid = np.geomspace(g[x].min() / 1.5, g[x].max() * 1.5, 100)
            n, d = (grid, v) if x == "n_params" else (v, grid)
            ax.plot(grid, chinchilla_loss(n, d, **params), "--" if undetermined else "-",
                    color=c, lw=1)  # fmt: skip
            band = _band(samples, n, d)
            if band is not None:
                ax.fill_between(grid, *band, color=c, alpha=0.15, lw=0)
    if params is not None:
        # The view is the runs' (a law with a large exponent shoots up beyond them).
        lo, hi = float(df["loss"].min()), float(df["loss"].max())
        if np.isfinite(lo) and np.isfinite(hi) and lo > 0:
            ax.set_ylim(lo / 1.15, hi * 1.25)
        # The formula as the legend's first entry: what the lines are.
        ax.plot([], [], "-", color="0.3", lw=1, label=chinchilla_formula(params))
        if undetermined:
            ax.plot([], [], "--", color="0.3", lw=1, label="NOT DETERMINED by these data")
        if samples:
            ax.fill_between([], [], color="0.3", alpha=0.15, lw=0, label="95% bootstrap band")
    _floor_line(ax, floor)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(
        f"loss vs {'N' if x == 'n_params' else 'D'}"
        + (" (lines: fitted L(N, D))" if params else "")
    )
    if not many or params is not None:
        ax.legend(fontsize=7)
    return figure_of(ax)


def plot_loss_vs_n(
    ax: Axes,
    df: pd.DataFrame,
    params: Mapping[str, float] | None = None,
    floor: float | None = None,
    samples: Mapping[str, np.ndarray] | None = None,
    undetermined: bool = False,
) -> Figure:
    """Loss against N, one colour per D, with the fitted Chinchilla law L(N, D) per D.

    Parameters
    ----------
    ax : Axes
    df : pandas.DataFrame
        Runs (n_params, n_tokens, loss).
    params : mapping, optional
        Chinchilla parameters E, A, B, alpha, beta.
    floor : float, optional
        The corpus' true entropy rate (nats/token), drawn as a dashed line.
    samples : mapping, optional
        The bootstrap's Chinchilla parameters {name: array} (fits.bootstrap.npz): a 95% band
        around each line.
    undetermined : bool
        The law is not determined by the data: dashed lines, no band.

    Returns
    -------
    Figure
    """
    return _loss_slices(
        ax, df, "n_params", "n_tokens", "D", "non-embedding parameters N", params, floor, samples,
        undetermined,
    )  # fmt: skip


def plot_loss_vs_d(
    ax: Axes,
    df: pd.DataFrame,
    params: Mapping[str, float] | None = None,
    floor: float | None = None,
    samples: Mapping[str, np.ndarray] | None = None,
    undetermined: bool = False,
) -> Figure:
    """Loss against D, one colour per N, with the fitted Chinchilla law per N and its band (and
    `floor`, the true entropy rate, dashed), as `plot_loss_vs_n`.

    Returns
    -------
    Figure
    """
    return _loss_slices(
        ax, df, "n_tokens", "n_params", "N", "training tokens D", params, floor, samples,
        undetermined,
    )  # fmt: skip


def plot_isoflop(
    ax: Axes, df: pd.DataFrame, budget: np.ndarray, isoflop: Mapping[str, Any] | None = None
) -> Figure:
    """IsoFLOP profiles: loss against N per budget, with the minima found (approach 2).

    Returns
    -------
    Figure
    """
    cs = np.unique(budget)
    colour = colours(cs, "C")
    for c in cs:
        g = df[budget == c].sort_values("n_params")
        ax.plot(
            g["n_params"], g["loss"], "o-", color=colour[float(c)], ms=3, lw=0.8,
            label=f"C={si(c)}FLOP",
        )  # fmt: skip
    if isoflop:
        ax.plot(isoflop["n_opt"], isoflop["loss_opt"], "r*", ms=8, label="minima")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("isoFLOP profiles")
    ax.legend(fontsize=6, ncol=2)
    return figure_of(ax)


def plot_optimal(ax: Axes, isoflop: Mapping[str, Any]) -> Figure:
    """N_opt(C) and D_opt(C) from approach 2 with the fitted power laws and the a, b intervals.

    Returns
    -------
    Figure
    """
    C = np.asarray(isoflop["budgets"], dtype=float)
    cc = np.geomspace(C.min(), C.max(), 50)
    for key, exp, k, color in (("n_opt", "a", "log_k_n", "C0"), ("d_opt", "b", "log_k_d", "C1")):
        ax.plot(C, isoflop[key], "o", color=color, label=f"{key} ({exp}={isoflop[exp]:.3f})")
        if isoflop.get(k) is not None:
            ax.plot(cc, np.exp(isoflop[k]) * cc ** isoflop[exp], "-", color=color, lw=1)
            ci = isoflop.get("ci95", {}).get(exp)
            if ci and None not in ci:
                # Band: the exponent's 95% interval, pivoting at the geometric mean budget.
                c0 = np.exp(np.mean(np.log(C)))
                y0 = np.exp(isoflop[k]) * c0 ** isoflop[exp]
                lo, hi = (y0 * (cc / c0) ** e for e in ci)
                ax.fill_between(
                    cc, np.minimum(lo, hi), np.maximum(lo, hi), color=color, alpha=0.2, lw=0
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute C (FLOP)")
    ax.set_ylabel("compute-optimal N, D")
    ax.set_title("N_opt(C), D_opt(C) (approach 2)")
    ax.legend(fontsize=7)
    return figure_of(ax)


def plot_residuals(ax: Axes, df: pd.DataFrame, params: Mapping[str, float]) -> Figure:
    """Observed against predicted loss, coloured by relative residual.

    Returns
    -------
    Figure
    """
    pred = chinchilla_loss(df["n_params"], df["n_tokens"], **params)
    obs = df["loss"].to_numpy()
    rel = (obs - pred) / pred
    sc = ax.scatter(pred, obs, c=rel, cmap="coolwarm", s=14)
    lo, hi = min(pred.min(), obs.min()), max(pred.max(), obs.max())
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    figure_of(ax).colorbar(sc, ax=ax, label="(observed - predicted) / predicted")
    ax.set_xlabel("predicted loss (Chinchilla fit)")
    ax.set_ylabel("observed loss")
    ax.set_title(f"observed vs predicted (max |rel. residual| {np.max(np.abs(rel)):.3g})")
    return figure_of(ax)


def plot_learning_curves(ax: Axes, curves: pd.DataFrame, floor: float | None = None) -> Figure:
    """Validation loss (and, lighter, training loss) against tokens, one colour per model size.

    Parameters
    ----------
    ax : Axes
    curves : pandas.DataFrame
        Long format as `io.load_learning_curves` returns: run_id, n_params, tokens,
        train_loss, val_loss (NaN except at evaluation steps).

    Returns
    -------
    Figure
    """
    sizes = np.unique(curves["n_params"])
    colour = colours(sizes, "N")
    for n in sizes:
        color = colour[float(n)]
        label: str | None = f"N={si(n)}"
        for _, run in curves[curves["n_params"] == n].groupby("run_id", sort=True):
            tr = run[np.isfinite(run["train_loss"])]
            if len(tr):
                ax.plot(tr["tokens"], tr["train_loss"], "-", color=color, lw=0.6, alpha=0.3)
            va = run[np.isfinite(run["val_loss"])]
            if len(va):
                ax.plot(
                    va["tokens"], va["val_loss"], "o-", color=color, ms=2.5, lw=1.0, label=label
                )
                label = None  # one legend entry per size
    _floor_line(ax, floor)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("learning curves (points: validation; light: training)")
    if sizes.size > 12:  # too many entries for a legend: a colour bar of the sizes instead
        # The colours are spaced by rank (`colours`), so the bar is one band per size, in order.
        bands = mpl.cm.ScalarMappable(
            norm=mpl.colors.BoundaryNorm(np.arange(sizes.size + 1) - 0.5, sizes.size),
            cmap=mpl.colors.ListedColormap([colour[float(n)] for n in sizes]),
        )
        ticks = np.arange(0, sizes.size, int(np.ceil(sizes.size / 8)))
        bar = figure_of(ax).colorbar(bands, ax=ax, ticks=ticks, label="N (parameters)")
        bar.ax.set_yticklabels([si(sizes[i]) for i in ticks])
    elif sizes.size:
        ax.legend(fontsize=7)
    return figure_of(ax)


_SWEEP_LABEL = {"lr": "peak learning rate", "batch_tokens": "batch size (tokens)"}


def plot_sweep(ax: Axes, block: Mapping[str, Any]) -> Figure:
    """Loss against the swept hyperparameter, one colour per (N, D), with each fitted parabola
    (in log h) and its vertex (a star; hollow when outside the swept range).

    Parameters
    ----------
    ax : Axes
    block : mapping
        An "lr_sweep" or "batch_sweep" object of fits.json (`sweeps.sweep_block`).

    Returns
    -------
    Figure
    """
    pts = block["points"]
    for color, p in zip(palette(len(pts)), pts, strict=True):
        h, y = np.asarray(p["values"], dtype=float), np.asarray(p["losses"], dtype=float)
        ax.plot(h, y, "o", color=color, ms=4, label=f"N={si(p['n_params'])}, D={si(p['n_tokens'])}")
        c0, c1, c2 = (np.nan if v is None else v for v in p["parabola"])
        if p["window"] and np.isfinite(c2):
            w = np.asarray(p["window"])
            xs = np.linspace(np.log(h[w].min()), np.log(h[w].max()), 60)
            ax.plot(np.exp(xs), c0 + c1 * xs + c2 * xs * xs, "-", color=color, lw=1)
        if p["opt"] is not None:
            ax.plot(
                p["opt"],
                p["loss_opt"],
                "*",
                ms=10,
                color=color,
                mfc=color if p["inside"] else "none",
            )
    ax.set_xscale("log")
    # Ticks at the swept values themselves (log minor-tick labels collide over a 16x range).
    ticks = sorted({v for p in pts for v in p["values"]})
    # Batch sizes in tokens in full ("2048", a power of two, not "2.05k"); learning rates as
    # written in a config ("0.0015").
    ax.set_xticks(
        ticks,
        [f"{v:.0f}" if v >= 1 and float(v).is_integer() else f"{v:.3g}" for v in ticks],
        fontsize=7,
    )
    ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
    ax.set_xlabel(_SWEEP_LABEL.get(block["hparam"], block["hparam"]))
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{block['hparam']} sweep: parabola in log {block['hparam']}, optimum *")
    if len(pts) <= 12:
        ax.legend(fontsize=7)
    return figure_of(ax)


def plot_sweep_optima(ax: Axes, block: Mapping[str, Any]) -> Figure:
    """The optimum per (N, D) against N with the fitted power law h_opt = c N^p.

    Returns
    -------
    Figure
    """
    pts = [p for p in block["points"] if p["opt"] is not None]
    for inside, mfc, label in ((True, "C0", "inside the sweep"), (False, "none", "outside")):
        sel = [p for p in pts if p["inside"] is inside]
        if sel:
            ax.plot(
                [p["n_params"] for p in sel],
                [p["opt"] for p in sel],
                "o",
                color="C0",
                mfc=mfc,
                label=label,
            )
    law = block.get("vs_n", {})
    if "exponent" in law and pts:
        n = np.geomspace(
            min(p["n_params"] for p in pts) / 1.3, max(p["n_params"] for p in pts) * 1.3, 50
        )
        ci = law.get("ci95", {}).get("exponent")
        ci_s = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and None not in ci else ""
        ax.plot(
            n,
            law["coef"] * n ** law["exponent"],
            "-",
            color="C0",
            lw=1,
            label=f"{block['hparam']}_opt = {si(law['coef'])} N^{law['exponent']:.3f}{ci_s}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel(f"optimal {_SWEEP_LABEL.get(block['hparam'], block['hparam'])}")
    ax.set_title(f"{block['hparam']}_opt(N)")
    ax.legend(fontsize=7)
    return figure_of(ax)


def plot_contour(ax: Axes, df: pd.DataFrame, params: Mapping[str, float]) -> Figure:
    """The fitted L(N, D) as filled contours over N x D, with isoFLOP lines C = 6ND at whole
    decades, the compute-optimal frontier N_opt(C), D_opt(C) (Hoffmann et al. 2022, fig. 2 and
    eq. 4), and the runs.

    Returns
    -------
    Figure
    """
    from harness.analysis.laws import compute_optimal

    n_lo, n_hi = df["n_params"].min() / 4, df["n_params"].max() * 4
    d_lo, d_hi = df["n_tokens"].min() / 4, df["n_tokens"].max() * 4
    n, d = np.geomspace(n_lo, n_hi, 160), np.geomspace(d_lo, d_hi, 160)
    nn, dd = np.meshgrid(n, d)
    loss = chinchilla_loss(nn, dd, **params)
    # Levels over the runs' losses and the fit below them; beyond 1.5x the worst run (a law
    # with a large exponent shoots up off the grid) one colour.
    top = min(float(np.nanmax(loss)), 1.5 * float(df["loss"].max()))
    levels = np.geomspace(float(np.nanmin(loss)), top, 14)
    cs = ax.contourf(nn, dd, loss, levels=levels, cmap="Blues_r", alpha=0.9, extend="max")
    figure_of(ax).colorbar(cs, ax=ax, label="fitted loss (nats/token)", format="%.3g")
    c_min, c_max = training_flops(n_lo, d_lo), training_flops(n_hi, d_hi)
    for c in 10.0 ** np.arange(np.ceil(np.log10(c_min)), np.floor(np.log10(c_max)) + 1):
        # C = 6 N D: a straight line of slope -1 in log-log, labelled where it leaves the view
        # (the top edge, else the right one).
        ax.plot(n, tokens_for_flops(c, n), "-", color="0.35", lw=0.7)
        x, y = tokens_for_flops(c, d_hi), d_hi
        if x > n_hi:
            continue
        if x < n_lo:
            x, y = n_lo, tokens_for_flops(c, n_lo)
        ax.annotate(
            f"{si(c)}FLOP", (x, y), xytext=(2, -8), textcoords="offset points", fontsize=6,
            color="0.15", bbox={"boxstyle": "round,pad=0.1", "fc": "w", "ec": "none", "alpha": 0.7},
        )  # fmt: skip
    try:
        opt = compute_optimal(params["A"], params["B"], params["alpha"], params["beta"])
    except ValueError:
        opt = None
    if opt is not None:
        cc = np.geomspace(c_min, c_max, 200)
        nf, df_ = opt.n_opt(cc), opt.d_opt(cc)
        seen = ((nf > n_lo) & (nf < n_hi) & (df_ > d_lo) & (df_ < d_hi)).any()
        label = "compute-optimal N, D" + ("" if seen else " (outside this view)")
        ax.plot(nf, df_, "r-", lw=1.5, label=label)
    ax.scatter(df["n_params"], df["n_tokens"], s=12, c="k", marker="o", label="runs", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n_lo, n_hi)
    ax.set_ylim(d_lo, d_hi)
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("training tokens D")
    ax.set_title("fitted L(N, D), isoFLOP lines (grey), efficient frontier (red)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return figure_of(ax)


def plot_extrapolation(ax: Axes, df: pd.DataFrame, block: Mapping[str, Any]) -> Figure:
    """The held-out check (registry.heldout): the runs the law was fitted on, the larger runs it
    predicts, and each prediction's 95% bootstrap interval, against compute C = 6ND.

    Returns
    -------
    Figure
    """
    C = flops(df["n_params"], df["n_tokens"])
    thr = block["flops_threshold"]
    train = C <= thr
    colour = colours(df["n_params"], "N")
    cs = [colour[float(v)] for v in df["n_params"]]
    ax.scatter(C[train], df["loss"][train], s=16, c=np.array(cs, dtype=object)[train].tolist(),
               label=f"fitted on ({int(train.sum())} runs)")  # fmt: skip
    ax.scatter(C[~train], df["loss"][~train], s=28, facecolors="none",
               edgecolors=np.array(cs, dtype=object)[~train].tolist(), lw=1.2,
               label=f"held out ({int((~train).sum())} runs)")  # fmt: skip
    pts = block.get("points") or []
    if pts:
        pc = np.array([p["flops"] for p in pts], dtype=float)
        pred = np.array([p["predicted"] for p in pts], dtype=float)
        ci = [block.get("ci95", {}).get(f"predicted_{i}", [None, None]) for i in range(len(pts))]
        lo = np.array([np.nan if c[0] is None else c[0] for c in ci], dtype=float)
        hi = np.array([np.nan if c[1] is None else c[1] for c in ci], dtype=float)
        # The interval drawn from its own ends: the law's point can lie outside the interval
        # of its kept resamples (a fit on the start grid's edge, results/repeat).
        ax.plot(pc, pred, "x", color="r", ms=5, label="predicted, 95% interval")
        fin = np.isfinite(lo) & np.isfinite(hi)
        if fin.any():
            ax.vlines(pc[fin], lo[fin], hi[fin], color="r", lw=1)
    ax.axvline(thr, color="0.5", ls=":", lw=1, label=f"fit up to C={si(thr)}FLOP")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute C = 6ND (FLOP)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(
        f"extrapolation: mean |error| {100 * block['are_mean']:.2g}%, "
        f"max {100 * block['are_max']:.2g}%",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    return figure_of(ax)


def is_full_grid(df: pd.DataFrame) -> bool:
    """Whether the runs form an N x D grid a heat map shows: at most 16 values of each, and a
    run at half the cells or more."""
    n, d = df["n_params"].nunique(), df["n_tokens"].nunique()
    cells = len(df[["n_params", "n_tokens"]].drop_duplicates())
    return n <= 16 and d <= 16 and cells >= 0.5 * n * d


def plot_loss_heatmap(ax: Axes, df: pd.DataFrame) -> Figure:
    """The grid: final loss over N (rows) x D (columns), each cell labelled; empty where the
    grid has no run.

    Returns
    -------
    Figure
    """
    table = df.pivot_table(index="n_params", columns="n_tokens", values="loss", aggfunc="min")
    im = ax.imshow(table.to_numpy(), cmap="viridis_r", aspect="auto", origin="lower")
    figure_of(ax).colorbar(im, ax=ax, label="loss (nats/token)", format="%.3g")
    if table.size <= 200:
        for (i, j), v in np.ndenumerate(table.to_numpy()):
            if np.isfinite(v):
                r, g, b, _ = im.cmap(im.norm(v))
                light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5  # dark text on a light cell
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7,
                        color="k" if light else "w")  # fmt: skip
    ax.set_xticks(range(table.shape[1]), [si(v) for v in table.columns], fontsize=7)
    ax.set_yticks(range(table.shape[0]), [si(v) for v in table.index], fontsize=7)
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("non-embedding parameters N")
    ax.set_title("loss over the grid")
    return figure_of(ax)


def save_figure(fig: Figure, stem: str | os.PathLike[str]) -> list[Path]:
    """Write stem.png and stem.svg atomically and byte-deterministically.

    The constrained layout is computed once, while the PNG is drawn, and kept for the SVG
    (the layout engine is off during the second save and restored after): laying out the
    tick labels is about half the cost of a draw.

    Returns
    -------
    list of pathlib.Path
    """
    stem = Path(stem)
    out = []
    si_ticks(fig)
    engine = fig.get_layout_engine()
    try:
        with mpl.rc_context({"svg.hashsalt": _SALT, "svg.fonttype": "path"}):
            for fmt, meta in (
                ("png", {"Software": None}),
                ("svg", {"Date": None, "Creator": None}),
            ):
                p = stem.with_suffix("." + fmt)
                atomic_write(
                    p, lambda f, fmt=fmt, meta=meta: fig.savefig(f, format=fmt, metadata=meta)
                )
                out.append(p)
                fig.set_layout_engine("none")
    finally:
        fig.set_layout_engine(engine)
    return out


def write_learning_curves(
    df: pd.DataFrame,
    runs_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    suffix: str = "",
    floor: float | None = None,
) -> list[Path]:
    """learning_curves.png/.svg of the runs in `df` (matched by its run_id column) from their
    metrics.csv under `runs_dir`; nothing when there is no runs/ folder or no run_id column."""
    from harness.analysis.io import load_learning_curves

    if not Path(runs_dir).is_dir() or "run_id" not in df.columns:
        return []
    sizes = dict(zip(df["run_id"].astype(str), df["n_params"], strict=True))
    curves = load_learning_curves(runs_dir, sizes)
    if not len(curves):
        return []
    return save_figure(
        plot_learning_curves(new_axes(), curves, floor), Path(out_dir) / f"learning_curves{suffix}"
    )
