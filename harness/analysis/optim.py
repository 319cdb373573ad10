"""Batched L-BFGS in numpy, and the log-space Huber objectives of the scaling-law fits.

Why batched: the Epoch AI replication of Chinchilla's approach 3 (Besiroglu et al. 2024) runs
L-BFGS from each of 4500 starting points, one `scipy.optimize.minimize` call at a time with
numerical gradients (minutes). Here every start is one row of a (k, p) array: one objective
call evaluates all k starts at once on a (k, n) array of residuals with analytic gradients, the
two-loop recursion and the backtracking line search run row-wise in numpy, and rows leave the
active set as soon as they meet the stopping rule. The same code runs a bootstrap: each row
carries its own weights over the data points (resampling counts).

Stopping rule per row, as scipy's L-BFGS-B: max |g| <= gtol, or the relative reduction of f,
(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["BatchResult", "batched_lbfgs", "lse_huber_objective"]

FloatArray = NDArray[np.float64]
# fun(X (k, p), rows (k,) indices into the batch) -> (f (k,), grad (k, p))
Objective = Callable[[FloatArray, NDArray[np.intp]], tuple[FloatArray, FloatArray]]

# Status codes per row.
RUNNING, CONV_GRAD, CONV_F, MAX_ITER, LS_FAIL = 0, 1, 2, 3, 4
MESSAGES = {
    RUNNING: "running",
    CONV_GRAD: "converged: max |gradient| <= gtol",
    CONV_F: "converged: relative reduction of f <= ftol",
    MAX_ITER: "stopped: maximum number of iterations reached",
    LS_FAIL: "stopped: line search found no decrease (precision limit or non-smooth point)",
}


@dataclass(frozen=True)
class BatchResult:
    """Result of `batched_lbfgs`, one row per start."""

    x: FloatArray
    """(k, p) final points."""
    f: FloatArray
    """(k,) final objective values."""
    grad_max: FloatArray
    """(k,) max |gradient| at the final points."""
    status: NDArray[np.int64]
    """(k,) status codes (see MESSAGES)."""
    n_iter: NDArray[np.int64]
    """(k,) iterations taken."""

    @property
    def converged(self) -> NDArray[np.bool_]:
        return (self.status == CONV_GRAD) | (self.status == CONV_F)


def batched_lbfgs(
    fun: Objective,
    x0: FloatArray,
    *,
    m: int = 10,
    max_iter: int = 1000,
    gtol: float = 1e-5,
    ftol: float = 2.220446049250313e-09,
    max_ls: int = 30,
) -> BatchResult:
    """Minimise k independent problems at once with L-BFGS (Nocedal & Wright 2006, alg. 7.4-7.5).

    Parameters
    ----------
    fun : callable
        ``fun(X, rows) -> (f, G)``: X is (j, p), rows the (j,) indices of these rows in the
        batch (so that per-row data such as bootstrap weights can be looked up).
    x0 : ndarray
        (k, p) starting points.
    m : int
        History length (scipy's default is 10).
    max_iter : int
        Iteration limit per row.
    gtol, ftol : float
        Stopping rule (scipy L-BFGS-B's defaults: pgtol=1e-5, factr=1e7 -> ftol=2.2e-9).
    max_ls : int
        Backtracking steps before a row stops with LS_FAIL.

    Returns
    -------
    BatchResult

    Raises
    ------
    ValueError
        If x0 is not a finite 2-D array.
    """
    x0 = np.asarray(x0, dtype=float)
    if x0.ndim != 2 or not np.all(np.isfinite(x0)):
        raise ValueError("batched_lbfgs: x0 must be a finite (k, p) array")
    k, p = x0.shape
    out_x = x0.copy()
    out_f = np.full(k, np.inf)
    out_g = np.full(k, np.inf)
    out_status = np.full(k, RUNNING, dtype=np.int64)
    out_iter = np.zeros(k, dtype=np.int64)

    # State of the rows still in the arrays. Stopped rows are written out at once and marked
    # dead (no more evaluations); the arrays are compacted only when a quarter of them is dead,
    # so that the histories are not copied at every iteration.
    rows = np.arange(k)
    x = x0.copy()
    f, g = fun(x, rows)
    # Histories in a ring shared by all rows: slot (n_iter % m) gets this iteration's pair; a row
    # without a usable pair this iteration (no step, or no positive curvature) gets rho = 0 in
    # that slot, which the two-loop recursion skips.
    S = np.zeros((m, k, p))  # slot-major, so that S[i] is a contiguous (rows, p) block
    Y = np.zeros((m, k, p))
    rho = np.zeros((m, k))  # 1 / (y . s); 0 marks an empty slot
    n_pairs = np.zeros(k, dtype=np.int64)  # usable pairs in the ring per row
    gamma = np.ones(k)  # initial Hessian scaling s.y / y.y of the newest pair
    it = np.zeros(k, dtype=np.int64)
    st = np.full(k, RUNNING, dtype=np.int64)
    finite = np.isfinite(f) & np.all(np.isfinite(g), axis=1)
    st[~finite] = LS_FAIL
    st[finite & (np.max(np.abs(g), axis=1) <= gtol)] = CONV_GRAD
    alive = np.ones(k, dtype=bool)

    for n_it in range(max_iter + 1):
        stop = alive & (st != RUNNING)
        if np.any(stop):
            r_ = rows[stop]
            out_x[r_], out_f[r_] = x[stop], f[stop]
            out_status[r_], out_iter[r_] = st[stop], it[stop]
            out_g[r_] = np.max(np.abs(g[stop]), axis=1)
            alive &= ~stop
        n_alive = int(alive.sum())
        if n_alive == 0:
            break
        if n_alive < 0.75 * rows.size:
            rows, x, f, g = rows[alive], x[alive], f[alive], g[alive]
            S, Y, rho = S[:, alive], Y[:, alive], rho[:, alive]
            gamma, it, st, n_pairs = gamma[alive], it[alive], st[alive], n_pairs[alive]
            alive = np.ones(rows.size, dtype=bool)
        if n_it == max_iter:  # rows still running: write them out as MAX_ITER
            out_x[rows[alive]], out_f[rows[alive]], out_iter[rows[alive]] = (
                x[alive], f[alive], it[alive])
            out_status[rows[alive]] = MAX_ITER
            out_g[rows[alive]] = np.max(np.abs(g[alive]), axis=1)
            break
        j = rows.size
        order = [(n_it - 1 - i) % m for i in range(min(n_it, m))]  # newest slot first
        # Two-loop recursion (Nocedal & Wright 2006, alg. 7.4), vectorised over rows.
        q = g.copy()
        alphas = np.empty((m, j, 1))
        for i in order:
            alphas[i, :, 0] = rho[i] * np.einsum("ij,ij->i", S[i], q)
            q -= alphas[i] * Y[i]
        r = gamma[:, None] * q
        for i in reversed(order):
            b = rho[i] * np.einsum("ij,ij->i", Y[i], r)
            r += S[i] * (alphas[i, :, 0] - b)[:, None]
        d = -r
        slope = np.einsum("ij,ij->i", g, d)
        # Not a descent direction (cannot happen with positive-curvature pairs, but rounding):
        # restart the row from steepest descent with an empty history.
        reset = ~(slope < 0)
        if np.any(reset):
            rho[:, reset] = 0.0
            n_pairs[reset] = 0
            gamma[reset] = 1.0
            d[reset] = -g[reset]
            slope[reset] = -np.einsum("ij,ij->i", g[reset], g[reset])
        # First step of a fresh history: length at most 1 (as L-BFGS-B does).
        t = np.ones(j)
        empty = n_pairs == 0
        if np.any(empty):
            dn = np.linalg.norm(d[empty], axis=1)
            t[empty] = np.minimum(1.0, 1.0 / np.maximum(dn, 1e-300))

        # Batched backtracking line search, Armijo condition with c1 = 1e-4; a rejected step
        # shrinks by safeguarded quadratic interpolation into [0.1 t, 0.5 t].
        x_new = x.copy()
        f_new = np.full(j, np.nan)
        g_new = g.copy()
        pend = np.flatnonzero(alive)
        for _ls in range(max_ls):
            if pend.size == j:  # all rows: no gathers
                xt = x + t[:, None] * d
                ft, gt = fun(xt, rows)
            else:
                xt = x[pend] + t[pend, None] * d[pend]
                ft, gt = fun(xt, rows[pend])
            ok = np.isfinite(ft) & (ft <= f[pend] + 1e-4 * t[pend] * slope[pend])
            ok &= np.all(np.isfinite(gt), axis=1)
            acc = pend[ok]
            x_new[acc], f_new[acc], g_new[acc] = xt[ok], ft[ok], gt[ok]
            if np.all(ok):
                pend = pend[:0]
                break
            rej = ~ok
            pr = pend[rej]
            tt = t[pr]
            denom = 2.0 * (ft[rej] - f[pr] - slope[pr] * tt)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                tq = -slope[pr] * tt * tt / denom
            tq = np.where(np.isfinite(tq), tq, 0.5 * tt)
            t[pr] = np.clip(tq, 0.1 * tt, 0.5 * tt)
            pend = pr
        st[pend] = LS_FAIL
        done = ~np.isnan(f_new)  # rows that took a step (dead rows did not)
        it[done] += 1
        s = x_new - x  # zero where no step
        y = g_new - g
        sy = np.einsum("ij,ij->i", s, y)
        yy = np.einsum("ij,ij->i", y, y)
        f_old = f
        f = np.where(done, f_new, f)
        x, g = x_new, g_new
        # Keep a pair only with positive curvature (Nocedal & Wright 2006, eq. 6.7).
        good = done & (sy > 1e-10 * np.maximum(yy, 1e-300))
        slot = n_it % m
        n_pairs += good.astype(np.int64) - (rho[slot] != 0.0)  # the slot's old pair leaves
        S[slot] = s
        Y[slot] = y
        rho[slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma = np.where(good, sy / np.where(good, yy, 1.0), gamma)
        gmax = np.max(np.abs(g), axis=1)
        rel = (f_old - f) / np.maximum(np.maximum(np.abs(f_old), np.abs(f)), 1.0)
        new_st = np.where(gmax <= gtol, CONV_GRAD, np.where(rel <= ftol, CONV_F, RUNNING))
        st = np.where(done, new_st, st)
    return BatchResult(x=out_x, f=out_f, grad_max=out_g, status=out_status, n_iter=out_iter)


def lse_huber_objective(
    logx: FloatArray,
    logy: FloatArray,
    weights: FloatArray | None,
    delta: float,
    *,
    chunk_elements: int = 32768,
) -> Objective:
    """Huber loss summed over log-space residuals of a log-sum-exp law.

    The law is log L = LSE(a_1 - alpha_1 log x_1, ..., a_K - alpha_K log x_K, e), i.e.
    L = E + sum_k A_k x_k^-alpha_k with A_k = exp(a_k), E = exp(e): for K = 2 this is
    Chinchilla's approach 3 as fitted by Hoffmann et al. 2022 (eq. 2 and appendix D.2) and
    Besiroglu et al. 2024; for K = 1 a power law with offset. Parameter layout per row:
    [a_1..a_K, alpha_1..alpha_K, e]. Objective: sum_i w_i Huber_delta(log L_i - LSE_i).

    Rows are evaluated in chunks of about `chunk_elements` / n rows so that the work arrays stay
    in cache.
    The log-sum-exp is shifted by one constant per row, the largest value any term takes over
    the data (analytic: each term is linear in log x), so that no exp overflows; a chunk with a
    row where some point has all its terms more than 100 nats below that shift falls back to a
    per-point shift. Shifted exponents are clamped at -160: at every point some term is at
    least exp(-100), so the clamp changes sums by a relative exp(-60) (far below double
    precision) and keeps denormal numbers, which are ~100x slower, out of the products.

    Parameters
    ----------
    logx : ndarray
        (n, K) logs of the regressors (log N, log D).
    logy : ndarray
        (n,) log of the observed loss.
    weights : ndarray or None
        (k, n) per-row weights (bootstrap counts), or None for all ones.
    delta : float
        Huber threshold (1e-3 in Hoffmann et al. 2022 and Besiroglu et al. 2024).
    chunk_elements : int
        Rows times points per evaluation block.

    Returns
    -------
    callable
        ``fun(X, rows) -> (f, G)`` for `batched_lbfgs`.
    """
    logx = np.asarray(logx, dtype=float)
    logy = np.asarray(logy, dtype=float)
    n, K = logx.shape
    xt = np.ascontiguousarray(logx.T)  # (K, n)
    xlo, xhi = xt.min(axis=1), xt.max(axis=1)
    chunk = max(16, chunk_elements // max(n, 1))

    def block(X: FloatArray, w: FloatArray | None) -> tuple[FloatArray, FloatArray]:
        j = X.shape[0]
        a, al, e = X[:, :K], X[:, K : 2 * K], X[:, 2 * K]
        # Largest and smallest value of each term a_k - alpha_k log x_k over the data.
        zhi = a - np.minimum(al * xlo, al * xhi)
        zlo = a - np.maximum(al * xlo, al * xhi)
        c = np.maximum(zhi.max(axis=1), e)  # (j,) shift
        stable = np.all(np.maximum(zlo.max(axis=1), e) - c > -100.0)
        G = np.empty((j, 2 * K + 1))
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            if stable:
                Ez = np.empty((K, j, n))
                for kk in range(K):
                    np.multiply(al[:, kk, None], xt[kk], out=Ez[kk])
                    np.subtract((a[:, kk] - c)[:, None], Ez[kk], out=Ez[kk])
                    np.maximum(Ez[kk], -160.0, out=Ez[kk])  # see the docstring: no denormals
                    np.exp(Ez[kk], out=Ez[kk])
                E0 = np.exp(e - c)[:, None]  # (j, 1)
                s = Ez.sum(axis=0)
                s += E0
                r = np.log(s)
                r += c[:, None]
            else:  # per-point shift
                Z = a.T[:, :, None] - al.T[:, :, None] * xt[:, None, :]  # (K, j, n)
                mx = np.maximum(Z.max(axis=0), e[:, None])  # (j, n)
                Ez = np.exp(np.maximum(Z - mx[None], -160.0))
                E0 = np.exp(np.maximum(e[:, None] - mx, -160.0))  # (j, n)
                s = Ez.sum(axis=0) + E0
                r = np.log(s) + mx
            np.subtract(logy, r, out=r)  # residuals log L - LSE, (j, n)
            psi = np.clip(r, -delta, delta)  # Huber'(r)
            if w is not None:
                psi *= w
            # sum w Huber(r) = sum w psi (r - psi/2) with psi = clip(r): r^2/2 inside, delta
            # (|r| - delta/2) outside.
            f = np.einsum("jn,jn->j", psi, r)
            if w is None:
                f -= 0.5 * np.einsum("jn,jn->j", psi, psi)
            else:
                f -= 0.5 * np.einsum("jn,jn->j", psi, psi / np.where(w == 0, 1.0, w))
            psi /= s  # now dF/dr / s: the softmax weight of term k at a point is Ez_k / s
            for kk in range(K):
                U = Ez[kk] * psi  # (j, n)
                G[:, kk] = -U.sum(axis=1)  # dr/da_k = -p_k
                G[:, K + kk] = U @ xt[kk]  # dr/dalpha_k = p_k log x_k
            if stable:
                G[:, 2 * K] = -E0[:, 0] * psi.sum(axis=1)  # dr/de = -p_0
            else:
                G[:, 2 * K] = -(E0 * psi).sum(axis=1)
        return f, G

    def fun(X: FloatArray, rows: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        j = X.shape[0]
        f = np.empty(j)
        G = np.empty((j, 2 * K + 1))
        for lo in range(0, j, chunk):
            hi = min(lo + chunk, j)
            w = None if weights is None else weights[rows[lo:hi]]
            f[lo:hi], G[lo:hi] = block(X[lo:hi], w)
        return f, G

    return fun
