"""Figures of the downstream analysis (`downstream.py`): accuracy against pretraining loss with
the fitted sigmoid, against compute with the chained fit, and against the labelled-set size.

Built like `plots.py`: each figure on its own matplotlib Figure (no pyplot state), saved by
`plots.save_figure` (PNG and SVG, byte-deterministic: no date or software metadata, fixed SVG
hash salt, text as paths).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from harness.analysis.downstream import (
    accuracy_from_compute,
    chained_accuracy,
    label_power_law,
    sigmoid_accuracy,
)
from harness.analysis.laws import flops
from harness.analysis.plots import colours, palette, save_figure
from harness.flops import tokens_for_flops
from harness.units import si

__all__ = [
    "plot_accuracy_vs_compute",
    "plot_accuracy_vs_labels",
    "plot_accuracy_vs_loss",
    "write_downstream_figures",
]

_METHOD_COLORS = ("C0", "C1", "C2", "C3")


def _panels(k: int) -> list[Axes]:
    fig = Figure(figsize=(4.6 * max(k, 1), 4.0), dpi=100, layout="constrained")
    return list(fig.subplots(1, max(k, 1), squeeze=False)[0])


def figure_of(ax: Axes) -> Figure:
    fig = ax.get_figure()
    assert isinstance(fig, Figure)
    return fig


def plot_accuracy_vs_loss(ax: Axes, ds: pd.DataFrame, block: Mapping[str, Any]) -> Figure:
    """Accuracy against pretraining loss at the largest labelled-set size, one colour per
    method, with the fitted sigmoid Acc(L) (step 2) and the chance line.

    Parameters
    ----------
    ax : Axes
    ds : pandas.DataFrame
        Rows from `downstream.load_downstream`.
    block : mapping
        The "downstream" object of fits.json.

    Returns
    -------
    Figure
    """
    grid = np.linspace(
        ds["loss"].min() - 0.05 * np.ptp(ds["loss"]),
        ds["loss"].max() + 0.05 * np.ptp(ds["loss"]),
        200,
    )
    for color, (method, m) in zip(_METHOD_COLORS * 4, block["methods"].items(), strict=False):
        s2 = m["step2"]
        n_top = s2.get("n_labels", ds.loc[ds["method"] == method, "n_labels"].max())
        rows = ds[(ds["method"] == method) & (ds["n_labels"] == n_top)]
        ax.plot(
            rows["loss"],
            rows["accuracy"],
            "o",
            color=color,
            ms=4,
            alpha=0.7,
            label=f"{method} (n_labels={n_top:g})",
        )
        if "params" in s2:
            p = s2["params"]
            ax.plot(
                grid,
                sigmoid_accuracy(grid, **p),
                "-",
                color=color,
                lw=1.2,
                label=f"{method} fit: L0={p['L0']:.3g}, k={p['k']:.3g}, "
                f"{p['a'] + p['b']:.2f}..{p['b']:.2f}",
            )
    ax.axhline(block["chance"], color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("pretraining validation loss (nats/token)")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy vs loss (step 2: Acc(L) sigmoid)")
    ax.legend(fontsize=7)
    return figure_of(ax)


def plot_accuracy_vs_compute(
    axes: list[Axes], ds: pd.DataFrame, block: Mapping[str, Any]
) -> Figure:
    """Per method (one panel each): seed-mean accuracy against C = 6ND, one colour per N,
    with the chained prediction Acc(L(N, C/6N)) along each N and, for a Chinchilla step 1,
    along the compute-optimal frontier (black).

    Returns
    -------
    Figure
    """
    s1 = block.get("step1", {})
    sizes = np.unique(ds["n_params"])
    colors = list(colours(sizes, "N").values())
    C_all = flops(ds["n_params"], ds["n_tokens"])
    cgrid = np.geomspace(C_all.min() / 2, C_all.max() * 2, 200)
    for ax, (method, m) in zip(axes, block["methods"].items(), strict=False):
        s2 = m["step2"]
        n_top = s2.get("n_labels", ds.loc[ds["method"] == method, "n_labels"].max())
        rows = ds[(ds["method"] == method) & (ds["n_labels"] == n_top)]
        g = rows.groupby(["n_params", "n_tokens"], sort=True)["accuracy"].mean().reset_index()
        for color, n in zip(colors, sizes, strict=True):
            gn = g[g["n_params"] == n]
            ax.plot(
                flops(gn["n_params"], gn["n_tokens"]),
                gn["accuracy"],
                "o",
                color=color,
                ms=5,
                label=f"N={si(n)}" if sizes.size <= 12 else None,
            )
            if "params" in s2 and "params" in s1:
                ax.plot(
                    cgrid,
                    chained_accuracy(
                        n, tokens_for_flops(cgrid, n), s1["law"], s1["params"], s2["params"]
                    ),
                    "-",
                    color=color,
                    lw=0.8,
                )
        if "params" in s2 and "params" in s1 and s1["law"] == "chinchilla":
            ax.plot(
                cgrid,
                accuracy_from_compute(cgrid, s1["law"], s1["params"], s2["params"]),
                "k-",
                lw=1.4,
                label="compute-optimal (chained)",
            )
        ax.axhline(block["chance"], color="grey", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("pretraining compute C = 6ND (FLOP)")
        ax.set_ylabel("test accuracy (mean over seeds)")
        skipped = "" if "params" in s2 and "params" in s1 else " (no chained fit)"
        if s1.get("on_grid_edge"):
            skipped += "\n(step 1 L(N, D) on the edge of its start grid: curves not identified)"
        ax.set_title(f"{method}: accuracy vs compute{skipped}", fontsize=9)
        ax.legend(fontsize=6)
    return figure_of(axes[0])


def plot_accuracy_vs_labels(axes: list[Axes], ds: pd.DataFrame, block: Mapping[str, Any]) -> Figure:
    """Per method: accuracy against labelled examples, one colour per pretrained model (seed
    means joined, seeds as small dots), the saturating power law where fitted, and the target
    accuracy of the labels-needed analysis.

    Returns
    -------
    Figure
    """
    for ax, (method, m) in zip(axes, block["methods"].items(), strict=False):
        lab = m["labels"]
        models = lab["models"]
        rows = ds[ds["method"] == method]
        for color, e in zip(palette(len(models)), models, strict=True):
            sel = (rows["n_params"] == e["n_params"]) & (rows["n_tokens"] == e["n_tokens"])
            if "run_id" in e and "run_id" in rows.columns:
                sel = rows["run_id"].astype(str) == e["run_id"]
            r = rows[sel]
            ax.plot(r["n_labels"], r["accuracy"], ".", color=color, ms=3, alpha=0.5)
            ax.plot(
                e["n_labels"],
                e["accuracy"],
                "o-",
                color=color,
                ms=4,
                lw=1,
                label=f"N={si(e['n_params'])}, D={si(e['n_tokens'])}",
            )
            pl = e.get("power_law", {})
            if "acc_inf" in pl:
                ng = np.geomspace(min(e["n_labels"]), max(e["n_labels"]), 100)
                ax.plot(
                    ng,
                    label_power_law(ng, pl["acc_inf"], pl["c"], pl["gamma"]),
                    "--",
                    color=color,
                    lw=0.8,
                )
            if e["n_labels_needed"] is not None:
                ax.plot([e["n_labels_needed"]], [lab["target"]], "x", color=color, ms=7)
        ax.axhline(lab["target"], color="red", ls="--", lw=0.8, label=f"target {lab['target']:.3g}")
        ax.axhline(block["chance"], color="grey", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        # A range of 1-2 decades makes matplotlib label minor ticks, which then overlap.
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("labelled training examples n")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{method}: accuracy vs labels (x: labels needed)", fontsize=9)
        if len(models) <= 12:
            ax.legend(fontsize=6)
    return figure_of(axes[0])


def write_downstream_figures(
    ds: pd.DataFrame, block: Mapping[str, Any], out_dir: str | os.PathLike[str]
) -> list[Path]:
    """downstream_acc_vs_loss, downstream_acc_vs_compute and downstream_acc_vs_labels
    (.png and .svg) in `out_dir`.

    Parameters
    ----------
    ds : pandas.DataFrame
        Rows from `downstream.load_downstream`.
    block : mapping
        The "downstream" object of fits.json (or `downstream.fit_downstream`'s result).
    out_dir : path-like

    Returns
    -------
    list of pathlib.Path
    """
    out = Path(out_dir)
    k = len(block["methods"])
    written: list[Path] = []
    fig = Figure(figsize=(6.0, 4.2), dpi=100, layout="constrained")
    written += save_figure(
        plot_accuracy_vs_loss(fig.add_subplot(), ds, block), out / "downstream_acc_vs_loss"
    )
    written += save_figure(
        plot_accuracy_vs_compute(_panels(k), ds, block), out / "downstream_acc_vs_compute"
    )
    written += save_figure(
        plot_accuracy_vs_labels(_panels(k), ds, block), out / "downstream_acc_vs_labels"
    )
    return written
