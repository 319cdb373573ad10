"""`harness fit`: from runs.csv to fits.json (schema 1, docs/results-format.md) and its summary
table. Every law of the registry is fitted in one loop (`fit_frame`), every companion (fine-tunes,
task scores) after it; `harness.analysis.drawing` draws the figures from the file this writes,
`harness.analysis.report` the HTML page, `harness.analysis.reproduce` refits and compares.

fits.json holds, beside "fits", the "settings" it was made with (seed, bootstrap size, column
map, groups, fits), so that `reproduce_path` can refit from the CSV alone. Numbers are plain
JSON floats rounded to 10 significant digits; keys are sorted; the input path is stored as a
file name only. The same CSV and settings therefore give a byte-identical file wherever the
directory lies.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import isoflop as iso
from harness.analysis import sweeps
from harness.analysis.common import MAX_BOOTSTRAP, json_clean
from harness.analysis.curves import load_curves
from harness.analysis.io import check_one_source, line_list, load_runs, resolve_csv, sha256_of
from harness.analysis.laws import flops
from harness.analysis.registry import COMPANIONS, LAWS, Beside, Frame
from harness.analysis.registry.compute_optimal import COMPUTE_BUDGETS
from harness.analysis.samples import samples_path, write_samples
from harness.analysis.subsample import FIT_ROWS_MAX, stratified_subsample
from harness.analysis.where import check_where
from harness.atomic import atomic_write_json
from harness.errors import InputError

__all__ = [
    "ALL_FITS",
    "COMPUTE_BUDGETS",
    "fit_frame",
    "fit_path",
    "fits_up_to_date",
    "stored_settings",
    "summarize",
]

ALL_FITS: tuple[str, ...] = tuple(law.name for law in LAWS)
"""Every fit fits.json can hold (`harness.analysis.registry`). By default each is made where
the data allow; chinchilla is required (a CSV that cannot support the joint fit is bad input
unless `fits` leaves it out, or the runs sweep lr or batch size, or carry learning curves).
lr_sweep and batch_sweep appear only for runs that sweep them (`sweeps.swept_columns`) or when
asked for by name; data_constrained only for runs that repeat data
(`dataconstrained.has_repeats`) or when asked for by name."""

SCHEMA = 1


def fit_frame(
    df: pd.DataFrame,
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    fits: Sequence[str] | None = None,
    label: str = "",
    isoflop_minimum: str = "parabola",
    heldout_quantile: float = 0.75,
    max_rows: int | None = FIT_ROWS_MAX,
    curves: Sequence[Any] = (),
    curves_error: str = "",
    kept: dict[str, Any] | None = None,
    omit: Collection[str] = (),
) -> dict[str, Any]:
    """Every requested fit of one set of runs, as the "fits" object of fits.json.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows from `load_runs` (n_params, n_tokens, loss; flops_budget optional).
    seed : int
        Bootstrap seed.
    n_bootstrap : int
        Resamples per bootstrap (0 for none).
    fits : sequence of str, optional
        Names from ALL_FITS; None for every fit the data allow (chinchilla required).
    label : str
        Group label, mixed into the per-fit random streams.
    isoflop_minimum : {"parabola", "akima"}
        Minimum finder of approach 2.
    heldout_quantile : float
        Runs with C at or below this quantile of C train the held-out check.
    max_rows : int
        The laws are fitted on at most this many runs (after the sweeps' best per point): a
        larger set on a stratified subsample (`subsample.stratified_subsample`), recorded in
        ``kept["subsample"]``.
    curves : sequence of `curves.Curve`
        The runs' learning curves, for the loss-curve laws (`curves.load_curves`).
    curves_error : str
        Why the curves did not read (the curve laws' reason to be skipped), or "".
    kept : dict, optional
        Receives "chinchilla": the Chinchilla fit with its bootstrap samples
        (`fit.Bootstrapped`), for a later stage that needs the same law on the same runs;
        "samples": {law: {param: array}}, each law's bootstrap parameter samples; and
        "subsample" when the runs were subsampled.

    Returns
    -------
    dict

    Raises
    ------
    InputError
        Unknown fit names, or data that cannot support a requested fit.
    """
    if fits is not None:
        unknown = [f for f in fits if f not in ALL_FITS]
        if unknown:
            raise InputError(f"--fits: unknown {unknown}; accepted: {', '.join(ALL_FITS)}")
        if not fits:
            raise InputError(f"--fits names no fit; accepted: one or more of {', '.join(ALL_FITS)}")
    want = set(ALL_FITS if fits is None else fits) - set(omit)
    explicit = fits is not None
    if not 0 <= n_bootstrap <= MAX_BOOTSTRAP:
        raise InputError(
            f"--bootstrap {n_bootstrap}; accepted: an integer from 0 to {MAX_BOOTSTRAP}"
        )
    check_max_rows(max_rows)
    # Runs that sweep lr or batch size: the laws see the best setting per (N, D); the sweeps
    # themselves fit every run (lr_sweep, batch_sweep).
    swept = tuple(sweeps.swept_columns(df))
    best = sweeps.best_per_point(df, list(swept))
    best, subsampled = stratified_subsample(best, max_rows, seed=seed, label=label)
    N = best["n_params"].to_numpy(dtype=float)
    D = best["n_tokens"].to_numpy(dtype=float)
    frame = Frame(
        df=best,
        full=df,
        swept=swept,
        N=N,
        D=D,
        L=best["loss"].to_numpy(dtype=float),
        C=flops(N, D),
        budget=iso.budget_column(best),
        seed=seed,
        label=label,
        n_bootstrap=n_bootstrap,
        isoflop_minimum=isoflop_minimum,
        heldout_quantile=heldout_quantile,
        curves=tuple(curves),
        curves_error=curves_error,
    )
    if subsampled:
        frame.shared["subsample"] = subsampled
    for law in LAWS:
        if law.name not in want:
            if law.name in omit and law.applies(frame) and kept is not None:
                kept.setdefault("omitted", []).append(law.name)
            continue
        try:
            # By default a law is made only where the data allow it; a law asked for by name
            # is made or refused.
            if not law.applies(frame) and not explicit:
                continue
            frame.blocks[law.name] = law.fit(frame)
        except InputError as exc:
            if explicit or law.required(frame):
                raise
            frame.blocks[law.name] = {"skipped": str(exc)}
    if kept is not None:
        kept.update(frame.shared)
    return dict(frame.blocks)


def check_max_rows(max_rows: int | None) -> None:
    """--max-rows: an integer >= 1, or None (no cap)."""
    if max_rows is not None and max_rows < 1:
        raise InputError(f"--max-rows {max_rows}; accepted: an integer >= 1")


def fits_up_to_date(csv: str | os.PathLike[str]) -> bool:
    """fits.json beside ``csv`` was made from exactly these bytes, and figures/ is not empty.

    `harness run` uses this to skip refitting and replotting when no run was added.
    """
    csv = Path(csv)
    fits, figures = csv.parent / "fits.json", csv.parent / "figures"
    try:
        stored = json.loads(fits.read_text(encoding="utf-8"))["input"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for companion in COMPANIONS:
        table = csv.parent / companion.file
        if table.is_file():  # a fine-tune or task score added or changed since the fit
            try:
                doc = json.loads(fits.read_text(encoding="utf-8"))
                if doc[companion.name]["input"]["sha256"] != sha256_of(table):
                    return False
            except (OSError, ValueError, KeyError, TypeError):
                return False
    return (
        stored == sha256_of(csv)
        and samples_path(fits).is_file()
        and figures.is_dir()
        and any(figures.iterdir())
    )


def group_keys(df: pd.DataFrame, group_by: Sequence[str], csv: Path) -> list[tuple[Any, ...]]:
    missing = [c for c in group_by if c not in df.columns]
    if missing:
        raise InputError(
            f"{csv}: --group-by column(s) {missing} not in the file; accepted: "
            f"{', '.join(c for c in df.columns if c != 'line')}"
        )
    for c in group_by:
        blank = df[c].isna() | (df[c].astype(str).str.strip() == "")
        if blank.any():
            raise InputError(
                f"{csv}: --group-by column {c!r} is blank at "
                f"{line_list(df.loc[blank, 'line'])}; accepted: a value in every row "
                "of the runs fitted"
            )
    return sorted({tuple(r) for r in df[list(group_by)].astype(str).itertuples(index=False)})


REFERENCE_FILE = "corpus.json"
"""Beside runs.csv for a synthetic corpus (`harness.synthetic`): its exact entropy rate."""


def reference_of(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The true loss floor of the corpus, from corpus.json in ``directory``, or None.

    Only a reference: fits never use it, and `reproduce_path` leaves it out of the comparison
    (a CSV copied without corpus.json still reproduces). None where the file is absent or has
    no floor in nats per token (a BPE run's tokens are not the source's symbols).

    Raises
    ------
    InputError
        corpus.json is not valid JSON.
    """
    path = Path(directory) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path}: not valid JSON ({exc}); accepted: the corpus.json "
            "`harness run` writes for a synthetic corpus, or no file"
        ) from None
    floor = doc.get("loss_floor_nats_per_token") if isinstance(doc, dict) else None
    if not isinstance(floor, (int, float)):
        return None
    return {
        "file": REFERENCE_FILE,
        "spec": doc.get("spec"),
        "entropy_rate_nats_per_token": float(floor),
        "entropy_rate_bits_per_byte": doc.get("entropy_rate_bits_per_byte"),
        "window_floor_nats_per_token": doc.get("window_floor_nats_per_token"),
        "seq_len": doc.get("seq_len"),
        "eval_floor_nats_per_token": doc.get("eval_floor_nats_per_token"),
        "eval_tokens": doc.get("eval_tokens"),
    }


