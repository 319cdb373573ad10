"""A size law from learning curves: Chinchilla's L(N, D) fitted to the final losses that each
size's annealing law (`curves`) implies, so that a grid of k sizes with one long run each gives
an approach-3 fit without k x m runs (issue 33).

Each fitted size contributes `BUDGETS_PER_SIZE` points: D log-spaced over the updates its runs'
evaluations cover (from the earliest evaluated update to the longest run, times the tokens per
update), each the final loss of a cosine run of D tokens with the size's own peak rate, floor
and warmup (what Hoffmann et al.'s grid trained: a schedule matched to each D). The implied
points are then fitted as approach 3 is (`fit.fit_chinchilla`). The interval carries the
curve laws' uncertainty: resample b takes the b-th bootstrap sample of every size's law,
recomputes the implied points and refits, warm-started from the full fit, all resamples at
once in one batched L-BFGS (`_per_row_objective`); the one failure rule of every law applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from harness.analysis import fit as ft
from harness.analysis import optim
from harness.analysis.curves import anneal_loss, areas

__all__ = [
    "BUDGETS_PER_SIZE",
    "bootstrap_implied",
    "implied_points",
    "sizes_with_samples",
    "usable_sizes",
]

FloatArray = NDArray[np.float64]

BUDGETS_PER_SIZE = 6


def _steps(block: Mapping[str, Any]) -> NDArray[np.int64]:
    lo, hi = int(block["min_steps"]), int(block["max_steps"])
    return np.unique(np.geomspace(max(lo, 1), max(hi, 1), BUDGETS_PER_SIZE).round().astype(int))


def usable_sizes(sizes: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The fitted sizes whose runs recorded what implied points need: tokens per update, the
    schedule settings and the span of evaluated updates."""
    need = ("peak_lr", "min_lr_ratio", "warmup_tokens", "warmup_fraction", "decay_fraction")
    return {
        k: b
        for k, b in sizes.items()
        if isinstance(b, Mapping)
        and "params" in b
        and b.get("batch_tokens")
        and b.get("min_steps")
        and b.get("max_steps")
        and all(n in (b.get("schedule") or {}) for n in need)
    }


def _end_areas(block: Mapping[str, Any]) -> tuple[FloatArray, FloatArray]:
    """S1 and S2 at the end of a cosine run of each of the size's budgets: what its implied
    losses are a function of, whichever sample of its law they are computed with."""
    from harness.analysis.curve_predict import schedule_lrs

    settings = {**block["schedule"], "batch_tokens": block["batch_tokens"]}
    ends = []
    for n_steps in _steps(block):
        s1, s2 = areas(schedule_lrs(int(n_steps), "cosine", settings, None), float(block["decay"]))
        ends.append((s1[-1], s2[-1]))
    s1_end, s2_end = (np.array(v) for v in zip(*ends, strict=True))
    return s1_end, s2_end


def implied_points(
    sizes: Mapping[str, Mapping[str, Any]],
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(N, D, L): each usable size's implied final losses at its budgets (module docstring)."""
    n, d, loss = [], [], []
    for label, b in sizes.items():
        steps = _steps(b)
        n += [float(label)] * steps.size
        d += (steps * int(b["batch_tokens"])).astype(float).tolist()
        loss += anneal_loss(*_end_areas(b), **b["params"]).tolist()
    return np.array(n), np.array(d), np.array(loss)


def _per_row_objective(logx: FloatArray, logy: FloatArray, delta: float) -> optim.Objective:
    """Approach 3's summed Huber objective (`optim.lse_huber_objective`) with targets that
    differ per row: row r of the batch fits ``logy[r]`` (resample r's implied losses)."""
    logn, logd = logx[:, 0][None], logx[:, 1][None]

    def fun(X: FloatArray, rows: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        a, b, alpha, beta, e = (X[:, i, None] for i in range(5))
        shape = (X.shape[0], logn.shape[1])
        z = np.stack([a - alpha * logn, b - beta * logd, np.broadcast_to(e, shape)])
        mx = z.max(axis=0)
        w = np.exp(z - mx)
        s = w.sum(axis=0)
        pred = mx + np.log(s)
        p = w / s
        r = logy[rows] - pred
        f, psi = optim.huber_sum(r, delta)
        G = np.empty((X.shape[0], 5))
        G[:, 0] = -(psi * p[0]).sum(axis=1)
        G[:, 1] = -(psi * p[1]).sum(axis=1)
        G[:, 2] = (psi * p[0] * logn).sum(axis=1)
        G[:, 3] = (psi * p[1] * logd).sum(axis=1)
        G[:, 4] = -(psi * p[2]).sum(axis=1)
        return f, G

    return fun


def bootstrap_implied(
    sizes: Mapping[str, Mapping[str, Any]],
    samples: Mapping[str, Mapping[str, FloatArray]],
    fitted: ft.FitResult,
    n_resamples: int,
    delta: float = 1e-3,
) -> tuple[list[dict[str, float]], int]:
    """The Chinchilla fit of resample b for b < ``n_resamples``: every size's b-th curve-law
    sample (cycled where a size kept fewer), its implied points refitted. Returns the kept
    parameter samples and the number that failed (`fit.kept_resamples`)."""
    N, D, _ = implied_points(sizes)
    logx = np.column_stack([np.log(N), np.log(D)])
    cols = []  # (n_resamples, budgets) per size, the sizes in implied_points' order
    for label, block in sizes.items():
        s = samples[label]
        k = np.arange(n_resamples) % len(next(iter(s.values())))
        p = {q: np.asarray(s[q], dtype=float)[k, None] for q in ("L0", "A", "alpha", "C")}
        s1_end, s2_end = _end_areas(block)
        cols.append(anneal_loss(s1_end[None], s2_end[None], **p))
    logy = np.log(np.maximum(np.hstack(cols), 1e-300))
    ok_rows = np.all(np.isfinite(logy), axis=1)
    logy = np.where(np.isfinite(logy), logy, 0.0)
    x0 = np.tile(np.asarray(fitted.candidates[0], dtype=float), (n_resamples, 1))
    res = optim.batched_lbfgs(
        _per_row_objective(logx, logy, delta), x0, gtol=1e-7, ftol=1e-13, max_iter=500
    )
    conv = (res.converged | (res.grad_max <= 1e-5)) & ok_rows
    return ft.kept_resamples(res.x, conv, ft.chinchilla_params, "chinchilla")


def sizes_with_samples(
    sizes: Mapping[str, Mapping[str, Any]], shared: Mapping[str, Any], law: str
) -> tuple[dict[str, Mapping[str, Any]], dict[str, dict[str, FloatArray]]]:
    """The usable sizes that also have bootstrap samples in ``shared["samples"]``."""
    kept = shared.get("samples", {})
    out_sizes, out_samples = {}, {}
    for label, b in sizes.items():
        s = kept.get(f"{law}/{label}")
        if s and all(len(v) for v in s.values()):
            out_sizes[label], out_samples[label] = b, dict(s)
    return out_sizes, out_samples
