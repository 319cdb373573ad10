"""Helpers every part of the analysis shares: formatting, intervals, resampling, JSON.

One place for them, public, so no module reaches into another's private names.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from harness.errors import InputError

__all__ = [
    "JSON_DIGITS",
    "MAX_BOOTSTRAP",
    "MAX_JSON_DEPTH",
    "read_fits_json",
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
MAX_BOOTSTRAP = 100_000
"""The most resamples a fit takes (or a stored fits.json may ask reproduce for): memory and time
grow with it, and 1000 already puts an interval end's Monte Carlo error well below its width."""
MAX_JSON_DEPTH = 32
"""fits.json nests 6 levels deep; a stored file nested deeper is not one `harness fit` wrote."""
MAX_JSON_BYTES = 64 * 2**20
"""The largest fits.json read (the largest committed one is under 1 MB)."""


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
    """InputError unless 1 <= n_resamples <= MAX_BOOTSTRAP (every bootstrap's check)."""
    if not 1 <= n_resamples <= MAX_BOOTSTRAP:
        raise InputError(
            f"n_bootstrap={n_resamples}; accepted: an integer from 1 to {MAX_BOOTSTRAP}"
        )


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, iteratively (no recursion to exhaust)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_JSON_DEPTH:
            break
        if isinstance(node, Mapping):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def _check_block(path: Any, where: str, block: Any) -> None:
    """A law block's fields that consumers index: ``params`` numbers (or null), ``undetermined``
    an object of reasons (a list of names in older data-constrained blocks), ``n_bootstrap``
    an integer in range."""
    if not isinstance(block, Mapping):
        return
    params = block.get("params")
    if params is not None:
        ok = isinstance(params, Mapping) and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            for v in params.values()
        )
        if not ok:
            raise InputError(
                f"{path}: {where}.params = {str(params)[:80]!r}; accepted: an object of numbers"
            )
    und = block.get("undetermined")
    if und is not None and not (
        (isinstance(und, Mapping) and all(isinstance(v, str) for v in und.values()))
        or (isinstance(und, list) and all(isinstance(v, str) for v in und))
    ):
        raise InputError(
            f"{path}: {where}.undetermined = {str(und)[:80]!r}; accepted: an object "
            "{quantity: reason}"
        )
    nb = block.get("n_bootstrap")
    if nb is not None and not (
        isinstance(nb, int) and not isinstance(nb, bool) and 0 <= nb <= MAX_BOOTSTRAP
    ):
        raise InputError(
            f"{path}: {where}.n_bootstrap = {nb!r}; accepted: an integer from 0 to {MAX_BOOTSTRAP}"
        )
    if "sizes" in block:
        _check_sizes(path, where, block["sizes"])


