"""lrsa.course.exercises: every checker accepts the right answer, rejects a wrong one, waits on the
``...`` placeholder without raising and refuses malformed answers with a clear message.

The right answers here come from the closed forms the exercises ask for, not from the
checkers' own reference routes.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lrsa.course import exercises as ex
from lrsa.course.checking import NotAnswered, WrongAnswer
from lrsa.layers import SparseLowRankConv2d

rng = np.random.default_rng(0)
V = rng.standard_normal((6, 8))
SIGMA = np.linalg.svd(V, compute_uv=False)
NORMS = np.linalg.norm(V, axis=0)
TAU_COLS, TAU_SV = float(np.median(NORMS)), float(np.median(SIGMA))


def _factored_conv():
    """A 4 -> 6 channel 3 x 3 conv, factored with input channels 0 and 2 kept and rank 2."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    A = torch.zeros(6, 4, 3, 3)
    A[:, [0, 2]] = torch.randn(6, 2, 3, 3)
    mod = SparseLowRankConv2d.from_factors(conv, A.reshape(6, 36), torch.randn(6, 2),
                                           torch.randn(2, 36))
    return conv, mod, dict(n=6, c_in=4, c=2, k=3, r=2, d=36)


def _he_yuan(B, B_hat, M, M_hat, tau, alpha, essential):
    """(B+, M+) from the notebook's written-out formulas; essential=False: eq. (13) applied to
    the raw (B, M), the step the exercise warns about."""
    dB, dM = B - B_hat, M - M_hat
    if essential:
        return B - alpha * (dB - (tau - 1) * dM), M - alpha * (-tau * dB + dM)
    return B - alpha * (dB + (tau - 1) * dM), M - alpha * (tau * dB + dM)


def _gap(x, y, m0, m1, r):
    """f(midpoint) - mean of f at the ends, f(m) = (y - r(m x))^2, point by point."""
    f = [(y - r(m * x)) ** 2 for m in (m0, (m0 + m1) / 2, m1)]
    return f[1] - (f[0] + f[2]) / 2


def _relu_problem():
    g = np.random.default_rng(1)
    X = np.abs(g.standard_normal((5, 40)))  # inputs after a ReLU
    W = g.standard_normal((3, 5))
    b = 0.1 * g.standard_normal(3)
    return X, W @ X + b[:, None], b, W


