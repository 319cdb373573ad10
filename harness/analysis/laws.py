"""Scaling laws as pure numpy functions (no fitting here; see `fit.py`).

Every formula cites its source. N is non-embedding parameters (Kaplan et al. 2020), D training
tokens, C training compute in FLOPs with C = 6 N D (Kaplan et al. 2020, table 1; Hoffmann et al.
2022, section 3), L the validation loss in nats per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from harness.flops import training_flops

__all__ = [
    "ComputeOptimal",
    "chinchilla_loss",
    "compute_optimal",
    "flops",
    "kaplan_loss",
    "overtraining_loss",
    "overtraining_optimal_tokens_per_param",
    "power_law_with_offset",
    "tokens_per_param",
]

FloatArray = NDArray[np.float64]


def flops(n_params: ArrayLike, n_tokens: ArrayLike) -> FloatArray:
    """Training compute C = 6 N D in FLOPs (Kaplan et al. 2020, table 1; Hoffmann et al. 2022).

    Parameters
    ----------
    n_params, n_tokens : array_like
        Non-embedding parameters N and training tokens D.

    Returns
    -------
    ndarray
        C = 6 N D.
    """
    return training_flops(np.asarray(n_params, dtype=float), np.asarray(n_tokens, dtype=float))


def chinchilla_loss(
    N: ArrayLike, D: ArrayLike, E: float, A: float, B: float, alpha: float, beta: float
) -> FloatArray:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2, approach 3).

    Parameters
    ----------
    N, D : array_like
        Parameters and training tokens (broadcast together).
    E, A, B, alpha, beta : float
        Irreducible loss, the two scale factors and the two exponents.

    Returns
    -------
    ndarray
        Predicted loss.
    """
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    return E + A * N ** (-alpha) + B * D ** (-beta)


def kaplan_loss(
    N: ArrayLike, D: ArrayLike, N_c: float, D_c: float, alpha_N: float, alpha_D: float
) -> FloatArray:
    """L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, eq. 1.5).

    Parameters
    ----------
    N, D : array_like
        Non-embedding parameters and training tokens.
    N_c, D_c, alpha_N, alpha_D : float
        Kaplan's constants (published: N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095).

    Returns
    -------
    ndarray
        Predicted loss.
    """
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    return ((N_c / N) ** (alpha_N / alpha_D) + D_c / D) ** alpha_D


def power_law_with_offset(x: ArrayLike, E: float, A: float, alpha: float) -> FloatArray:
    """L(x) = E + A x^-alpha: a one-variable law with an irreducible term.

    The form of each term of Hoffmann et al. 2022, eq. 2; used for L(N) at fixed D, L(D) at fixed
    N, and L(C) along the compute envelope.

    Parameters
    ----------
    x : array_like
        N, D or C (positive).
    E, A, alpha : float
        Offset, scale and exponent.

    Returns
    -------
    ndarray
        Predicted loss.
    """
    return E + A * np.asarray(x, dtype=float) ** (-alpha)


def overtraining_loss(
    C: ArrayLike, M: ArrayLike, E: float, a: float, b: float, eta: float
) -> FloatArray:
    """L(C, M) = E + (a M^eta + b M^-eta) C^-eta (Gadre et al. 2024, eq. 4).

    M = D / N is the tokens-per-parameter multiplier and C = 6 N D. It is Chinchilla's eq. 2
    with one exponent for N and D (alpha = beta = 2 eta): A N^-2eta + B D^-2eta with
    a = A 6^eta and b = B 6^eta, written so that over-training (a larger M at the same C)
    moves the reducible loss by a factor of M and leaves its slope in C, eta, unchanged.

    Parameters
    ----------
    C, M : array_like
        Compute (FLOPs) and tokens per parameter (broadcast together).
    E, a, b, eta : float
        Irreducible loss, the two scale factors and the compute exponent.

    Returns
    -------
    ndarray
        Predicted loss.
    """
    C = np.asarray(C, dtype=float)
    M = np.asarray(M, dtype=float)
    return E + (a * M**eta + b * M ** (-eta)) * C ** (-eta)


def overtraining_optimal_tokens_per_param(a: float, b: float, eta: float) -> float:
    """The M that minimises L(C, M) at every C: (b / a)^(1 / (2 eta)) (d/dM of eq. 4 = 0)."""
    return float((b / a) ** (1.0 / (2.0 * eta)))


@dataclass(frozen=True, kw_only=True)
class ComputeOptimal:
    """Compute-optimal allocation implied by a Chinchilla fit (Hoffmann et al. 2022, eq. 4).

    N_opt(C) = G (C/6)^a and D_opt(C) = G^-1 (C/6)^b.
    """

    a: float
    """Exponent of N_opt in C: beta / (alpha + beta)."""
    b: float
    """Exponent of D_opt in C: alpha / (alpha + beta)."""
    G: float
    """(alpha A / (beta B))^(1 / (alpha + beta))."""

    def n_opt(self, C: ArrayLike) -> FloatArray:
        """Compute-optimal parameters N_opt(C) = G (C/6)^a."""
        return self.G * (np.asarray(C, dtype=float) / 6.0) ** self.a

    def d_opt(self, C: ArrayLike) -> FloatArray:
        """Compute-optimal tokens D_opt(C) = G^-1 (C/6)^b."""
        return (np.asarray(C, dtype=float) / 6.0) ** self.b / self.G

    def tokens_per_param(self, C: ArrayLike) -> FloatArray:
        """D_opt(C) / N_opt(C) = G^-2 (C/6)^(b - a)."""
        return self.d_opt(C) / self.n_opt(C)


def compute_optimal(A: float, B: float, alpha: float, beta: float) -> ComputeOptimal:
    """Minimise L(N, D) = E + A/N^alpha + B/D^beta subject to 6 N D = C.

    Hoffmann et al. 2022, eq. 4 (appendix D.2): a = beta/(alpha+beta), b = alpha/(alpha+beta),
    G = (alpha A / (beta B))^(1/(alpha+beta)), N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b.

    Parameters
    ----------
    A, B, alpha, beta : float
        Fitted Chinchilla parameters (positive).

    Returns
    -------
    ComputeOptimal

    Raises
    ------
    ValueError
        If a parameter is not positive and finite.
    """
    for name, v in (("A", A), ("B", B), ("alpha", alpha), ("beta", beta)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"compute_optimal: {name}={v!r}; accepted: a finite number > 0")
    s = alpha + beta
    G = (alpha * A / (beta * B)) ** (1.0 / s)
    return ComputeOptimal(a=float(beta / s), b=float(alpha / s), G=float(G))


def tokens_per_param(A: float, B: float, alpha: float, beta: float, C: ArrayLike) -> FloatArray:
    """Compute-optimal tokens per parameter D_opt(C)/N_opt(C) (Hoffmann et al. 2022, eq. 4).

    Raises
    ------
    ValueError
        If a parameter is not positive and finite.
    """
    return compute_optimal(A, B, alpha, beta).tokens_per_param(C)
