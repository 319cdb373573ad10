"""Reading a coordinate check: how each layer type's activation size grows with width (or
depth), and the figure the muP authors draw.

A coordinate check (Yang et al. 2022, "Tensor Programs V", sec. 5 and fig. 5) trains a few
steps at several widths and records the mean absolute entry of each layer type's output at
every step. A parametrization that transfers keeps each curve flat in width: its log-log slope
against width stays near 0 at every step. Under the standard parametrization with Adam the
output logits grow about linearly with width after the first update (slope near 1).

`harness coordcheck` (`harness.coordcheck`) measures; this module reads its table (columns
parametrization, axis, width, depth, seed, step, layer, mean_abs). Pure numpy/pandas.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis.isoflop import loglog_slope

__all__ = ["COLUMNS", "DEFAULT_DEPTHS", "DEFAULT_WIDTHS", "LAYERS", "plot", "slopes"]

DEFAULT_WIDTHS = (32, 64, 128, 256, 512, 1024)
"""`harness coordcheck`'s widths (n_embd): 32x, as the muP authors' checks span."""
DEFAULT_DEPTHS = (2, 4, 8, 16)
"""Its depths (n_layer), CompleteP only."""

LAYERS = ("embedding", "attention", "mlp", "block", "logits")
"""The layer types: the input embedding's output, each block's attention and MLP outputs (what
they add to the residual stream, multipliers included), each block's output (the residual
stream), and the logits."""
COLUMNS = ("parametrization", "axis", "width", "depth", "seed", "step", "layer", "mean_abs")


def slopes(table: pd.DataFrame, axis: str = "width") -> pd.DataFrame:
    """The log-log slope of mean |activation| (mean over seeds) against width (or depth), per
    parametrization, step and layer type: least squares of log mean_abs on log size.

    Returns
    -------
    DataFrame with columns parametrization, step, layer, slope.
    """
    rows = table[table["axis"] == axis]
    size = "width" if axis == "width" else "depth"
    mean = rows.groupby(["parametrization", "step", "layer", size], as_index=False)[
        "mean_abs"
    ].mean()
    out = []
    for (kind, step, layer), g in mean.groupby(["parametrization", "step", "layer"], sort=True):
        slope, _ = loglog_slope(g[size], g["mean_abs"])
        out.append({"parametrization": kind, "step": step, "layer": layer, "slope": slope})
    return pd.DataFrame(out, columns=["parametrization", "step", "layer", "slope"])


def plot(table: pd.DataFrame, stem: Path, axis: str = "width") -> list[Path]:
    """stem.png and .svg: one row of panels per parametrization, one column per shown step
    (the first, the second and the last), mean |activation| against width (or depth), one
    line per layer type, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.analysis.plots import save_figure

    rows = table[table["axis"] == axis]
    size = "width" if axis == "width" else "depth"
    kinds = list(dict.fromkeys(rows["parametrization"]))
    steps = sorted(set(rows["step"]))
    shown = sorted({steps[0], steps[min(1, len(steps) - 1)], steps[-1]})
    fig, axes = plt.subplots(
        len(kinds),
        len(shown),
        figsize=(3.2 * len(shown), 2.8 * len(kinds)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    mean = rows.groupby(["parametrization", "step", "layer", size], as_index=False)[
        "mean_abs"
    ].mean()
    for i, kind in enumerate(kinds):
        for j, step in enumerate(shown):
            ax = axes[i][j]
            for layer in LAYERS:
                g = mean[
                    (mean["parametrization"] == kind)
                    & (mean["step"] == step)
                    & (mean["layer"] == layer)
                ].sort_values(size)
                if len(g):
                    ax.plot(g[size], g["mean_abs"], marker="o", ms=3, label=layer)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{kind}, step {step}", fontsize=9)
            if i == len(kinds) - 1:
                ax.set_xlabel(size)
            if j == 0:
                ax.set_ylabel("mean |activation|")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"coordinate check against {size}", fontsize=10)
    fig.tight_layout()
    paths = save_figure(fig, stem)
    plt.close(fig)
    return paths
