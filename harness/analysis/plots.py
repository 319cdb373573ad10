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

from harness.analysis.laws import chinchilla_loss  # noqa: E402
from harness.atomic import atomic_write  # noqa: E402

__all__ = [
    "new_axes",
    "plot_isoflop",
    "plot_learning_curves",
    "plot_loss_vs_d",
    "plot_loss_vs_n",
    "plot_optimal",
    "plot_residuals",
    "plot_sweep",
    "plot_sweep_optima",
    "save_figure",
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


def _floor_line(ax: Axes, floor: float | None) -> None:
    # The source's true entropy rate (synthetic corpus): no model can go below it.
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=0.8, label=f"entropy rate H={floor:.3f}")


def _sparse_minor_labels(ax: Axes) -> None:
    """On a log x axis with fewer than two powers of ten in view, label the minor ticks at
    2 and 5 x 10^k only: matplotlib's default then labels 2, 3, 4 and 6 x 10^k, which collide
    on a narrow axis (a grid of budgets 200k..1.6M). Wider axes keep only the decades."""

    def label(x: float, _pos: int | None) -> str:
        lo, hi = sorted(ax.get_xlim())
        decades = np.floor(np.log10(hi)) - np.ceil(np.log10(lo)) + 1
        exp = int(np.floor(np.log10(x) + 1e-9))
        mant = x / 10.0**exp
        if decades >= 2 or not any(abs(mant - m) < 1e-6 for m in (2.0, 5.0)):
            return ""
        return f"$\\mathdefault{{{round(mant)}\\times10^{{{exp}}}}}$"

    ax.xaxis.set_minor_formatter(mpl.ticker.FuncFormatter(label))


def _loss_slices(
    ax: Axes,
    df: pd.DataFrame,
    x: str,
    by: str,
    by_label: str,
    xlabel: str,
    params: Mapping[str, float] | None,
    floor: float | None = None,
) -> Figure:
    """Loss against column ``x``, one colour per value of column ``by``, with the fitted
    Chinchilla law along each slice (``x`` and ``by`` are n_params and n_tokens in some order)."""
    values = np.unique(df[by])
    many = values.size > 12
    for c, v in zip(palette(values.size), values, strict=True):
        g = df[df[by] == v].sort_values(x)
        ax.plot(g[x], g["loss"], "o", color=c, ms=4, label=None if many else f"{by_label}={v:.3g}")
        if params is not None and not many:
            grid = np.geomspace(g[x].min() / 1.5, g[x].max() * 1.5, 100)
            n, d = (grid, v) if x == "n_params" else (v, grid)
            ax.plot(grid, chinchilla_loss(n, d, **params), "-", color=c, lw=1)
    _floor_line(ax, floor)
    ax.set_xscale("log")
    _sparse_minor_labels(ax)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(
        f"loss vs {'N' if x == 'n_params' else 'D'}"
        + (" (lines: fitted L(N, D))" if params else "")
    )
    if not many:
        ax.legend(fontsize=7)
    return figure_of(ax)


def plot_loss_vs_n(
    ax: Axes,
    df: pd.DataFrame,
    params: Mapping[str, float] | None = None,
    floor: float | None = None,
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

    Returns
    -------
    Figure
    """
    return _loss_slices(
        ax, df, "n_params", "n_tokens", "D", "non-embedding parameters N", params, floor
    )


def plot_loss_vs_d(
    ax: Axes,
    df: pd.DataFrame,
    params: Mapping[str, float] | None = None,
    floor: float | None = None,
) -> Figure:
    """Loss against D, one colour per N, with the fitted Chinchilla law per N (and `floor`,
    the true entropy rate, dashed).

    Returns
    -------
    Figure
    """
    return _loss_slices(ax, df, "n_tokens", "n_params", "N", "training tokens D", params, floor)


def plot_isoflop(
    ax: Axes, df: pd.DataFrame, budget: np.ndarray, isoflop: Mapping[str, Any] | None = None
) -> Figure:
    """IsoFLOP profiles: loss against N per budget, with the minima found (approach 2).

    Returns
    -------
    Figure
    """
    cs = np.unique(budget)
    for c, col in zip(cs, palette(cs.size), strict=True):
        g = df[budget == c].sort_values("n_params")
        ax.plot(g["n_params"], g["loss"], "o-", color=col, ms=3, lw=0.8, label=f"C={c:.2g}")
    if isoflop:
        ax.plot(isoflop["n_opt"], isoflop["loss_opt"], "r*", ms=8, label="minima")
    ax.set_xscale("log")
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
    ax.set_xlabel("compute C (FLOPs)")
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
    for color, n in zip(palette(sizes.size), sizes, strict=True):
        label: str | None = f"N={n:.3g}"
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
    if sizes.size and sizes.size <= 12:
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
        ax.plot(h, y, "o", color=color, ms=4, label=f"N={p['n_params']:.3g}, D={p['n_tokens']:.3g}")
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
    # Whole numbers (batch sizes in tokens) in full: "2048", not "2.05e+03".
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
            label=f"{block['hparam']}_opt = {law['coef']:.3g} N^{law['exponent']:.3f}{ci_s}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel(f"optimal {_SWEEP_LABEL.get(block['hparam'], block['hparam'])}")
    ax.set_title(f"{block['hparam']}_opt(N)")
    ax.legend(fontsize=7)
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