class GroupSkipped(UserWarning):
    """A group of a grouped fit has too few runs for the required law: skipped by name."""


N_CONVENTIONS = ("non_embedding", "total")
"""What N counts: non-embedding parameters (Kaplan et al. 2020; the harness's n_params) or all
of them (Hoffmann et al. 2022; Gadre et al. 2024). Laws fitted on one do not transfer to the
other: the embeddings are a large share of small models (half of Gadre et al.'s 411M model)."""


def apply_n_convention(
    df: pd.DataFrame, n_convention: str, column_map: Mapping[str, str] | None, csv: Path
) -> pd.DataFrame:
    """The runs with N counted as ``n_convention`` says. "total" takes the harness's
    n_params_total column where the CSV has one (and --columns does not map n_params itself);
    otherwise n_params is taken to count what the setting says (recorded, not converted).

    Raises
    ------
    InputError
        An unknown convention, or an n_params_total value that is not a number > 0.
    """
    if n_convention not in N_CONVENTIONS:
        raise InputError(f"--n-convention {n_convention!r}; accepted: {', '.join(N_CONVENTIONS)}")
    mapped = bool(column_map and "n_params" in column_map)
    if n_convention != "total" or mapped or "n_params_total" not in df.columns:
        return df
    vals = pd.to_numeric(df["n_params_total"], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(vals) & (vals > 0))
    if bad.any():
        raise InputError(
            f"{csv}: column 'n_params_total' has bad value(s) at "
            f"{line_list(df.loc[bad, 'line'])}; accepted: finite numbers > 0 for "
            "--n-convention total"
        )
    out = df.copy()
    out["n_params"] = vals
    return out