def _cases():
    """name -> (checker, args after the answer, right answer, wrong answer)."""
    X, Z, b, W = _relu_problem()
    W_dead = -10 * np.ones_like(W)  # X >= 0 and |b| << 10: every unit is off
    assert (W_dead @ X + b[:, None] <= 0).all()
    n_samples = X.shape[1]
    conv, mod, s = _factored_conv()
    stored = s["n"] * s["c"] * s["k"] ** 2 + s["r"] * (s["d"] + s["n"]) + s["n"]
    macs_per_pos = s["n"] * s["c"] * s["k"] ** 2 + s["r"] * (s["d"] + s["n"])
    n, d = 64, 576
    weights, sizes = np.array([100, 900]), np.array([0.5, 0.2])
    row = {"k": 2, "size_so_far": float(sizes @ weights / weights.sum())}
    small = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 6 * 6, 5))
    table, names = {"c": (0.0, 50.0, 50.0), "f": (10.0, 0.0, 10.0)}, {"0": "c", "2": "f"}
    size_c, size_f = 3 * 2 * 9, 5 * 3 * 6 * 6
    Yr = np.maximum(Z, 0)
    C = (Yr - b[:, None]) @ X.T / n_samples
    lam1_max = max(math.sqrt(sum(((Yr[i] - b[i]) @ X[j] / n_samples) ** 2 for i in range(3)))
                   for j in range(5))
    torch.manual_seed(1)
    # a chain conv -> relu -> conv -> relu -> conv: layer "4" sees what "2" computes, and
    # "2" nothing of "4"
    chain = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
    second = nn.Conv2d(6, 6, 3, stride=2, padding=1)  # 8 x 8 -> 4 x 4: 16 positions, 324 weights
    return {
        "surviving_columns": (ex.surviving_columns, (V, TAU_COLS), int((NORMS > TAU_COLS).sum()),
                              int((NORMS > TAU_COLS).sum()) + 1),
        "svt_rank": (ex.svt_rank, (V, TAU_SV), int((SIGMA > TAU_SV).sum()),
                     int((SIGMA > TAU_SV).sum()) - 1),
        "prox_frobenius": (ex.prox_frobenius, (V,),
                           lambda V, tau: max(1 - tau / np.linalg.norm(V), 0) * V,
                           lambda V, tau: np.sign(V) * np.maximum(np.abs(V) - tau, 0)),
        "moreau_residual": (ex.moreau_residual, (V, TAU_SV), np.minimum(SIGMA, TAU_SV),
                            np.maximum(SIGMA - TAU_SV, 0)),
        "he_yuan_step": (ex.he_yuan_step, (1.0, 0.2, 0.5, 0.9),
                         _he_yuan(1.0, 0.2, 0.5, 0.9, 0.5, 0.75, essential=True),
                         _he_yuan(1.0, 0.2, 0.5, 0.9, 0.5, 0.75, essential=False)),
        "lambda_max": (ex.lambda_max, (X, Yr, b),
                       (lam1_max, float(np.sqrt(np.linalg.eigvalsh(C.T @ C).max())),
                        lam1_max / float(np.mean([math.sqrt(sum(C[i, j] ** 2 for i in range(3)))
                                                  for j in range(5)]))),
                       (lam1_max, float(np.linalg.norm(C)), 1.0)),
        "midpoint_gap_relu": (ex.midpoint_gap, (1.0, 2.0, -2.0, 2.0),
                              _gap(1.0, 2.0, -2.0, 2.0, lambda z: max(z, 0.0)), 0.0),
        "midpoint_gap_linear": (lambda a, *args: ex.midpoint_gap(a, *args, response="linear"),
                                (3.0, 1.0, -1.0, 2.0), -(3.0 * (2.0 + 1.0)) ** 2 / 4, 0.0),
        "relu_term_all_dead": (ex.relu_term_all_dead, (X, Z, b, W_dead),
                               float((Yr ** 2).sum() / (2 * n_samples)),
                               float((Z ** 2).sum() / (2 * n_samples))),
        "segment_ratio": (ex.segment_ratio, (X, Z, b, W_dead, W), (1 - 0.5) ** 2, 0.5),
        "break_even_rank": (ex.break_even_rank, (n, d), math.ceil(n * d / (n + d)) - 1,
                            math.ceil(n * d / (n + d))),
        "first_possible_difference": (ex.first_possible_difference,
                                      (chain, ["2", "4"], torch.rand(2, 2, 8, 8)), 2, 1),
        "first_possible_difference_unrelated": (
            ex.first_possible_difference, (chain, ["4", "2"], torch.rand(2, 2, 8, 8)), 3, 2),
        "network_mac_fraction": (ex.network_mac_fraction,
                                 (nn.Sequential(conv, second), nn.Sequential(mod, second),
                                  (1, 4, 8, 8)),
                                 (64 * macs_per_pos + 16 * 324) / (64 * 6 * 36 + 16 * 324),
                                 (macs_per_pos + 324) / (6 * 36 + 324)),
        "combined_size": (ex.combined_size, (row,), float(sizes @ weights / weights.sum()),
                        float(sizes.mean())),
        "stored_parameters": (ex.stored_parameters, (mod,), stored, stored - s["n"]),
        "mac_fraction": (ex.mac_fraction, (mod,), macs_per_pos / (s["n"] * s["d"]),
                         (stored - s["n"]) / (s["n"] * s["d"] + s["n"])),
        "macs_saved": (ex.macs_saved, (nn.Sequential(conv), nn.Sequential(mod), (1, 4, 8, 8)),
                       64 * (s["n"] * s["d"] - macs_per_pos),
                       s["n"] * s["d"] - macs_per_pos),
        "paper_network_size": (ex.paper_network_size, (small, table, names),
                             (50 * size_c + 10 * size_f) / (size_c + size_f), 30.0),
    }


CASES = _cases()
NAMES = sorted(CASES)


@pytest.mark.parametrize("name", NAMES)
def test_accepts_the_right_answer(name, capsys):
    check, args, right, _ = CASES[name]
    assert check(right, *args) is True
    assert "correct." in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_rejects_a_wrong_answer_with_a_hint(name, capsys):
    check, args, _, wrong = CASES[name]
    assert check(wrong, *args) is False
    out = capsys.readouterr().out
    assert "not yet" in out and "Hint:" in out


@pytest.mark.parametrize("name", NAMES)
def test_placeholder_is_not_answered_and_does_not_raise(name, capsys):
    check, args, _, _ = CASES[name]
    assert check(..., *args) is None
    assert "not answered yet" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_refuses_an_answer_of_the_wrong_kind(name):
    check, args, _, _ = CASES[name]
    with pytest.raises(TypeError, match="answer must be"):
        check("seven", *args)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "prox_frobenius"])
def test_refuses_an_answer_of_the_wrong_shape(name):
    check, args, _, _ = CASES[name]
    with pytest.raises(ValueError, match="expected"):
        check(np.zeros((3, 3, 3)), *args)


def test_a_pair_with_one_placeholder_is_not_answered():
    assert ex.he_yuan_step((0.5, ...), 1.0, 0.2, 0.5, 0.9) is None


def test_prox_frobenius_refuses_a_result_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"expected shape \(6, 8\)"):
        ex.prox_frobenius(lambda V, tau: V.ravel(), V)


@pytest.mark.parametrize("check", [ex.stored_parameters, ex.mac_fraction])
def test_factored_layer_checks_refuse_a_dense_conv(check):
    with pytest.raises(TypeError, match="SparseLowRankConv2d"):
        check(1, nn.Conv2d(2, 2, 3))


