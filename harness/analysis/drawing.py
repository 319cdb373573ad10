"""`harness plot`: the standard figures of a runs CSV, drawn from fits.json and its bootstrap
samples (each law's figures from the registry, the companions', the learning curves), or from a
fit made here without intervals where there is no fits.json yet."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness.analysis import sweeps
from harness.analysis.common import read_fits_json
from harness.analysis.curves import load_curves
from harness.analysis.fitting import (
    SCHEMA,
    apply_n_convention,
    fits_dict,
    group_keys,
    observed_losses,
    reference_of,
    stored_settings,
)
from harness.analysis.io import load_runs, resolve_csv
from harness.analysis.registry import COMPANIONS, LAWS, BesideFigures, Figures
from harness.analysis.samples import read_samples, samples_path
from harness.analysis.subsample import stratified_subsample
from harness.atomic import check_writable
from harness.errors import InputError

__all__ = ["plot_path"]


def plot_path(
    path: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    column_map: Mapping[str, str] | None = None,
    group_by: Sequence[str] | None = None,
) -> list[Path]:
    """Write the standard figures (PNG and SVG) for the runs in PATH.

    Draws the laws of fits.json beside the CSV when present; otherwise fits every law the data
    allow here, without bootstrap, and draws those. Files go to ``<csv dir>/figures`` or `out_dir`.
    When a ``runs/`` directory lies beside the CSV and the CSV has a run_id column,
    learning_curves.png/.svg is drawn from the runs' metrics.csv files as well. When a
    downstream.csv or tasks.csv lies beside the CSV, its companion's figures are drawn too
    (`registry.COMPANIONS`: accuracy against loss, compute and labelled-set size; each task's
    accuracy against N and D).

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
    stored: dict[str, Any] = {}
    fj = csv.parent / "fits.json"
    if fj.is_file():
        stored = read_fits_json(fj, SCHEMA)
        stored["settings"] = stored_settings(fj, stored)
        if not group_by:
            group_by = stored["settings"].get("group_by") or None
        column_map = column_map or stored["settings"].get("column_map") or None
    # The rows the fit read, as it read them: a stored --where selects them before their values
    # are checked, and N counts what the fit's N counted.
    settings = stored.get("settings", {})
    df = load_runs(csv, column_map, where=settings.get("where"))
    df = apply_n_convention(df, settings.get("n_convention", "non_embedding"), column_map, csv)
    if "fits" not in stored and "groups" not in stored:
        # Not fitted yet: the figures draw the laws fitted here, without bootstrap (they only
        # ever draw what a fits object holds); data that support no law draw the runs alone.
        try:
            stored = fits_dict(csv, n_bootstrap=0, column_map=column_map, group_by=group_by)
        except InputError:
            stored = {}
    samples = _stored_samples(fj) if "fits" in stored or "groups" in stored else {}
    target = Path(out_dir) if out_dir is not None else csv.parent / "figures"
    if target.is_symlink():  # writing through it would put files outside the results
        raise InputError(
            f"figures folder = {target}: a symbolic link to {os.readlink(target)}; accepted: a "
            "real folder (or --out-dir)"
        )
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
                _draw_figures(df, stored, samples, csv, staging, group_by, runs_dir, floor)
            )
        ]
        for f in drawn:  # relative paths: a group value with "/" draws into a subfolder
            (target / f).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / f, target / f)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(target / f for f in drawn)


def _stored_samples(fits_json: Path) -> dict[str, dict[str, Any]]:
    """fits.bootstrap.npz beside fits.json as {"law": {param: array}} (or {"group/law": ...}
    for grouped fits); empty when there is none or it does not read."""
    path = samples_path(fits_json)
    if not path.is_file():
        return {}
    try:
        flat = read_samples(path)
    except InputError:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for key, values in flat.items():
        law, _, param = key.rpartition("/")
        out.setdefault(law, {})[param] = values
    return out


def _draw_figures(
    df: pd.DataFrame,
    stored: Mapping[str, Any],
    samples: Mapping[str, Mapping[str, Any]],
    csv: Path,
    target: Path,
    group_by: Sequence[str] | None,
    runs_dir: Path,
    floor: float | None,
) -> list[Path]:
    """`plot_path`'s figures, written into ``target``; the files written."""
    written: list[Path] = []
    settings = stored.get("settings", {})
    # The figures draw the runs the laws were fitted on: the same subsample of a large CSV.
    # (No max_rows stored: nothing was subsampled, or the file predates the cap: all rows.)
    pick = {"seed": settings.get("seed", 0), "max_rows": settings.get("max_rows")}
    if group_by:
        by_key = {
            "|".join(str(g["key"].get(c)) for c in group_by): g["fits"]
            for g in stored.get("groups", [])
        }
        for key in group_keys(df, group_by, csv):
            sel = (df[list(group_by)].astype(str) == pd.Series(key, index=group_by)).all(axis=1)
            sub = df[sel].reset_index(drop=True)
            prefix = "|".join(key) + "/"
            group_samples = {
                law[len(prefix) :]: v for law, v in samples.items() if law.startswith(prefix)
            }
            written += _law_figures(
                sub,
                by_key.get("|".join(key)),
                target,
                "_" + "_".join(key),
                runs_dir,
                floor,
                group_samples,
                label="|".join(key),
                **pick,
            )
    else:
        written += _law_figures(
            df, stored.get("fits"), target, "", runs_dir, floor, samples, label="", **pick
        )
    where = stored.get("settings", {}).get("where")
    for companion in COMPANIONS:
        path = csv.parent / companion.file
        if path.is_file() and path != csv:
            written += companion.figures(
                BesideFigures(
                    read_table=functools.partial(
                        companion.load, path, where if isinstance(where, str) else None
                    ),
                    runs=df,
                    stored=stored,
                    samples=samples,
                    # The losses each score was paired with, as the fit paired them.
                    observed_losses=lambda: observed_losses(csv, stored.get("settings", {}), df),
                    out_dir=target,
                )
            )
    return written


def _law_figures(
    df: pd.DataFrame,
    fits: Mapping[str, Any] | None,
    out_dir: Path,
    suffix: str,
    runs_dir: Path,
    floor: float | None,
    samples: Mapping[str, Mapping[str, Any]],
    *,
    label: str,
    seed: int,
    max_rows: int | None,
) -> list[Path]:
    """Each law's figures from its block (`registry`), then the runs' learning curves. The
    points are the runs the laws were fitted on (`fit_frame`'s subsample of a large set, drawn
    again from ``seed``, ``label`` and ``max_rows``)."""
    from harness.analysis import plots

    swept = tuple(sweeps.swept_columns(df))
    best = sweeps.best_per_point(df, list(swept))
    try:
        curves = tuple(load_curves(runs_dir.parent, df))
    except InputError:  # the fit said why (anneal_curve skipped); the other figures still draw
        curves = ()
    fig = Figures(
        curves=curves,
        df=stratified_subsample(best, max_rows, seed=seed, label=label)[0],
        full=df,
        swept=swept,
        fits=fits or {},
        out_dir=out_dir,
        suffix=suffix,
        floor=floor,
        samples=samples,
    )
    written: list[Path] = []
    for law in LAWS:
        written += law.figures(fig, fig.fits.get(law.name))
    written += plots.write_learning_curves(df, runs_dir, out_dir, suffix=suffix, floor=floor)
    return written