def fits_dict(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    column_map: Mapping[str, str] | None = None,
    group_by: Sequence[str] | None = None,
    fits: Sequence[str] | None = None,
    isoflop_minimum: str = "parabola",
    target_accuracy: float | None = None,
    where: str | None = None,
    samples: dict[str, Any] | None = None,
    n_convention: str = "non_embedding",
    max_rows: int | None = FIT_ROWS_MAX,
    omit: Collection[str] = (),
    omitted: list[str] | None = None,
) -> dict[str, Any]:
    """The fits.json object for a CSV (see `fit_path`), not yet written. ``samples``, when
    given, receives the bootstrap parameter samples as fits.bootstrap.npz holds them
    ("law/param", or "group/law/param" for grouped fits: `harness.analysis.samples`). Laws in
    ``omit`` are not fitted (`reproduce`: a law the stored file has no block of); ``omitted``,
    when given, receives those of them the data would allow.

    Beside "fits", the object holds each companion of the registry whose table lies beside the
    CSV (`registry.COMPANIONS`: "downstream" from a downstream.csv of fine-tunes, with
    settings.target_accuracy; "tasks" from a tasks.csv), each with its table's "input" record.

    Raises
    ------
    InputError
        Bad input (see `load_runs` and `fit_frame`).
    """
    check_max_rows(max_rows)  # before any fit: a grouped fit would read it as each group's
    csv = resolve_csv(path)
    df = load_runs(csv, column_map, where=where)
    n_excluded = int(df.attrs.get("n_excluded", 0))
    group_by = list(group_by or [])
    df = apply_n_convention(df, n_convention, column_map, csv)
    check_one_source(df, group_by, csv)
    settings = {
        "n_convention": n_convention,
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "column_map": dict(column_map or {}),
        "group_by": group_by,
        "fits": None if fits is None else list(fits),
        "isoflop_minimum": isoflop_minimum,
    }
    input_record = {
        "path": csv.name,
        "sha256": sha256_of(csv),
        "n_points": len(df),
        "n_excluded": n_excluded,
    }
    if where:  # absent otherwise, so fits.json files written before --where are unchanged
        settings["where"] = where
        input_record["n_not_selected"] = int(df.attrs["n_not_selected"])
    doc: dict[str, Any] = {"schema": SCHEMA, "input": input_record, "settings": settings}
    # The companions' tables, read (and checked) before the fits: a bad downstream.csv or
    # tasks.csv is refused at once, not after minutes of bootstrap.
    tables = {
        c.name: (table_path, c.load(table_path, where))
        for c in COMPANIONS
        if (table_path := csv.parent / c.file).is_file() and table_path != csv
    }
    kw = dict(
        seed=seed,
        n_bootstrap=n_bootstrap,
        fits=fits,
        isoflop_minimum=isoflop_minimum,
        max_rows=max_rows,
        omit=omit,
    )
    kept: dict[str, Any] = {}
    found: dict[str, Any] = {}
    # Learning curves of the runs, where their metrics.csv lie beside the CSV (a results
    # folder), read before any fit when a curve law is wanted. One that does not read is that
    # law's reason to be skipped (or bad input when it is asked for by name), not the fit's.
    all_curves: list[Any] = []
    curves_error = ""
    if fits is None or {"anneal_curve", "chinchilla_from_curves", "multi_power_curve"} & set(fits):
        try:
            all_curves = load_curves(csv.parent, df)
        except InputError as exc:
            curves_error = str(exc)
    kw["curves_error"] = curves_error
    if not group_by:
        try:
            doc["fits"] = fit_frame(df, kept=kept, curves=all_curves, **kw)  # type: ignore[arg-type]
            if omitted is not None:
                omitted.extend(kept.get("omitted", []))
            if "subsample" in kept:
                doc["subsample"] = kept["subsample"]
            found = {
                f"{law}/{p}": v
                for law, ps in kept.get("samples", {}).items()
                for p, v in ps.items()
            }
        except InputError as exc:  # named with the file, as every other input error is
            msg = str(exc) if str(exc).startswith(str(csv)) else f"{csv}: {exc}"
            if where:
                msg += f" (the {len(df)} runs --where {where!r} selects)"
            raise InputError(msg) from None
    else:
        groups = []
        for key in group_keys(df, group_by, csv):
            sel = (df[group_by].astype(str) == pd.Series(key, index=group_by)).all(axis=1)
            sub = df[sel].reset_index(drop=True)
            label = "|".join(key)
            key_map = dict(zip(group_by, key, strict=True))
            group_kept: dict[str, Any] = {}
            try:
                ids = set(sub["run_id"].astype(str)) if "run_id" in sub.columns else set()
                of_group = [c for c in all_curves if c.run_id in ids]
                body = fit_frame(sub, label=label, kept=group_kept, curves=of_group, **kw)  # type: ignore[arg-type]
            except InputError as exc:
                if fits is not None:  # laws asked for by name: every group must support them
                    raise InputError(f"{csv}: group {key_map}: {exc}") from None
                # A group too small for the required law is skipped by name, not the whole fit
                # (a foreign CSV's groups rarely all have 5 runs).
                why = str(exc).removeprefix(f"{csv}: ")
                warnings.warn(f"{csv}: group {key_map} skipped: {why}", GroupSkipped, stacklevel=2)
                groups.append({"key": key_map, "n_points": len(sub), "fits": {}, "skipped": why})
                continue
            if omitted is not None:
                omitted.extend(k for k in group_kept.get("omitted", []) if k not in omitted)
            for law, ps in group_kept.get("samples", {}).items():
                found.update({f"{label}/{law}/{p}": v for p, v in ps.items()})
            group = {"key": key_map, "n_points": len(sub), "fits": body}
            if "subsample" in group_kept:
                group["subsample"] = group_kept["subsample"]
            groups.append(group)
        if all("skipped" in g for g in groups):
            raise InputError(
                f"{csv}: no group of {group_by} supports a fit (first: {groups[0]['key']}: "
                f"{groups[0]['skipped']}); accepted: groups with enough runs for the laws"
            )
        doc["groups"] = groups
    subsampled = any("subsample" in g for g in doc.get("groups", [doc]))
    if max_rows is not None and (max_rows != FIT_ROWS_MAX or subsampled):
        # Absent otherwise, so fits.json files of ladders below the cap are unchanged.
        settings["max_rows"] = max_rows
    ref = reference_of(csv.parent)
    if ref is not None:  # synthetic corpus: the true entropy rate, for comparison with E
        doc["reference"] = ref
    for companion in COMPANIONS:
        if companion.name in tables:
            table_path, table = tables[companion.name]
            doc[companion.name] = companion.fit(
                Beside(
                    table=table,
                    path=table_path,
                    runs=df,
                    doc=doc,
                    chinchilla=kept.get("chinchilla"),
                    observed_losses=lambda: observed_losses(csv, doc["settings"], df),
                    seed=seed,
                    n_bootstrap=n_bootstrap,
                    target_accuracy=target_accuracy,
                    samples=found,
                )
            )
    if samples is not None:
        samples.update(found)
    return json_clean(doc)


