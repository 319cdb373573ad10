"""Helpers every part of the analysis shares: formatting, intervals, resampling, JSON.

One place for them, public, so no module reaches into another's private names.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from harness.errors import InputError

__all__ = [
    "JSON_DIGITS",
    "check_n_resamples",
    "ci95",
    "fmt",
    "inside",
    "json_clean",
    "json_num",
    "resample_weights",
    "rng_for",
]

JSON_DIGITS = 10
"""Significant digits kept in fits.json: the same numbers give the same bytes."""


def fmt(x: Any) -> str:
    """A value in a printed summary: '-' for None, floats to 4 significant digits."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def ci95(values: Iterable[float]) -> list[float]:
    """Percentile 95% interval [2.5%, 97.5%] of bootstrap values, non-finite ones left out;
    [nan, nan] when none is finite."""
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(v, [2.5, 97.5])
    return [float(lo), float(hi)]


def inside(x: float | None, interval: list[float | None]) -> bool:
    """Whether x lies in [lo, hi]; False when any of them is missing (None, as JSON's null)."""
    lo, hi = interval
    return x is not None and lo is not None and hi is not None and lo <= x <= hi


def check_n_resamples(n_resamples: int) -> None:
    """InputError unless n_resamples >= 1 (the check of every bootstrap in the analysis)."""
    if n_resamples < 1:
        raise InputError(f"n_bootstrap={n_resamples}; accepted: an integer >= 1")


def resample_weights(n: int, n_resamples: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """(n_resamples, n) counts of each point in a resample of n points with replacement."""
    idx = rng.integers(0, n, size=(n_resamples, n))
    W = np.zeros((n_resamples, n))
    np.add.at(W, (np.repeat(np.arange(n_resamples), n), idx.ravel()), 1.0)
    return W


def json_num(x: float) -> float | None:
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{JSON_DIGITS}g}")


def json_clean(obj: Any) -> Any:
    """Plain JSON: floats rounded, numpy scalars converted, tuples to lists, keys as str."""
    if isinstance(obj, Mapping):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return json_num(float(obj))
    return obj


def rng_for(seed: int, label: str) -> np.random.Generator:
    # One stream per fit and group, so that adding a fit does not move the others' numbers.
    return np.random.default_rng([seed, zlib.crc32(label.encode())])
