r"""The He-Yuan correction step and the Chen-He-Ye-Yuan example that motivates it.

Three-block ADMM for

.. math::

    \min\ \theta_1(x_1) + \theta_2(x_2) + \theta_3(x_3)
    \quad \text{s.t.}\quad A_1x_1 + A_2x_2 + A_3x_3 = b

with the augmented Lagrangian
:math:`\sum_i\theta_i + \langle\Lambda, \sum_i A_ix_i - b\rangle + \frac t2\|\sum_i A_ix_i - b\|^2`
first *predicts* :math:`(\hat x_1, \hat x_2, \hat x_3, \hat\Lambda)` by one sweep of the
direct extension, then *corrects* the essential variables
:math:`w = (A_2x_2,\ A_3x_3,\ \Lambda)` (paper eq. 13, He & Yuan 2018):

.. math::

    w^{k+1} = w^k - \alpha
    \begin{pmatrix} I & (\tau-1)I & 0\\ \tau I & I & 0\\ 0 & 0 & I\end{pmatrix}
    (w^k - \hat w^k).

He and Yuan's theorem (convex :math:`\theta_i`, :math:`A_2, A_3` of full column rank)
covers the correction applied to these essential variables. For the layer problem the
constraint is :math:`A + B - M = 0`, so :math:`A_3 = -I` and the second coordinate is
:math:`-M`; eq. (13) as printed applies the matrix to the raw pair :math:`(B, M)`, which flips
the sign of the off-diagonal blocks. That iteration is not the one the theorem covers, and
for some coefficient matrices it diverges: on the Chen-He-Ye-Yuan example the same sign flip
(an analogue there, since that example's :math:`A_3 = (1, 2, 2)^\top`, not :math:`-I`) has
spectral radius 1.0865 (:func:`chen_he_ye_yuan_spectral_radius`). On the layer problem's own
constraint with convex quadratic :math:`\theta_i` the raw form was measured to contract as
well (:func:`three_block_spectral_radius`); that is an observation, not a guarantee.
"""

from __future__ import annotations

import numpy as np

__all__ = ["he_yuan_correction", "chen_he_ye_yuan_iterates", "chen_he_ye_yuan_spectral_radius",
           "three_block_spectral_radius", "CHEN_HE_YE_YUAN_MATRIX"]

#: [A1 A2 A3] of Chen, He, Ye and Yuan (Math. Program. 2016): the direct three-block ADMM
#: on min 0 s.t. A1 x1 + A2 x2 + A3 x3 = 0 diverges for every starting point off the solution.
CHEN_HE_YE_YUAN_MATRIX = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 2.0], [1.0, 2.0, 2.0]])


def he_yuan_correction(w2, w2_hat, w3, w3_hat, lam, lam_hat, tau=0.5, alpha=0.75):
    r"""Apply the He-Yuan correction (paper eq. 13) to the essential variables.

    Parameters
    ----------
    w2, w2_hat : current and predicted :math:`A_2 x_2` (for the layer problem: ``B``)
    w3, w3_hat : current and predicted :math:`A_3 x_3` (for the layer problem: ``-M``)
    lam, lam_hat : current and predicted multiplier
    tau, alpha : the scheme's parameters; the paper uses 1/2 and 3/4.

    Returns
    -------
    (w2_next, w3_next, lam_next)
    """
    d2, d3 = w2 - w2_hat, w3 - w3_hat
    return (
        w2 - alpha * (d2 + (tau - 1) * d3),
        w3 - alpha * (tau * d2 + d3),
        lam - alpha * (lam - lam_hat),
    )


def _chyy_step(state, correction, sign, t, tau, alpha):
    """One iteration on the state (A2 x2, A3 x3, Lambda), stacked in a 9-vector: the
    quadratic step with every theta_i = 0 (one Gauss-Seidel sweep of the direct extension,
    then the correction)."""
    blocks = np.split(CHEN_HE_YE_YUAN_MATRIX, 3, axis=1)
    return _quadratic_step(state, blocks, [np.zeros((1, 1))] * 3, correction, sign, t, tau,
                           alpha)


def _check_coordinates(coordinates):
    if coordinates not in ("essential", "raw"):
        raise ValueError(f"coordinates must be 'essential' or 'raw', got {coordinates!r}")
    return -1.0 if coordinates == "raw" else 1.0


