"""lrsa.evaluation against closed forms and brute force."""

import itertools
import math

import numpy as np
import pytest

from lrsa.evaluation import (Interval, bootstrap_interval, bootstrap_replicates, mcnemar,
                             percentile_bootstrap, split_indices)


def test_split_indices_is_a_seeded_partition():
    first, rest = split_indices(1000, 100, seed=3)
    assert len(first) == 100 and len(rest) == 900
    assert np.array_equal(np.sort(np.concatenate([first, rest])), np.arange(1000))
    again, _ = split_indices(1000, 100, seed=3)
    other, _ = split_indices(1000, 100, seed=4)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.parametrize("first", [0, 10, -1])
def test_split_indices_refuses_an_empty_side(first):
    with pytest.raises(ValueError, match="0 < first < n"):
        split_indices(10, first)


def test_accuracy_interval_matches_the_normal_approximation():
    # one seed, 20,000 images: the bootstrap of a mean of 0/1 values is, closely, the
    # binomial's normal interval p +- 1.96 sqrt(p (1 - p) / n)
    rng = np.random.default_rng(0)
    correct = (rng.random(20_000) < 0.83).astype(np.uint8)
    iv = bootstrap_interval([correct], replicates=4000)
    p = correct.mean()
    half = 100 * 1.959964 * math.sqrt(p * (1 - p) / correct.size)
    assert iv.mean == pytest.approx(100 * p)
    assert iv.low == pytest.approx(100 * p - half, abs=0.08)
    assert iv.high == pytest.approx(100 * p + half, abs=0.08)


def test_paired_difference_matches_its_closed_form():
    # one seed: the difference's replicates are means of d_i in {-1, 0, 1}; their standard
    # deviation is sd(d) / sqrt(n), which the pairing makes far smaller than unpaired
    rng = np.random.default_rng(1)
    a = (rng.random(10_000) < 0.8).astype(np.uint8)
    b = a.copy()
    flip = rng.random(a.size) < 0.05
    b[flip] = 1 - b[flip]
    reps = bootstrap_replicates([a, b], [1, -1], replicates=4000)
    d = a.astype(float) - b
    assert reps.std() == pytest.approx(100 * d.std() / math.sqrt(d.size), rel=0.05)
    unpaired = 100 * math.sqrt((a.var() + b.var()) / a.size)
    assert reps.std() < unpaired / 2


def test_identical_models_have_a_zero_interval():
    rng = np.random.default_rng(2)
    a = (rng.random((3, 500)) < 0.7).astype(np.uint8)
    iv = bootstrap_interval([a, a.copy()])
    assert (iv.mean, iv.low, iv.high) == (0.0, 0.0, 0.0)
    assert iv.comparison() == "indistinguishable at this budget"


def test_seed_level_resampling_matches_enumeration():
    # every image right under seed 0, wrong under seeds 1 and 2: images resampled change
    # nothing, so the replicates are 100 * k / 3, k ~ Binomial(3, 1/3) (brute force over
    # the 27 ordered draws of three seeds)
    correct = np.zeros((3, 50), dtype=np.uint8)
    correct[0] = 1
    reps = bootstrap_replicates([correct], [1], replicates=20_000, seed=5)
    for k in range(4):
        exact = sum(1 for draw in itertools.product(range(3), repeat=3)
                    if draw.count(0) == k) / 27
        assert np.mean(np.isclose(reps, 100 * k / 3)) == pytest.approx(exact, abs=0.012)


def test_bootstrap_refuses_bad_arrays():
    with pytest.raises(ValueError, match="0 or 1"):
        bootstrap_interval([np.array([0, 2, 1])])
    with pytest.raises(ValueError, match="shape"):
        bootstrap_interval([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="one weight per array"):
        bootstrap_replicates([np.ones(3)], [1, -1])


def _mcnemar_brute_force(b, c):
    """The two-sided exact p: twice the smaller tail of Binomial(b + c, 1/2), summed term by
    term with integer binomial coefficients."""
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (10, 4), (25, 25), (60, 38)])
def test_mcnemar_against_brute_force(b, c):
    both, neither = 7, 5
    a = np.array([1] * b + [0] * c + [1] * both + [0] * neither)
    other = np.array([0] * b + [1] * c + [1] * both + [0] * neither)
    out = mcnemar(a, other)
    assert (out["only_a"], out["only_b"]) == (b, c)
    assert out["p_value"] == pytest.approx(_mcnemar_brute_force(b, c), rel=1e-9)


def test_mcnemar_refuses_different_images():
    with pytest.raises(ValueError, match="same images"):
        mcnemar(np.ones(3), np.ones(4))


def test_interval_wording():
    assert Interval(0.5, 0.1, 0.9).comparison("A higher", "B higher") == "A higher"
    assert Interval(-0.5, -0.9, -0.1).comparison("A higher", "B higher") == "B higher"
    assert Interval(0.99, 0.6, 1.4).target(1.0).startswith("mean 0.99")
    assert Interval(0.5, 0.2, 0.8).target(1.0).startswith("met")


def test_percentile_bootstrap_of_a_mean_matches_the_normal_interval():
    values = np.random.default_rng(3).normal(2.0, 0.3, 400)
    iv = percentile_bootstrap(values, np.mean, replicates=4000)
    half = 1.959964 * values.std() / math.sqrt(values.size)
    assert iv.mean == pytest.approx(values.mean())
    assert (iv.low, iv.high) == pytest.approx((values.mean() - half, values.mean() + half),
                                              abs=0.006)
    same = percentile_bootstrap([1.8, 1.8, 1.8])
    assert (same.low, same.mean, same.high) == (1.8, 1.8, 1.8)
    with pytest.raises(ValueError, match=">= 2 finite"):
        percentile_bootstrap([1.0])