def observed_losses(csv: Path, settings: Mapping[str, Any], df: pd.DataFrame) -> pd.DataFrame:
    """The losses step 2 pairs each accuracy with: every done run of the CSV, N counted as the
    fit counts it (``settings``' column map and N convention), not only those --where fits the
    loss law on: a checkpoint's loss is data about it whichever runs the law is fitted on.
    ``df`` (the runs fitted) where the whole CSV does not read."""
    cmap = settings.get("column_map") or None
    try:
        runs = load_runs(csv, cmap)
        return apply_n_convention(
            runs, str(settings.get("n_convention", "non_embedding")), cmap, csv
        )
    except InputError:
        return df


def fit_path(
    path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    column_map: Mapping[str, str] | None = None,
    group_by: Sequence[str] | None = None,
    fits: Sequence[str] | None = None,
    isoflop_minimum: str = "parabola",
    target_accuracy: float | None = None,
    where: str | None = None,
    n_convention: str = "non_embedding",
    max_rows: int | None = FIT_ROWS_MAX,
) -> Path:
    """Fit the runs in PATH and write fits.json atomically beside the CSV (or at `out`), and
    the bootstrap's parameter samples beside it (fits.bootstrap.npz, `samples`).

    Parameters
    ----------
    path : path-like
        runs.csv, another CSV, or a directory holding runs.csv.
    out : path-like, optional
        Where to write; default ``<csv dir>/fits.json``.
    seed : int
        Bootstrap seed.
    n_bootstrap : int
        Resamples per bootstrap (>= 0).
    column_map : mapping, optional
        {canonical column: the CSV's column}.
    group_by : sequence of str, optional
        Fit each group of these columns separately (fits.json then has "groups").
    fits : sequence of str, optional
        Names from ALL_FITS; default all the data allow.
    isoflop_minimum : {"parabola", "akima"}
        Minimum finder of approach 2.
    target_accuracy : float, optional
        Target of the labels-needed analysis of a downstream.csv beside the CSV.
    where : str, optional
        Fit only the runs this pandas expression selects (`select_rows`); recorded in
        settings, so `reproduce` refits the same rows.
    n_convention : {"non_embedding", "total"}
        What N counts (`N_CONVENTIONS`, `apply_n_convention`); recorded in settings.
    max_rows : int
        Fit the laws on at most this many runs per group (`subsample`); recorded in settings
        when it differs from FIT_ROWS_MAX or a subsample was drawn.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    InputError
        Bad input.
    """
    csv = resolve_csv(path)
    found: dict[str, Any] = {}
    doc = fits_dict(
        csv,
        seed=seed,
        n_bootstrap=n_bootstrap,
        column_map=column_map,
        group_by=group_by,
        fits=fits,
        isoflop_minimum=isoflop_minimum,
        target_accuracy=target_accuracy,
        where=where,
        samples=found,
        n_convention=n_convention,
        max_rows=max_rows,
    )
    target = Path(out) if out is not None else csv.parent / "fits.json"
    # The samples first: a fits.json is never newer than the samples it was summarised from.
    write_samples(samples_path(target), found)
    return atomic_write_json(target, doc)