def chen_he_ye_yuan_iterates(iterations=200, *, correction=True, coordinates="essential",
                             t=1.0, tau=0.5, alpha=0.75, seed=0):
    r"""Run three-block ADMM on the Chen-He-Ye-Yuan example and return the iterates' norms.

    The problem is :math:`\min 0` s.t. :math:`A_1x_1 + A_2x_2 + A_3x_3 = 0` with
    ``CHEN_HE_YE_YUAN_MATRIX``; its only solution is :math:`x = 0, \Lambda = 0`.

    Parameters
    ----------
    iterations : int
    correction : bool
        False runs the direct extension; True adds :func:`he_yuan_correction`.
    coordinates : {"essential", "raw"}
        "essential" corrects :math:`(A_2x_2, A_3x_3, \Lambda)` as the theory says.
        "raw" corrects :math:`(A_2x_2, -A_3x_3, \Lambda)`: the sign flip that eq. (13)
        applied to :math:`(B, M)` makes when the constraint reads :math:`A + B - M = 0`.
        On this example (:math:`A_3 = (1, 2, 2)^\top`) it is an analogue of that, not
        eq. (13) on the layer problem.
    t, tau, alpha : penalty and correction parameters.

    Returns
    -------
    norms : (iterations + 1,) ndarray of :math:`\|(A_2x_2, A_3x_3, \Lambda)\|_2`, the norm
        of the state the iteration carries (:math:`x_1` is recomputed from it).
    """
    sign = _check_coordinates(coordinates)
    rng = np.random.default_rng(seed)
    A = CHEN_HE_YE_YUAN_MATRIX
    state = np.concatenate([A[:, 1] * rng.standard_normal(), A[:, 2] * rng.standard_normal(),
                            rng.standard_normal(3)])
    norms = [np.linalg.norm(state)]
    for _ in range(iterations):
        state = _chyy_step(state, correction, sign, t, tau, alpha)
        norms.append(np.linalg.norm(state))
    return np.array(norms)


def chen_he_ye_yuan_spectral_radius(*, correction=True, coordinates="essential", t=1.0,
                                    tau=0.5, alpha=0.75):
    """Spectral radius of the (linear) iteration map on the Chen-He-Ye-Yuan example.

    Above 1 the iteration diverges from almost every start; the direct extension gives
    about 1.0278 (Chen et al. 2016).
    """
    sign = _check_coordinates(coordinates)
    T = np.column_stack([_chyy_step(e, correction, sign, t, tau, alpha) for e in np.eye(9)])
    return float(np.max(np.abs(np.linalg.eigvals(T))))


def _quadratic_step(state, As, Qs, correction, sign, t, tau, alpha):
    """One iteration on (A2 x2, A3 x3, Lambda) for theta_i(x) = x^T Q_i x / 2, b = 0."""
    m = As[0].shape[0]
    w2, w3, lam = state[:m], state[m:2 * m], state[2 * m:]

    def predict(i, rest):  # argmin theta_i(x) + <lam, A_i x> + t/2 ||A_i x + rest||^2
        A, Q = As[i], Qs[i]
        return A @ -np.linalg.solve(Q + t * A.T @ A, A.T @ (lam + t * rest))

    w1 = predict(0, w2 + w3)
    w2_hat = predict(1, w1 + w3)
    w3_hat = predict(2, w1 + w2_hat)
    lam_hat = lam + t * (w1 + w2_hat + w3_hat)
    if not correction:
        return np.concatenate([w2_hat, w3_hat, lam_hat])
    w2, w3, lam = he_yuan_correction(w2, w2_hat, sign * w3, sign * w3_hat, lam, lam_hat,
                                     tau, alpha)
    return np.concatenate([w2, sign * w3, lam])


def three_block_spectral_radius(As, Qs=None, *, correction=True, coordinates="essential",
                                t=1.0, tau=0.5, alpha=0.75):
    r"""Spectral radius of one iteration of three-block ADMM on
    :math:`\min \sum_i \tfrac12 x_i^\top Q_i x_i` s.t. :math:`A_1x_1 + A_2x_2 + A_3x_3 = 0`.

    With quadratic :math:`\theta_i` every step is linear in the state
    :math:`(A_2x_2, A_3x_3, \Lambda)`, so the iteration converges (to the solution 0) from
    every start iff this radius is below 1.

    Parameters
    ----------
    As : three (m, p_i) arrays A_1, A_2, A_3.
    Qs : three (p_i, p_i) positive semidefinite arrays (default: zeros, theta_i = 0; then
        each A_i needs full column rank).
    correction, coordinates, t, tau, alpha : as in :func:`chen_he_ye_yuan_iterates`;
        ``"raw"`` corrects :math:`(A_2x_2, -A_3x_3, \Lambda)`: for the layer problem's
        :math:`A_3 = -I` that is eq. (13) applied to :math:`(B, M)` as printed.
    """
    sign = _check_coordinates(coordinates)
    As = [np.asarray(A, dtype=float) for A in As]
    Qs = [np.zeros((A.shape[1],) * 2) for A in As] if Qs is None else \
        [np.asarray(Q, dtype=float) for Q in Qs]
    m = As[0].shape[0]
    T = np.column_stack([_quadratic_step(e, As, Qs, correction, sign, t, tau, alpha)
                         for e in np.eye(3 * m)])
    return float(np.max(np.abs(np.linalg.eigvals(T))))
