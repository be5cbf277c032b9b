"""How sure a top-1 figure is: fixed splits, paired hierarchical bootstrap intervals and
McNemar's exact test over per-image correctness (the protocol of docs/evaluation.md).

NumPy and SciPy only. Every function takes *correctness arrays*: ``correct[s, i]`` is 1
where the model trained or compressed with seed ``s`` classified report image ``i``
correctly, 0 where not; the arrays of models compared with each other share their seeds
(data order, calibration sample) and their images, which is what makes the comparison
paired.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binom


def split_indices(n, first, seed=0):
    """Two disjoint index arrays covering ``range(n)``: ``first`` indices and the rest,
    from a permutation seeded by ``seed`` (so reproducible from the seed alone), each
    sorted.

    ``split_indices(50_000, 5_000)``: a validation split of CIFAR-10's training set;
    ``split_indices(10_000, 5_000)``: two fixed halves of its test set (select on one,
    report on the other) for a model trained on all 50,000 training images.
    """
    if not 0 < first < n:
        raise ValueError(f"split_indices needs 0 < first < n, got first={first}, n={n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:first]), np.sort(perm[first:])


@dataclass(frozen=True)
class Interval:
    """A mean (in percent or points) and its two-sided ``level`` percentile interval
    ``[low, high]`` from ``replicates`` bootstrap replicates."""

    mean: float
    low: float
    high: float
    level: float = 0.95
    replicates: int = 0

    def __str__(self):
        return f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}]"

    def excludes_zero(self):
        """Whether the interval lies wholly on one side of 0 (a difference is resolved)."""
        return self.low > 0 or self.high < 0

    def comparison(self, better="higher", worse="lower"):
        """The wording for a difference A - B: ``better`` / ``worse`` where the interval
        excludes 0, else "indistinguishable at this budget"."""
        if not self.excludes_zero():
            return "indistinguishable at this budget"
        return better if self.low > 0 else worse

    def target(self, at_most):
        """The wording for a target on a drop: "met" where the whole interval is under
        ``at_most``, else "mean X, 95 % interval [a, b]"."""
        if self.high < at_most:
            return f"met (<= {at_most}: 95 % interval [{self.low:.2f}, {self.high:.2f}])"
        return (f"mean {self.mean:.2f}, {100 * self.level:.0f} % interval "
                f"[{self.low:.2f}, {self.high:.2f}] (target <= {at_most})")

    def to_dict(self):
        return {"mean": self.mean, "low": self.low, "high": self.high, "level": self.level,
                "replicates": self.replicates}


def _as_stack(arrays):
    stack = np.stack([np.asarray(a, dtype=float) for a in arrays])
    if stack.ndim == 2:  # one seed: (images,) arrays
        stack = stack[:, None, :]
    if stack.ndim != 3 or stack.shape[1] < 1 or stack.shape[2] < 1:
        raise ValueError("correctness arrays must all have the shape (seeds, images) or "
                         f"(images,); got shapes {[np.shape(a) for a in arrays]}")
    if not np.isin(stack, (0.0, 1.0)).all():
        raise ValueError("correctness arrays hold 0 or 1 (1: the image was classified "
                         "correctly)")
    return stack


def bootstrap_replicates(arrays, weights, *, replicates=10_000, seed=0, chunk=500):
    """Replicates of ``100 * sum_k weights[k] * mean(arrays[k])`` under the paired
    hierarchical bootstrap: each replicate draws the seeds with replacement, then the
    images with replacement, the same draws for every array (paired).

    Parameters
    ----------
    arrays : sequence of array_like, each (seeds, images) or (images,), values 0 / 1
    weights : sequence of float, one per array: ``[1]`` gives an accuracy, ``[1, -1]`` the
        difference of two.
    replicates : int
    seed : int
        The bootstrap's own random generator.

    Returns
    -------
    ndarray, shape (replicates,)
    """
    stack = _as_stack(arrays)
    if len(weights) != len(stack):
        raise ValueError(f"one weight per array: {len(weights)} weights, {len(stack)} arrays")
    combined = np.tensordot(np.asarray(weights, dtype=float), stack, axes=1)  # (S, N)
    n_seeds, n_images = combined.shape
    rng = np.random.default_rng(seed)
    out = np.empty(replicates)
    for start in range(0, replicates, chunk):
        r = min(chunk, replicates - start)
        # resampling images with replacement = multinomial counts of each image
        image_counts = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=r)
        per_seed = image_counts @ combined.T / n_images  # (r, S)
        seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=r)
        out[start:start + r] = 100 * (per_seed * seed_counts).sum(1) / n_seeds
    return out


def bootstrap_interval(arrays, weights=None, *, level=0.95, replicates=10_000, seed=0):
    """:class:`Interval` of ``100 * sum_k weights[k] * mean(arrays[k])`` (default weights:
    ``[1]`` for one array, ``[1, -1]`` for two, their difference): the mean over all seeds
    and images, and the percentile interval of :func:`bootstrap_replicates`."""
    if weights is None:
        weights = {1: [1.0], 2: [1.0, -1.0]}.get(len(arrays))
        if weights is None:
            raise ValueError("give weights for more than two arrays")
    mean = 100 * float(np.tensordot(np.asarray(weights, float), _as_stack(arrays),
                                    axes=1).mean())
    reps = bootstrap_replicates(arrays, weights, replicates=replicates, seed=seed)
    return _percentile_interval(mean, reps, level)


def _percentile_interval(mean, replicates, level):
    """:class:`Interval` of ``mean`` with the two-sided ``level`` percentile interval of the
    bootstrap ``replicates``."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(float(mean), float(low), float(high), level, len(replicates))


def percentile_bootstrap(values, statistic=np.median, *, level=0.95, replicates=10_000,
                         seed=0):
    """:class:`Interval` of ``statistic(values)`` by resampling ``values`` with replacement
    (e.g. the speed-up ratios of several timing processes: the median ratio and its
    interval over processes). The mean of the Interval is ``statistic(values)``."""
    values = np.asarray(values, dtype=float).ravel()
    if values.size < 2 or not np.isfinite(values).all():
        raise ValueError(f"percentile_bootstrap needs >= 2 finite values, got {values}")
    rng = np.random.default_rng(seed)
    draws = values[rng.integers(0, values.size, size=(replicates, values.size))]
    return _percentile_interval(statistic(values), np.apply_along_axis(statistic, 1, draws),
                                level)


def mcnemar(correct_a, correct_b):
    """McNemar's exact test of two models on the same images.

    With ``b`` the images only A classifies correctly and ``c`` those only B does, under
    the null hypothesis each discordant image is A's with probability 1/2, so
    ``p = min(1, 2 P[Bin(b + c, 1/2) <= min(b, c)])``.

    Returns
    -------
    dict
        ``only_a`` (b), ``only_b`` (c), ``p_value``.
    """
    a, b = (np.asarray(x).astype(bool).ravel() for x in (correct_a, correct_b))
    if a.shape != b.shape:
        raise ValueError(f"mcnemar compares the same images: {a.shape} against {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else min(1.0, 2 * float(binom.cdf(min(only_a, only_b), n, 0.5)))
    return {"only_a": only_a, "only_b": only_b, "p_value": p}
