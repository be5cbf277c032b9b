"""lrsa.course.labs: each lab passes a right function, fails a wrong one with a hint, names
an unanswered one, and under nbgrader raises for the last two. The right functions here are
written independently of the labs' references (NumPy by hand, the closed forms)."""

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from lrsa.course import labs
from lrsa.course.checking import NotAnswered, WrongAnswer


def _mcnemar_by_hand(a, b):
    b_only, c_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    n = b_only + c_only
    tail = sum(math.comb(n, i) for i in range(min(b_only, c_only) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _paired_by_hand(a, b, replicates, seed):
    d = 100 * (np.asarray(a, float) - np.asarray(b, float))
    idx = np.random.default_rng(seed).integers(0, d.size, (replicates, d.size))
    return (d.mean(), *np.percentile(d[idx].mean(1), [2.5, 97.5]))




def _two_four_by_hand(W):
    """2:4 written out with numpy: per block, zero the two smallest magnitudes."""
    out = np.array(W, dtype=float)
    blocks = out.reshape(out.shape[0], -1, 4)
    smallest = np.argsort(np.abs(blocks), axis=2)[:, :, :2]
    np.put_along_axis(blocks, smallest, 0.0, axis=2)
    return blocks.reshape(out.shape)


def _oats_by_hand(W, G, rank, nonzeros, rounds):
    """OATS with numpy: scale, alternate SVD and hard threshold, unscale."""
    W, G = np.asarray(W), np.asarray(G)
    D = np.sqrt(np.diag(G))
    WD, S = W * D, np.zeros_like(W)
    for _ in range(rounds):
        P, s, Qh = np.linalg.svd(WD - S, full_matrices=False)
        Lr = (P[:, :rank] * s[:rank]) @ Qh[:rank]
        R = WD - Lr
        keep = np.argsort(np.abs(R), axis=None)[-nonzeros:]
        S = np.zeros_like(R)
        S.flat[keep] = R.flat[keep]
    return S / D, P[:, :rank] * s[:rank], Qh[:rank] / D


def _rrr_by_hand(X, Z, rank):
    X, Z = np.asarray(X), np.asarray(Z)
    W = np.linalg.solve(X @ X.T, X @ Z.T).T
    P = np.linalg.svd(W @ X, full_matrices=False)[0][:, :rank]
    return P, P.T @ W


def _factored_by_hand(conv, U, V):
    r, n = U.shape[1], U.shape[0]
    first = nn.Conv2d(conv.in_channels, r, conv.kernel_size, conv.stride, conv.padding,
                      bias=False)
    second = nn.Conv2d(r, n, 1)
    with torch.no_grad():
        first.weight.copy_(V.reshape(r, conv.in_channels, *conv.kernel_size))
        second.weight.copy_(U.reshape(n, r, 1, 1))
        second.bias.copy_(conv.bias)
    return nn.Sequential(first, second)


def _group_lasso_by_hand(X, Z, lam, iters):
    """Proximal gradient written out (column shrinkage by hand), then least squares."""
    N = X.shape[1]
    G, C = X @ X.T / N, Z @ X.T / N
    step = 1 / np.linalg.norm(G, 2)
    A = np.zeros((Z.shape[0], X.shape[0]))
    for _ in range(iters):
        V = A - step * (A @ G - C)
        norms = np.linalg.norm(V, axis=0)
        A = V * np.maximum(0, 1 - step * lam / np.maximum(norms, 1e-300))
    kept = np.linalg.norm(A, axis=0) > 0
    out = np.zeros_like(A)
    if kept.any():
        out[:, kept] = Z @ np.linalg.pinv(X[kept])
    return out


def _least_squares_on_every_column(X, Z, lam, iters):
    """Wrong: the refit without the pruning."""
    return np.linalg.lstsq(X.T, Z.T, rcond=None)[0].T


def _time_pair_by_hand(f, g, repeats, clock=time.perf_counter):
    times = []
    for _ in range(repeats):
        t = [clock()]
        f()
        t.append(clock())
        g()
        t.append(clock())
        times.append((t[1] - t[0], t[2] - t[1]))
    t_f, t_g = np.array(times).T
    rng = np.random.default_rng(123)  # another stream than the reference's
    ratios = []
    for _ in range(2000):
        i = rng.choice(repeats, repeats)
        ratios.append(np.median(t_f[i]) / np.median(t_g[i]))
    return (np.median(t_f) / np.median(t_g), t_f.min() / t_g.min(),
            np.quantile(ratios, 0.025), np.quantile(ratios, 0.975))


def _time_all_f_then_all_g(f, g, repeats, clock=time.perf_counter):
    """Not interleaved: every f, then every g."""
    t_f, t_g = [], []
    for fn, out in ((f, t_f), (g, t_g)):
        for _ in range(repeats):
            t0 = clock()
            fn()
            out.append(clock() - t0)
    return (np.median(t_f) / np.median(t_g), min(t_f) / min(t_g), 1.0, 3.0)


@pytest.mark.parametrize("lab,right,wrong", [
    (labs.mcnemar_lab, _mcnemar_by_hand, lambda a, b: 0.05),
    (labs.paired_interval_lab, _paired_by_hand, lambda a, b, r, s: (0.0, -1.0, 1.0)),
    (labs.n_m_projection_lab, _two_four_by_hand, lambda W: W),
    (labs.oats_lab, _oats_by_hand,
     lambda W, G, r, k, n: (np.zeros_like(W), np.zeros((W.shape[0], r)),
                            np.zeros((r, W.shape[1])))),
    (labs.reduced_rank_regression_lab, _rrr_by_hand,
     lambda X, Z, r: (np.linalg.svd(np.asarray(Z) @ np.asarray(X).T)[0][:, :r],
                      np.zeros((r, X.shape[0])))),
    (labs.factored_conv_lab, _factored_by_hand, lambda conv, U, V: conv),
    (labs.group_lasso_columns_lab, _group_lasso_by_hand, _least_squares_on_every_column),
    (labs.timing_harness_lab, _time_pair_by_hand, _time_all_f_then_all_g)])
def test_labs_grade_a_function(lab, right, wrong, monkeypatch, capsys):
    """The labs of notebooks 07-10: a right function passes, a wrong one fails, an
    unanswered one is named; under nbgrader the last two raise."""
    assert lab(right) is True
    assert lab(wrong) is False and "not yet" in capsys.readouterr().out
    assert lab(lambda *args: ...) is None and "not answered" in capsys.readouterr().out
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(NotAnswered):
        lab(lambda *args: ...)
    with pytest.raises(WrongAnswer):
        lab(wrong)