def _summarize_fits(fits: Mapping[str, Any], indent: str = "") -> list[str]:
    lines = []
    for law in LAWS:
        block = fits.get(law.name)
        if block is None:
            continue
        if "skipped" in block:
            lines.append(f"{indent}{law.name:<16} skipped: {block['skipped']}")
        else:
            lines += [indent + line for line in law.summary(law.name, block)]
    return lines


def summarize(fits: Mapping[str, Any]) -> str:
    """A short human-readable table of a fits.json object (or of its "fits" part).

    Parameters
    ----------
    fits : mapping
        The whole fits.json object, or its "fits" mapping.

    Returns
    -------
    str
    """
    lines = []
    if "input" in fits:
        inp = fits["input"]
        lines.append(
            f"{inp['path']}: {inp['n_points']} runs used, {inp['n_excluded']} excluded "
            "(status not 'done')"
        )
        where = fits.get("settings", {}).get("where")
        if where:
            lines[-1] += f", {inp['n_not_selected']} not selected by --where {where!r}"
        conv = fits.get("settings", {}).get("n_convention", "non_embedding")
        lines.append(f"N counts {'all' if conv == 'total' else 'non-embedding'} parameters")
    if "subsample" in fits:
        lines.append(_subsample_line(fits["subsample"]))
    if "groups" in fits:
        for g in fits["groups"]:
            lines.append(
                ", ".join(f"{k}={v}" for k, v in g["key"].items()) + f" ({g['n_points']} runs)"
            )
            if "skipped" in g:
                lines.append(f"  skipped: {g['skipped']}")
            if "subsample" in g:
                lines.append("  " + _subsample_line(g["subsample"]))
            lines += _summarize_fits(g["fits"], "  ")
    else:
        lines += _summarize_fits(fits.get("fits", fits))
    for companion in COMPANIONS:
        if companion.name in fits:
            lines += companion.summary(fits[companion.name])
    if "reference" in fits:
        lines.append(_reference_line(fits["reference"], fits.get("fits", {})))
    return "\n".join(lines)


