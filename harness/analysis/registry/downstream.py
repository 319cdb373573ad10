"""The downstream chain of a downstream.csv of fine-tunes (`harness.analysis.downstream`):
accuracy from pretraining loss, chained from N and D through the Chinchilla fit of "fits", and
the labels a target accuracy needs. A companion of the laws: fits.json's "downstream" object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.analysis import downstream as ds
from harness.analysis.common import json_clean
from harness.analysis.registry.base import Beside, BesideFigures, Companion


def _load(path: Path, where: str | None) -> pd.DataFrame:
    return ds.load_downstream(path)  # every fine-tune: --where selects pretraining runs


def _fit(b: Beside) -> dict[str, Any]:
    b.doc["settings"]["target_accuracy"] = b.target_accuracy
    block = ds.fit_downstream(
        b.table,
        b.runs,
        seed=b.seed,
        n_bootstrap=b.n_bootstrap,
        target_accuracy=b.target_accuracy,
        step1_fit=b.chinchilla,
    )
    return {"input": ds.downstream_input(b.path, b.table), **block}


def _figures(f: BesideFigures) -> list[Path]:
    from harness.analysis import downstream_plots

    table = f.read_table()
    block = f.stored.get("downstream")
    if block is None:  # fits.json made before downstream.csv: fitted here without intervals
        block = json_clean(ds.fit_downstream(table, f.runs, n_bootstrap=0))
    return downstream_plots.write_downstream_figures(table, block, f.out_dir)


COMPANION = Companion(
    name="downstream",
    file=ds.DOWNSTREAM_CSV,
    load=_load,
    fit=_fit,
    summary=ds.summarize_downstream,
    figures=_figures,
)
