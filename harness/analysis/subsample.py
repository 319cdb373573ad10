"""Fitting a large CSV on a stated, stratified subsample of its runs.

Every law is fitted by a batched multi-start L-BFGS over all rows at once, then refitted on each
bootstrap resample: the work grows as rows x starts x resamples. A ladder of a few hundred runs
fits in tens of seconds on 2 cores; 100,000 rows would take hours and gigabytes. Beyond
`FIT_ROWS_MAX` rows (the CLI's ``--max-rows``) the laws are fitted on a subsample, and
fits.json and the summary say so.

The subsample is systematic over compute: rows are ordered by C = 6ND (then N), cut into
``k`` consecutive strata of near-equal size, and one row is drawn from each at random. This
keeps the whole range of C, including both ends (which the extrapolation depends on), in
proportion to where the runs lie, unlike a simple random draw that can miss the few largest
runs. The bootstrap intervals are then those of ``k`` runs: wider than all the rows would
give, never narrower.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.common import rng_for

__all__ = ["FIT_ROWS_MAX", "SUBSAMPLE_METHOD", "stratified_subsample"]

FIT_ROWS_MAX = 500
"""Rows fitted at most by default: the committed bench/bench_fit_rows.py measures a 100,000-row
CSV fitted with the default bootstrap in under a minute on 2 cores at this size."""

SUBSAMPLE_METHOD = "one run drawn at random from each of k consecutive strata of 6ND"


def stratified_subsample(
    df: pd.DataFrame, k: int | None, *, seed: int, label: str = ""
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """At most ``k`` rows of ``df``, one from each of k strata of C = 6ND, in the input order.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows with n_params and n_tokens.
    k : int or None
        Rows kept (>= 1). ``df`` itself is returned when it has at most k rows, or k is None
        (no cap: a fits.json written before the cap existed fitted every row).
    seed, label : int, str
        The draw's random stream (`common.rng_for`, with the group's label): the same CSV and
        settings give the same subsample on any machine.

    Returns
    -------
    (pandas.DataFrame, dict)
        The rows, and the record fits.json keeps ({"rows", "fitted", "method"}; empty when no
        row was left out).
    """
    if k is None or len(df) <= k:
        return df, {}
    n = df["n_params"].to_numpy(float)
    d = df["n_tokens"].to_numpy(float)
    order = np.lexsort((np.log(n), np.log(n) + np.log(d)))  # by log C, then log N
    rng = rng_for(seed, label + "subsample")
    picks = [int(s[rng.integers(s.size)]) for s in np.array_split(order, k)]
    out = df.iloc[np.sort(picks)].reset_index(drop=True)
    out.attrs.update(df.attrs)
    return out, {"rows": len(df), "fitted": k, "method": SUBSAMPLE_METHOD}