def _check_sizes(path: Any, where: str, sizes: Any) -> None:
    """A per-size law's blocks (`registry.anneal_curve`, `multi_power_curve`): keyed by N, each
    skipped with a reason or a law block whose momentum, counts and schedule settings are of the
    types read."""

    def bad(at: str, value: Any, accepted: str) -> InputError:
        return InputError(f"{path}: {at} = {str(value)[:80]!r}; accepted: {accepted}")

    if not isinstance(sizes, Mapping):
        raise bad(f"{where}.sizes", sizes, "an object of per-size blocks keyed by N")
    for key, b in sizes.items():
        at = f"{where}.sizes.{key}"
        try:
            ok_key = math.isfinite(float(key)) and float(key) > 0
        except ValueError:
            ok_key = False
        if not ok_key:
            raise bad(f"{where}.sizes", key, "keys that are model sizes N > 0")
        if not isinstance(b, Mapping):
            raise bad(at, b, "a law block or a skipped one")
        if "skipped" in b:
            continue
        _check_block(path, at, b)
        if not isinstance(b.get("params"), Mapping) or not isinstance(b.get("undetermined", {}),
                                                                      Mapping):  # fmt: skip
            raise bad(at, b.get("params"), "params and undetermined as objects")
        decay = b.get("decay", 0.0)  # the annealing law's momentum; the multi-power has none
        if not (_is_number(decay) and 0 <= decay < 1):
            raise bad(f"{at}.decay", decay, "a number in [0, 1)")
        for k in ("max_steps", "min_steps", "batch_tokens", "dof"):
            v = b.get(k, 0)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise bad(f"{at}.{k}", v, "an integer >= 0")
        sched = b.get("schedule", {})
        if not isinstance(sched, Mapping) or not all(
            _is_number(v) if k not in ("decay_shape", "schedule") else isinstance(v, str)
            for k, v in sched.items()
        ):
            raise bad(f"{at}.schedule", sched, "an object of the runs' schedule settings")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def read_fits_json(path: Any, schema: int = 1) -> dict[str, Any]:
    """A stored fits.json, read as data from elsewhere: its size, JSON, nesting depth, schema
    and the fields of every law block that consumers index are checked before any use.

    Raises
    ------
    InputError
        One line naming the file, what is wrong and what is accepted.
    """
    p = Path(path)
    try:
        if p.stat().st_size > MAX_JSON_BYTES:
            raise InputError(
                f"{p}: {p.stat().st_size} bytes; accepted: a fits.json of at most "
                f"{MAX_JSON_BYTES} bytes"
            )
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such file; run `harness fit` first") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise InputError(
            f"{p}: nested too deeply to read; accepted: a fits.json as `harness fit` writes"
        ) from None
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"{p}: schema {found!r}; accepted: schema {schema}")
    if _depth(doc) > MAX_JSON_DEPTH:
        raise InputError(
            f"{p}: nested deeper than {MAX_JSON_DEPTH} levels; accepted: a fits.json as "
            "`harness fit` writes"
        )
    blocks: list[tuple[str, Any]] = []
    fits = doc.get("fits")
    if isinstance(fits, Mapping):
        blocks += [(f"fits.{k}", b) for k, b in fits.items()]
    _check_subsample(p, "subsample", doc)
    for i, g in enumerate(doc.get("groups") or []):
        if isinstance(g, Mapping) and isinstance(g.get("fits"), Mapping):
            blocks += [(f"groups[{i}].fits.{k}", b) for k, b in g["fits"].items()]
        if isinstance(g, Mapping):
            _check_subsample(p, f"groups[{i}].subsample", g)
    tasks = doc.get("tasks")
    if tasks is not None:
        if not isinstance(tasks, Mapping) or not isinstance(tasks.get("tasks", {}), Mapping):
            raise InputError(f"{p}: tasks = {str(tasks)[:80]!r}; accepted: an object of tasks")
        for name, t in tasks.get("tasks", {}).items():
            _check_task(p, f"tasks.tasks.{name}", t)
            if isinstance(t, Mapping):
                blocks += [(f"tasks.tasks.{name}.{k}", t.get(k)) for k in ("step1", "step2")]
                blocks.append((f"tasks.tasks.{name}.prediction", t.get("prediction")))
    for where, block in blocks:
        _check_block(p, where, block)
    return doc


def _check_subsample(path: Any, where: str, holder: Mapping[str, Any]) -> None:
    """The record of a subsampled fit (`subsample.stratified_subsample`), where there is one."""
    if "subsample" not in holder:
        return
    sub = holder["subsample"]

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if not (
        isinstance(sub, Mapping)
        and count(sub.get("rows"))
        and count(sub.get("fitted"))
        and isinstance(sub.get("method"), str)
    ):
        raise InputError(
            f"{path}: {where} = {str(sub)[:80]!r}; accepted: an object of rows and fitted "
            "(integers >= 1) and method (text), as `harness fit` writes"
        )


def _check_task(path: Any, where: str, t: Any) -> None:
    """A task block of fits.json's "tasks" (`taskscale`): skipped with a reason, or its steps
    with their source, form and chance of the types `harness predict --task` reads."""
    if isinstance(t, Mapping) and isinstance(t.get("skipped"), str):
        return
    ok = (
        isinstance(t, Mapping)
        and isinstance(t.get("step1"), Mapping)
        and isinstance(t["step1"].get("source"), str)
        and isinstance(t.get("step2"), Mapping)
        and t["step2"].get("form") in ("sigmoid", "exponential")
        and (t.get("chance") is None or (isinstance(t["chance"], (int, float))
                                          and not isinstance(t["chance"], bool)))
    )  # fmt: skip
    if not ok:
        raise InputError(
            f"{path}: {where} = {str(t)[:80]!r}; accepted: a task block as `harness fit` writes "
            "(step1 with a source, step2 with a form, a numeric or null chance)"
        )


def resample_weights(
    n: int, n_resamples: int, rng: np.random.Generator, groups: Any = None
) -> NDArray[np.float64]:
    """(n_resamples, n) counts of each point in a resample of n points with replacement.

    With ``groups`` (one label per point), whole groups are resampled (a cluster bootstrap):
    the checkpoints of one run are not independent evaluations, and resampling them one by
    one would make intervals too narrow. Each point then counts as often as its group is drawn.
    """
    if groups is None:
        idx = rng.integers(0, n, size=(n_resamples, n))
        W = np.zeros((n_resamples, n))
        np.add.at(W, (np.repeat(np.arange(n_resamples), n), idx.ravel()), 1.0)
        return W
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    k = int(inverse.max()) + 1
    G = resample_weights(k, n_resamples, rng)
    return G[:, inverse]


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
