"""Batched L-BFGS in numpy, and the log-space Huber objectives of the scaling-law fits.

Why batched: the Epoch AI replication of Chinchilla's approach 3 (Besiroglu et al. 2024) runs
L-BFGS from each of 4500 starting points, one `scipy.optimize.minimize` call at a time with
numerical gradients (minutes). Here every start is one row of a (k, p) array: one objective
call evaluates all k starts at once on a (k, n) array of residuals with analytic gradients, the
two-loop recursion and the backtracking line search run row-wise in numpy, and rows leave the
active set as soon as they meet the stopping rule. The same code runs a bootstrap: each row
carries its own weights over the data points (resampling counts).

Stopping rule per row, as scipy's L-BFGS-B: max |g| <= gtol, or the relative reduction of f,
(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol; optionally (drop_after), rows far above
the best row are dropped early.

Internally the state is parameter-major, (p, k): the vector operations of the two-loop
recursion and the line search then run along the rows, not along the 3-5 parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["BatchResult", "batched_lbfgs", "huber_sum", "lse_huber_objective"]

FloatArray = NDArray[np.float64]
# fun(X (k, p), rows (k,) indices into the batch) -> (f (k,), grad (k, p))
Objective = Callable[[FloatArray, NDArray[np.intp]], tuple[FloatArray, FloatArray]]

# Status codes per row.
RUNNING, CONV_GRAD, CONV_F, MAX_ITER, LS_FAIL, DROPPED = 0, 1, 2, 3, 4, 5
MESSAGES = {
    RUNNING: "running",
    CONV_GRAD: "converged: max |gradient| <= gtol",
    CONV_F: "converged: relative reduction of f <= ftol",
    MAX_ITER: "stopped: maximum number of iterations reached",
    LS_FAIL: "stopped: line search found no decrease (precision limit or non-smooth point)",
    DROPPED: "stopped early: objective far above the best of the batch",
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
    drop_after: int | None = None,
    drop_every: int = 5,
    drop_factor: float = 10.0,
    drop_margin: float = 0.0,
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
    drop_after, drop_every, drop_factor, drop_margin
        Early dropping (off when drop_after is None): at iteration drop_after and every
        drop_every iterations after it, a running row whose objective is above
        drop_factor * best + drop_margin (best: the lowest objective of any row so far) stops
        with status DROPPED. Every row still starts and takes drop_after iterations; the rows
        dropped are those that have stayed far above the best, where a multi-start fit spends
        most of its iterations on optima it will not keep.

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

    def evaluate(xt: FloatArray, r: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        ft, gt = fun(np.ascontiguousarray(xt.T), r)
        return ft, np.ascontiguousarray(gt.T)

    def dot(u: FloatArray, v: FloatArray) -> FloatArray:
        return np.einsum("ij,ij->j", u, v)

    # State of the rows still in the arrays, parameter-major: x[:, i] is row i's point, so that
    # every vector operation runs over the rows (long, contiguous) and not over the p = 3..5
    # parameters (a row-wise dot product over p is ~5x slower). Stopped rows are written out at
    # once and marked dead (no more evaluations); the arrays are compacted only when a quarter
    # of them is dead, so that the histories are not copied at every iteration.
    rows = np.arange(k)
    x = np.ascontiguousarray(x0.T)
    f, g = evaluate(x, rows)
    # Histories in a ring shared by all rows: slot (n_iter % m) gets this iteration's pair; a row
    # without a usable pair this iteration (no step, or no positive curvature) gets rho = 0 in
    # that slot, which the two-loop recursion skips.
    S = np.zeros((m, p, k))
    Y = np.zeros((m, p, k))
    rho = np.zeros((m, k))  # 1 / (y . s); 0 marks an empty slot
    n_pairs = np.zeros(k, dtype=np.int64)  # usable pairs in the ring per row
    gamma = np.ones(k)  # initial Hessian scaling s.y / y.y of the newest pair
    it = np.zeros(k, dtype=np.int64)
    st = np.full(k, RUNNING, dtype=np.int64)
    finite = np.isfinite(f) & np.all(np.isfinite(g), axis=0)
    st[~finite] = LS_FAIL
    st[finite & (np.max(np.abs(g), axis=0) <= gtol)] = CONV_GRAD
    alive = np.ones(k, dtype=bool)
    best = np.inf  # lowest objective of any row so far

    for n_it in range(max_iter + 1):
        if drop_after is not None and n_it >= drop_after and (n_it - drop_after) % drop_every == 0:
            fa = f[alive]
            best = min(
                best,
                float(np.min(fa, where=np.isfinite(fa), initial=np.inf)),
                float(np.min(out_f, where=np.isfinite(out_f), initial=np.inf)),
            )
            st[alive & (st == RUNNING) & (f > drop_factor * best + drop_margin)] = DROPPED
        stop = alive & (st != RUNNING)
        if np.any(stop):
            r_ = rows[stop]
            out_x[r_], out_f[r_] = x[:, stop].T, f[stop]
            out_status[r_], out_iter[r_] = st[stop], it[stop]
            out_g[r_] = np.max(np.abs(g[:, stop]), axis=0)
            alive &= ~stop
        n_alive = int(alive.sum())
        if n_alive == 0:
            break
        if n_alive < 0.75 * rows.size:
            rows, x, f, g = rows[alive], x[:, alive], f[alive], g[:, alive]
            S, Y, rho = S[:, :, alive], Y[:, :, alive], rho[:, alive]
            gamma, it, st, n_pairs = gamma[alive], it[alive], st[alive], n_pairs[alive]
            alive = np.ones(rows.size, dtype=bool)
        if n_it == max_iter:  # rows still running: write them out as MAX_ITER
            r_ = rows[alive]
            out_x[r_], out_f[r_], out_iter[r_] = x[:, alive].T, f[alive], it[alive]
            out_status[r_] = MAX_ITER
            out_g[r_] = np.max(np.abs(g[:, alive]), axis=0)
            break
        j = rows.size
        order = [(n_it - 1 - i) % m for i in range(min(n_it, m))]  # newest slot first
        # Two-loop recursion (Nocedal & Wright 2006, alg. 7.4), vectorised over rows.
        q = g.copy()
        tmp = np.empty((p, j))
        alphas = np.empty((m, j))
        for i in order:
            np.multiply(rho[i], dot(S[i], q), out=alphas[i])
            q -= np.multiply(Y[i], alphas[i], out=tmp)
        r = np.multiply(q, gamma, out=q)
        for i in reversed(order):
            b = np.multiply(rho[i], dot(Y[i], r))
            np.subtract(alphas[i], b, out=b)
            r += np.multiply(S[i], b, out=tmp)
        d = np.negative(r, out=r)
        slope = dot(g, d)
        # Not a descent direction (cannot happen with positive-curvature pairs, but rounding):
        # restart the row from steepest descent with an empty history.
        reset = ~(slope < 0)
        if np.any(reset):
            rho[:, reset] = 0.0
            n_pairs[reset] = 0
            gamma[reset] = 1.0
            d[:, reset] = -g[:, reset]
            slope[reset] = -dot(g[:, reset], g[:, reset])
        # First step of a fresh history: length at most 1 (as L-BFGS-B does).
        t = np.ones(j)
        empty = n_pairs == 0
        if np.any(empty):
            dn = np.sqrt(dot(d[:, empty], d[:, empty]))
            t[empty] = np.minimum(1.0, 1.0 / np.maximum(dn, 1e-300))

        # Batched backtracking line search, Armijo condition with c1 = 1e-4; a rejected step
        # shrinks by safeguarded quadratic interpolation into [0.1 t, 0.5 t].
        x_new = x.copy()
        f_new = np.full(j, np.nan)
        g_new = g.copy()
        pend = np.flatnonzero(alive)
        for _ls in range(max_ls):
            if pend.size == j:  # all rows: no gathers
                xt = x + t * d
                ft, gt = evaluate(xt, rows)
                ok = np.isfinite(ft) & (ft <= f + 1e-4 * t * slope)
            else:
                xt = x[:, pend] + t[pend] * d[:, pend]
                ft, gt = evaluate(xt, rows[pend])
                ok = np.isfinite(ft) & (ft <= f[pend] + 1e-4 * t[pend] * slope[pend])
            ok &= np.all(np.isfinite(gt), axis=0)
            if np.all(ok):
                if pend.size == j:
                    x_new, f_new, g_new = xt, ft, gt
                else:
                    x_new[:, pend], f_new[pend], g_new[:, pend] = xt, ft, gt
                pend = pend[:0]
                break
            acc = pend[ok]
            x_new[:, acc], f_new[acc], g_new[:, acc] = xt[:, ok], ft[ok], gt[:, ok]
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
        sy = dot(s, y)
        yy = dot(y, y)
        f_old = f
        f = np.where(done, f_new, f)
        x, g = x_new, g_new
        # Keep a pair only with positive curvature (Nocedal & Wright 2006, eq. 6.7), and a
        # y whose square does not underflow to 0 (gamma = sy / yy would be inf).
        good = done & (yy > 0) & (sy > 1e-10 * yy)
        slot = n_it % m
        n_pairs += good.astype(np.int64) - (rho[slot] != 0.0)  # the slot's old pair leaves
        S[slot] = s
        Y[slot] = y
        rho[slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma = np.where(good, sy / np.where(good, yy, 1.0), gamma)
        gmax = np.max(np.abs(g), axis=0)
        with np.errstate(invalid="ignore"):  # a start whose objective is inf: inf - inf
            rel = (f_old - f) / np.maximum(np.maximum(np.abs(f_old), np.abs(f)), 1.0)
        new_st = np.where(gmax <= gtol, CONV_GRAD, np.where(rel <= ftol, CONV_F, RUNNING))
        st = np.where(done, new_st, st)
    return BatchResult(x=out_x, f=out_f, grad_max=out_g, status=out_status, n_iter=out_iter)


def huber_sum(
    r: FloatArray, delta: float, w: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """(f, dF/dr) of F = sum over each row of w Huber_delta(r) (the weights w, of the rows of a
    bootstrap batch, may be None): sum w psi (r - psi/2) with psi = clip(r, -delta, delta),
    r^2/2 inside and delta (|r| - delta/2) outside; dF/dr = w psi."""
    psi = np.clip(r, -delta, delta)
    if w is None:
        return np.einsum("jn,jn->j", psi, r - 0.5 * psi), psi
    return np.einsum("jn,jn->j", w * psi, r - 0.5 * psi), psi * w


def lse_huber_objective(
    logx: FloatArray,
    logy: FloatArray,
    weights: FloatArray | None,
    delta: float,
    *,
    chunk_elements: int = 65536,
) -> Objective:
    """Huber loss summed over log-space residuals of a log-sum-exp law.

    The law is log L = LSE(a_1 - alpha_1 log x_1, ..., a_K - alpha_K log x_K, e), i.e.
    L = E + sum_k A_k x_k^-alpha_k with A_k = exp(a_k), E = exp(e): for K = 2 this is
    Chinchilla's approach 3 as fitted by Hoffmann et al. 2022 (eq. 2 and appendix D.2) and
    Besiroglu et al. 2024; for K = 1 a power law with offset. Parameter layout per row:
    [a_1..a_K, alpha_1..alpha_K, e]. Objective: sum_i w_i Huber_delta(log L_i - LSE_i).

    Rows are evaluated in chunks of about `chunk_elements` / (K n) rows, so that each numpy
    call works on a large block while the work arrays stay small. The exps and the log (three
    per point and row for K = 2) are most of the cost; everything else is a few passes.
    The log-sum-exp is shifted by one constant per row, the largest value any term takes over
    the data (analytic: each term is linear in log x), so that no exp overflows; a row where
    some point has all its terms more than 100 nats below that shift is evaluated with a
    per-point shift instead. Shifted exponents below -600 are clamped at -160: at every point
    some term is at least exp(-100), so the clamp changes sums by a relative exp(-60) (far
    below double precision) and keeps denormal numbers, which are ~100x slower, out of the
    products.

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
    chunk = max(16, chunk_elements // max(K * n, 1))

    def shift(X: FloatArray) -> tuple[FloatArray, FloatArray]:
        # Largest and smallest value of each term a_k - alpha_k log x_k over the data, (j, K).
        a, al = X[:, :K], X[:, K : 2 * K]
        zhi = a - np.minimum(al * xlo, al * xhi)
        zlo = a - np.maximum(al * xlo, al * xhi)
        return zhi, zlo

    def huber(r: FloatArray, w: FloatArray | None) -> tuple[FloatArray, FloatArray]:
        # sum w Huber(r) = sum w psi (r - psi/2) with psi = clip(r): r^2/2 inside, delta
        # (|r| - delta/2) outside. Returns (f, w psi), w psi = dF/dr.
        psi = np.clip(r, -delta, delta)
        if w is None:
            f = np.einsum("jn,jn->j", psi, r)
            f -= 0.5 * np.einsum("jn,jn->j", psi, psi)
            return f, psi
        wpsi = np.multiply(psi, w)
        f = np.einsum("jn,jn->j", wpsi, r)
        f -= 0.5 * np.einsum("jn,jn->j", wpsi, psi)
        return f, wpsi

    def fast(
        X: FloatArray, c: FloatArray, zlo: FloatArray, w: FloatArray | None
    ) -> tuple[FloatArray, FloatArray]:
        """Rows whose terms stay within 100 nats of the shift c at every point."""
        j = X.shape[0]
        G = np.empty((j, 2 * K + 1))
        Ez = np.empty((K, j, n))
        for kk in range(K):
            np.multiply(X[:, K + kk, None], xt[kk], out=Ez[kk])
            np.subtract((X[:, kk] - c)[:, None], Ez[kk], out=Ez[kk])
        # Shifted exponents are <= 0; below -600 (exp < 1e-260) they are clamped at -160 (see
        # the docstring: no denormals), a pass over the data only needed when one can be.
        if np.min(zlo - c[:, None]) < -600.0:
            np.maximum(Ez, -160.0, out=Ez)
        np.exp(Ez, out=Ez)
        E0 = np.exp(X[:, 2 * K] - c)  # (j,)
        s = np.add(Ez[0], E0[:, None])
        for kk in range(1, K):
            s += Ez[kk]
        r = np.log(s)
        r += c[:, None]
        np.subtract(logy, r, out=r)  # residuals log L - LSE, (j, n)
        f, dr = huber(r, w)
        dr /= s  # dF/dr / s: the softmax weight of term k at a point is Ez_k / s
        for kk in range(K):
            U = np.multiply(Ez[kk], dr, out=Ez[kk])  # (j, n)
            G[:, kk] = -U.sum(axis=1)  # dr/da_k = -p_k
            G[:, K + kk] = U @ xt[kk]  # dr/dalpha_k = p_k log x_k
        G[:, 2 * K] = -E0 * dr.sum(axis=1)  # dr/de = -p_0
        return f, G

    def per_point(X: FloatArray, w: FloatArray | None) -> tuple[FloatArray, FloatArray]:
        """Any rows: the log-sum-exp shifted per point."""
        a, al, e = X[:, :K], X[:, K : 2 * K], X[:, 2 * K]
        G = np.empty((X.shape[0], 2 * K + 1))
        Z = a.T[:, :, None] - al.T[:, :, None] * xt[:, None, :]  # (K, j, n)
        mx = np.maximum(Z.max(axis=0), e[:, None])  # (j, n)
        Ez = np.exp(np.maximum(Z - mx[None], -160.0))
        E0 = np.exp(np.maximum(e[:, None] - mx, -160.0))  # (j, n)
        s = Ez.sum(axis=0) + E0
        r = logy - (np.log(s) + mx)
        f, dr = huber(r, w)
        dr /= s
        for kk in range(K):
            U = Ez[kk] * dr  # (j, n)
            G[:, kk] = -U.sum(axis=1)
            G[:, K + kk] = U @ xt[kk]
        G[:, 2 * K] = -(E0 * dr).sum(axis=1)
        return f, G

    def fun(X: FloatArray, rows: NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        j = X.shape[0]
        f = np.empty(j)
        G = np.empty((j, 2 * K + 1))
        with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
            zhi, zlo = shift(X)
            e = X[:, 2 * K]
            c = np.maximum(zhi.max(axis=1), e)  # (j,) shift
            ok = np.maximum(zlo.max(axis=1), e) - c > -100.0
            if not np.all(ok):
                bad = np.flatnonzero(~ok)
                w = None if weights is None else weights[rows[bad]]
                f[bad], G[bad] = per_point(X[bad], w)
                sel = np.flatnonzero(ok)
                X, c, zlo, rows = X[sel], c[sel], zlo[sel], rows[sel]
            else:
                sel = None
            for lo in range(0, X.shape[0], chunk):
                hi = min(lo + chunk, X.shape[0])
                w = None if weights is None else weights[rows[lo:hi]]
                fb, Gb = fast(X[lo:hi], c[lo:hi], zlo[lo:hi], w)
                if sel is None:
                    f[lo:hi], G[lo:hi] = fb, Gb
                else:
                    f[sel[lo:hi]], G[sel[lo:hi]] = fb, Gb
        return f, G

    return fun
