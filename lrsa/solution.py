"""What solving one layer returns: :class:`LayerSolution` and the history of its iterations.

:func:`lrsa.solver.solve_layer` (Algorithm 1) records each iteration's
:class:`~lrsa.solver.ADMMStep` with ``record_iteration`` under the keys ``HISTORY`` and
returns its last prediction as a :class:`LayerSolution`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from array_api_compat import array_namespace

from .objective import sparse_penalty, weighted_penalty

__all__ = ["LayerSolution"]

#: the per-iteration series of ``LayerSolution.history``
HISTORY = ("objective", "primal_residual", "dual_residual", "rank", "nonzero_columns")

Array = "np.ndarray | torch.Tensor"  # the kind of the input X


@dataclass
class LayerSolution:
    """Result of :func:`lrsa.solver.solve_layer`. Arrays are of X's kind: NumPy arrays when X
    was one, else tensors on its device.

    Attributes
    ----------
    A : (n, d) array
        Column-sparse component (whole zero columns).
    B : (n, d) array
        Low-rank component, ``B == U @ V``.
    U, V : (n, r) and (r, d) arrays
        Balanced factors of B (r = rank of B).
    bias : (n,) array
        The bias used in the response.
    objective : float
        F(A, B) at the returned A, B.
    history : dict of str -> list
        Per iteration: ``objective`` (f(M) + penalties of the predicted A, B; for ReLU f is
        taken at the M the iteration starts from), ``primal_residual``
        ``||A_hat+B_hat-M_hat|| / max(||A_hat+B_hat||, ||M_hat||)``, ``dual_residual``
        ``||M_hat_k - M_k|| / ||M_hat_k||`` (the prediction against the M the iteration
        started from, not the corrected M_{k+1}), ``rank`` of B, ``nonzero_columns`` of A.
    converged : bool
        Both residuals fell below ``tol``.
    iterations : int
        Iterations run.
    message : str
        Why the solve stopped.
    response : {"relu", "linear"}
    lam1, lam2 : float
        The weights solved for.
    t : float
        The penalty at the end (after any adaptation).
    """

    A: Array
    B: Array
    U: Array
    V: Array
    bias: Array
    objective: float
    history: dict = field(repr=False)
    converged: bool
    iterations: int
    message: str
    response: str
    lam1: float
    lam2: float
    t: float

    @property
    def W(self):
        """The approximated weight A + B."""
        return self.A + self.B

    @property
    def rank(self):
        return int(self.U.shape[1])

    @property
    def nonzero_columns(self):
        return int((abs(self.A).sum(0) > 0).sum())


def record_iteration(history, step, lam1, lam2, sparsity):
    """Append an :class:`~lrsa.solver.ADMMStep` to ``history`` (one list per key of
    ``HISTORY``) and return it; ``sparsity`` names A's penalty."""
    sparse_norm = sparse_penalty(sparsity)[1]
    history["objective"].append(step.f + weighted_penalty(lam1, sparse_norm(step.A))
                                + weighted_penalty(lam2, float(step.s.sum())))
    history["primal_residual"].append(step.primal)
    history["dual_residual"].append(step.dual)
    history["rank"].append(step.rank)
    xp = array_namespace(step.A)
    history["nonzero_columns"].append(int(xp.sum(xp.linalg.vector_norm(step.A, axis=0) > 0)))
    return history