def _subsample_line(sub: Mapping[str, Any]) -> str:
    return (
        f"SUBSAMPLE: the laws are fitted on {sub['fitted']} of {sub['rows']} runs "
        f"({sub['method']}; --max-rows); their intervals are those of {sub['fitted']} runs"
    )


def _reference_line(ref: Mapping[str, Any], fits: Mapping[str, Any]) -> str:
    h = ref["entropy_rate_nats_per_token"]
    line = f"true entropy rate H = {h:.4f} nats/token ({ref.get('file')})"
    if ref.get("window_floor_nats_per_token") is not None:
        line += f", floor at seq_len {ref.get('seq_len')}: {ref['window_floor_nats_per_token']:.4f}"
    if ref.get("eval_floor_nats_per_token") is not None:  # the sampled evaluation tokens' floor
        line += (
            f", on the {ref.get('eval_tokens')} evaluation tokens: "
            f"{ref['eval_floor_nats_per_token']:.4f}"
        )
    chin = fits.get("chinchilla", {})
    e = chin.get("params", {}).get("E")
    if e is not None:
        ci = chin.get("ci95", {}).get("E")
        line += f"; chinchilla E - H = {e - h:+.4f}"
        if ci and None not in ci:
            line += f" [{ci[0] - h:+.4f}, {ci[1] - h:+.4f}]"
    return line


