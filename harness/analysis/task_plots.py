"""Figures of the task chains (`taskscale.py`): per task, accuracy against the step-1 loss with
the fitted step-2 curve, its 95% band from the stored samples, and the prediction at the
ladder's largest run; and the held-out check (final accuracy against compute, the larger runs
predicted from the cheaper ones). Built like `plots.py` and saved by `plots.save_figure`."""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.analysis import taskscale as ts
from harness.analysis.laws import chinchilla_loss
from harness.analysis.plots import colours, figure_of, new_axes, save_figure
from harness.units import si

__all__ = ["plot_heldout", "plot_task", "write_task_figures"]


def plot_task(
    ax: Axes,
    task: str,
    N: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    block: Mapping[str, Any],
    step1: Mapping[str, float],
    samples: Mapping[str, np.ndarray] | None,
) -> Figure:
    """Accuracy against loss for one task: the rows (one colour per N), the chosen step-2 form
    over the losses from the prediction's to the largest seen, its 95% band, the prediction at
    the target with its chained interval, and the chance line."""
    s2, pr = block["step2"], block["prediction"]
    colour = colours(N, "N")
    for n in np.unique(N):
        sel = N == n
        ax.plot(x[sel], y[sel], "o", ms=4, color=colour[float(n)], label=f"N={si(n)}")
    x_t = float(chinchilla_loss(pr["n_params"], pr["n_tokens"], **step1))
    lo, hi = min(float(x.min()), x_t) * 0.95, float(x.max()) * 1.05
    grid = np.linspace(lo, hi, 200)
    ax.plot(grid, np.clip(ts.step2_accuracy(s2["form"], grid, s2["params"]), 0, 1), "-",
            color="0.2", lw=1.2, label=f"{s2['form']} (step 2)")  # fmt: skip
    if samples and all(k in samples for k in s2["params"]):
        rows = zip(*(samples[k] for k in s2["params"]), strict=True)
        curves = np.array(
            [ts.step2_accuracy(s2["form"], grid, dict(zip(s2["params"], r, strict=True)))
             for r in rows]
        )  # fmt: skip
        if curves.size:
            band = np.nanpercentile(np.clip(curves, 0, 1), [2.5, 97.5], axis=0)
            ax.fill_between(grid, *band, color="0.2", alpha=0.12, lw=0, label="95% band")
    ci = pr.get("ci95", {}).get("accuracy")
    ax.plot([x_t], [pr["params"]["accuracy"]], "*", ms=11, color="r",
            label=f"N={si(pr['n_params'])}, D={si(pr['n_tokens'])}")  # fmt: skip
    if ci and None not in ci:
        ax.vlines([x_t], ci[0], ci[1], color="r", lw=1)
    if block.get("chance") is not None:
        ax.axhline(block["chance"], color="0.5", ls=":", lw=1, label="chance")
    source = "bits per byte of the answer" if block["step1"]["source"].startswith("bpb") else (
        "validation loss (nats/token)"
    )  # fmt: skip
    ax.set_xlabel(f"step-1 loss: {source}")
    ax.set_ylabel(block.get("metric", "acc"))
    ax.set_title(f"task {task}: accuracy from loss", fontsize=9)
    ax.legend(fontsize=7)
    return figure_of(ax)


def plot_heldout(
    ax: Axes,
    task: str,
    final: pd.DataFrame,
    metric: str,
    heldout: Mapping[str, Any],
    chance: float | None = None,
) -> Figure:
    """The held-out check of one task: each run's final accuracy against its compute 6ND (one
    colour per N), and at each held-out run the chain's prediction from the cheaper runs with
    its 95% interval."""
    acc = final[final["metric"] == metric]
    N = acc["n_params"].to_numpy(float)
    C = 6.0 * N * acc["n_tokens"].to_numpy(float)
    colour = colours(N, "N")
    for n in np.unique(N):
        sel = N == n
        ax.plot(C[sel], acc["value"].to_numpy(float)[sel], "o", ms=5, color=colour[float(n)],
                label=f"N={si(n)}")  # fmt: skip
    for i, r in enumerate(heldout["runs"]):
        c = 6.0 * r["n_params"] * r["n_tokens"]
        lo, hi = r.get("ci95", {}).get("accuracy", [None, None])
        ax.plot([c * 1.04], [r["params"]["accuracy"]], "*", ms=10, color="r",
                label="predicted from the cheaper runs" if i == 0 else None)  # fmt: skip
        if lo is not None and hi is not None:
            ax.vlines([c * 1.04], lo, hi, color="r", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("compute 6ND (FLOPs)")
    ax.set_ylabel(f"{metric} at the run's last step")
    n_fitted = heldout["n_fitted_runs"]
    ax.set_title(f"task {task}: held-out check ({n_fitted} runs fitted)", fontsize=9)
    if chance is not None:
        ax.axhline(chance, color="0.5", ls=":", lw=1, label="chance")
    ax.legend(fontsize=7)
    return figure_of(ax)


def _stem(task: str) -> str:
    """A file name for a task's figure; a name changed to be one ("mmlu/law") gets a short
    hash of the real one, so that no two tasks share a file ("mmlu_law")."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", task)
    if safe != task:
        safe += "_" + format(zlib.crc32(task.encode()), "08x")
    return "task_" + safe


def write_task_figures(
    tasks: pd.DataFrame,
    runs: pd.DataFrame,
    stored: Mapping[str, Any],
    samples: Mapping[str, Mapping[str, np.ndarray]],
    out_dir: Path,
) -> list[Path]:
    """One figure per fitted task of fits.json's "tasks" object (none without it)."""
    obj = stored.get("tasks")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("tasks"), Mapping):
        return []
    written: list[Path] = []
    for task, block in obj["tasks"].items():
        if not isinstance(block, Mapping) or "step2" not in block:
            continue
        rows = tasks[tasks["task"] == task]
        source = "bpb" if block["step1"]["source"].startswith("bpb") else "val_loss"
        if source == "bpb":
            step1 = block["step1"]["params"]
        else:
            step1 = stored.get("fits", {}).get("chinchilla", {}).get("params")
            if not step1:
                continue
        N, x, y, _ = ts.step2_rows(rows, runs, source)
        if x.size == 0:
            continue
        fig = plot_task(new_axes(), task, N, x, y, block, step1, samples.get(f"tasks/{task}/step2"))
        written += save_figure(fig, out_dir / _stem(task))
        heldout = block.get("heldout", {})
        if heldout.get("runs"):
            final = ts.final_rows(rows)
            fig = plot_heldout(
                new_axes(), task, final, block.get("metric", "acc"), heldout, block.get("chance")
            )
            written += save_figure(fig, out_dir / (_stem(task) + "_heldout"))
    return written
