"""Task scaling from a tasks.csv of task scores (`harness.analysis.taskscale`): each task's
accuracy from the loss the Chinchilla fit of "fits" predicts, chained from N and D, predicted at
the ladder's largest run. A companion of the laws: fits.json's "tasks" object."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import taskscale as ts
from harness.analysis.registry.base import Beside, BesideFigures, Companion
from harness.flops import training_flops


def _load(path: Path, where: str | None) -> pd.DataFrame:
    return ts.load_tasks(path, where=where)


def _fit(b: Beside) -> dict[str, Any]:
    if "groups" in b.doc:
        return {
            "input": ts.tasks_input(b.path, b.table),
            "skipped": "task laws are fitted on ungrouped runs only (fit each group's CSV)",
        }
    df = b.runs
    C = training_flops(df["n_params"].to_numpy(float), df["n_tokens"].to_numpy(float))
    top = int(np.argmax(C))
    target = (float(df["n_params"].iloc[top]), float(df["n_tokens"].iloc[top]))
    step1 = b.chinchilla
    body, task_samples = ts.fit_tasks(
        b.table,
        b.observed_losses(),
        step1.fit if step1 is not None else None,
        step1.boots if step1 is not None else [],
        seed=b.seed,
        n_bootstrap=b.n_bootstrap,
        target=target,
        val_block=b.doc.get("fits", {}).get("chinchilla"),
    )
    b.samples.update(task_samples)
    return {
        "input": ts.tasks_input(b.path, b.table),
        "target": {"n_params": target[0], "n_tokens": target[1], "why": "the largest run fitted"},
        "tasks": body,
    }


def _summary(obj: Mapping[str, Any]) -> list[str]:
    if "skipped" in obj:
        return [f"tasks            skipped: {obj['skipped']}"]
    return ts.summarize_tasks(obj)


def _figures(f: BesideFigures) -> list[Path]:
    if "tasks" not in f.stored:
        return []
    from harness.analysis import task_plots

    return task_plots.write_task_figures(
        f.read_table(), f.observed_losses(), f.stored, f.samples, f.out_dir
    )


COMPANION = Companion(
    name="tasks", file=ts.TASKS_CSV, load=_load, fit=_fit, summary=_summary, figures=_figures
)