def test_midpoint_gap_refuses_an_unknown_response():
    with pytest.raises(ValueError, match="response"):
        ex.midpoint_gap(0.0, 1.0, 1.0, -1.0, 1.0, response="tanh")


# ----------------------------------------------------------------- notebooks 08 and 09

def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _cases_08_09():
    """name -> (checker, args after the answer, right answer, wrong answer), from the
    closed forms the exercises of notebooks 08 and 09 ask for."""
    original = {"a": 2.0, "b": 6.0, "c": 1.0, "d": 1.0}  # total 10, b and c changed
    p = 3.0 / 10.0  # the unchanged share
    g = np.random.default_rng(2)
    S, T, temp = g.standard_normal((4, 6)), 3 * g.standard_normal((4, 6)), 2.5
    grad = temp * (_softmax(S / temp) - _softmax(T / temp)) / S.shape[0]
    centred = (S - S.mean(1, keepdims=True)) - (T - T.mean(1, keepdims=True))
    limit = float(np.linalg.norm(centred)) / (S.shape[1] * S.shape[0])
    c, n = 64, 128
    return {
        "amdahl_bound": (ex.amdahl_bound, (original, ["b", "c"]), 1 / p, 10 / 7),
        "uv_mac_speedup": (ex.uv_mac_speedup, (c, n, [16, 17]),
                           [n * 9 * c / (r * (9 * c + n)) for r in (16, 17)],
                           [n * 9 * c / (r * 9 * c) for r in (16, 17)]),
        "soft_term_gradient": (ex.soft_term_gradient, (S, T, temp), grad, grad / temp ** 2),
        "soft_term_limit": (ex.soft_term_limit, (S, T), limit,
                            float(np.linalg.norm(S - T)) / (S.shape[1] * S.shape[0])),
    }


CASES_08_09 = _cases_08_09()


def _cases_07():
    """name -> (checker, args after the answer, right answer, wrong answer) for notebook 07,
    from closed forms."""
    n, d, c, r = 64, 576, 10, 20
    shapes = [(64, 27), (128, 576), (512, 4608)]
    k = 150.0  # 27 * 64 = 1728 < k^2: the first layer stays whole, the others are cut
    weights = np.array([a * b for a, b in shapes], dtype=float)
    share = float(np.minimum(weights, k * np.sqrt(weights)).sum() / weights.sum())
    return {
        "equal_size_rank": (ex.equal_size_rank, (n, d, c, r), (n * c + r * (n + d)) // (n + d),
                            r),
        "sqrt_spread_share": (ex.sqrt_spread_share, (shapes, k), share,
                              float(np.mean(np.minimum(1, k / np.sqrt(weights))))),
    }


CASES_07 = _cases_07()


#: the checks of notebooks 07-09
LATER_CASES = {**CASES_08_09, **CASES_07}


@pytest.mark.parametrize("name", sorted(LATER_CASES))
def test_07_to_09_checks_accept_the_right_answer_and_reject_a_wrong_one(name, capsys):
    check, args, right, wrong = LATER_CASES[name]
    assert check(right, *args) is True
    assert "correct" in capsys.readouterr().out
    assert check(wrong, *args) is False
    assert "not yet. Hint:" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(LATER_CASES))
def test_07_to_09_checks_wait_on_the_placeholder_and_refuse_malformed_answers(name, capsys):
    check, args, _, _ = LATER_CASES[name]
    assert check(..., *args) is None
    assert "not answered yet" in capsys.readouterr().out
    with pytest.raises(TypeError, match="answer must be"):
        check("seven", *args)
    with pytest.raises(ValueError, match="expected"):
        check(np.zeros((3, 3, 3)), *args)


def test_sqrt_spread_share_check_refuses_a_malformed_share():
    with pytest.raises(TypeError, match="answer must be"):
        ex.sqrt_spread_share("half", [(4, 9)], 1.0)
    assert ex.sqrt_spread_share(1.5, [(4, 9), (8, 8)], 1.0) is False


ALL_CASES = {**CASES, **LATER_CASES}


@pytest.mark.parametrize("mode", ["autograde", "validate"])
@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_under_nbgrader_a_check_raises_unless_right(name, mode, monkeypatch, capsys):
    """nbgrader scores a check cell zero only if it raises: under NBGRADER_EXECUTION the
    placeholder and a wrong answer raise (naming what is wrong), the right answer passes."""
    check, args, right, wrong = ALL_CASES[name]
    monkeypatch.setenv("NBGRADER_EXECUTION", mode)
    assert check(right, *args) is True
    assert "correct" in capsys.readouterr().out
    with pytest.raises(NotAnswered, match="not answered yet"):
        check(..., *args)
    with pytest.raises(WrongAnswer, match="not yet. Hint:"):
        check(wrong, *args)
