"""The correction step: the Chen-He-Ye-Yuan counterexample, in the coordinates that matter."""

import numpy as np
import pytest

import lrsa.solver
from lrsa.admm import chen_he_ye_yuan_iterates, chen_he_ye_yuan_spectral_radius


def test_direct_extension_diverges_with_the_published_rate():
    rho = chen_he_ye_yuan_spectral_radius(correction=False)
    assert rho == pytest.approx(1.0278, abs=1e-4)  # Chen, He, Ye, Yuan (2016)
    norms = chen_he_ye_yuan_iterates(600, correction=False)
    assert norms[-1] > 1e4 * norms[0]


def test_corrected_scheme_converges():
    assert chen_he_ye_yuan_spectral_radius(correction=True) < 0.98
    norms = chen_he_ye_yuan_iterates(600, correction=True)
    assert norms[-1] < 1e-5 * norms[0]


def test_correction_in_raw_coordinates_diverges():
    # the third essential variable's sign flipped: on A + B - M = 0 that is eq. (13) applied to
    # (B, M); on this example (A3 = (1, 2, 2)^T) an analogue of it, which diverges
    assert chen_he_ye_yuan_spectral_radius(correction=True, coordinates="raw") > 1.05
    norms = chen_he_ye_yuan_iterates(400, correction=True, coordinates="raw")
    assert norms[-1] > 1e6 * norms[0]


def test_solve_layer_uses_the_same_correction(monkeypatch):
    calls = []
    original = lrsa.solver.he_yuan_correction

    def spy(*args):
        calls.append(args[-2:])  # (tau, alpha)
        return original(*args)

    monkeypatch.setattr(lrsa.solver, "he_yuan_correction", spy)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 50))
    lrsa.solver.solve_layer(X, rng.standard_normal((3, 6)) @ X, 0.01, 0.02,
                            response="linear", max_iter=5)
    assert len(calls) == 5 and calls[0] == (0.5, 0.75)


def test_bad_coordinates():
    with pytest.raises(ValueError, match="coordinates"):
        chen_he_ye_yuan_iterates(3, coordinates="whatever")


def test_general_map_reproduces_the_chen_example():
    from lrsa.admm import CHEN_HE_YE_YUAN_MATRIX, three_block_spectral_radius
    As = np.split(CHEN_HE_YE_YUAN_MATRIX, 3, axis=1)
    for kw in (dict(correction=False), dict(correction=True),
               dict(correction=True, coordinates="raw")):
        assert three_block_spectral_radius(As, **kw) == pytest.approx(
            chen_he_ye_yuan_spectral_radius(**kw), abs=1e-12)
    assert three_block_spectral_radius(As, coordinates="raw") == pytest.approx(1.0865, abs=1e-4)


def test_paper_constraint_with_convex_quadratics():
    """A + B - M = 0 (A1 = A2 = I, A3 = -I), strictly convex quadratic theta_i: the corrected
    iteration contracts in both coordinate systems (He-Yuan covers the essential one; the raw
    one, eq. 13 as printed, is measured). The radius is checked by iterating the map too."""
    from lrsa.admm import three_block_spectral_radius
    rng = np.random.default_rng(0)
    p = 2
    As = [np.eye(p), np.eye(p), -np.eye(p)]
    for _ in range(100):
        Qs = [(lambda G: G @ G.T + 1e-2 * np.eye(p))(rng.standard_normal((p, p)))
              for _ in range(3)]
        t = 10 ** rng.uniform(-1, 1)
        for coords in ("essential", "raw"):
            assert three_block_spectral_radius(As, Qs, coordinates=coords, t=t) < 1
    # a divergent raw variant exists for another coefficient matrix: the Chen example
    assert chen_he_ye_yuan_spectral_radius(coordinates="raw") > 1