def stored_settings(fj: Path, stored: Mapping[str, Any]) -> dict[str, Any]:
    """fits.json's "settings", each of a type `fits_dict` takes; a stored ``where`` must pass
    `where.check_where` (a fits.json is data from elsewhere, never code).

    Raises
    ------
    InputError
        A setting of the wrong type or range, named with the file.
    """
    s = stored.get("settings", {})
    if not isinstance(s, dict):
        raise InputError(
            f"{fj}: settings = {s!r}; accepted: an object (fits.json as written by `harness fit`)"
        )

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def is_strs(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)

    checks = {
        "seed": (is_int, "an integer >= 0"),
        "n_bootstrap": (
            lambda v: is_int(v) and v <= MAX_BOOTSTRAP,
            f"an integer from 0 to {MAX_BOOTSTRAP}",
        ),
        "fits": (
            lambda v: v is None or (is_strs(v) and v and set(v) <= set(ALL_FITS)),
            f"null or a list of names from {', '.join(ALL_FITS)}",
        ),
        "group_by": (lambda v: v is None or is_strs(v), "null or a list of column names"),
        "column_map": (
            lambda v: (
                v is None
                or (
                    isinstance(v, dict)
                    and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
                )
            ),
            "null or an object of column names",
        ),
        "isoflop_minimum": (lambda v: v in ("parabola", "akima"), "'parabola' or 'akima'"),
        "max_rows": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "n_convention": (lambda v: v in N_CONVENTIONS, " or ".join(N_CONVENTIONS)),
        "where": (lambda v: v is None or isinstance(v, str), "null or a row selection"),
        "target_accuracy": (
            lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool)),
            "null or a number",
        ),
    }
    for key, (ok, accepted) in checks.items():
        if key in s and not ok(s[key]):
            raise InputError(f"{fj}: settings.{key} = {s[key]!r}; accepted: {accepted}")
    if s.get("where"):
        check_where(s["where"], f"{fj}: settings.where")
    return s
