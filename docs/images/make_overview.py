"""Draw docs/images/overview.png: one layer's W beside the A and B that replace it.

    python docs/images/make_overview.py

The layer is the third convolution of the small CNN the notebooks train on scikit-learn's
bundled digits (no download, seeded): W is its lowered, BatchNorm-folded weight (n x d,
d = c k^2, columns grouped by input channel), and A + B is Algorithm 1's solution of the
linear-response problem on sampled feature maps (convex; notebook 03 compares it with
the ReLU response), at the relative lambdas set below. A few seconds on a
CPU (the digits model is trained once and cached, see lrsa.course.setups.cache_folder).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import lrsa  # noqa: E402
from lrsa.batchnorm import fold_batchnorm  # noqa: E402
from lrsa.features import collect_features  # noqa: E402
from lrsa.course.setups import digits_setup  # noqa: E402

LAYER, RELATIVE_LAM1, RATIO = "features.7", 0.4, 4.0  # as lrsa.LayerPlan(relative_lam1, ratio)
OUT = Path(__file__).with_name("overview.png")


def main():
    torch.manual_seed(0)
    setup = digits_setup()
    model = fold_batchnorm(setup.model.eval())
    conv = model.get_submodule(LAYER)
    feats = collect_features(model, [LAYER], setup.calib, samples_per_image=10, seed=0)[LAYER]
    W = conv.weight.detach().reshape(conv.out_channels, -1).double()
    X, Z = feats.X.double(), feats.Z.double()
    b = conv.bias.detach().double()
    # lambdas relative to the layer's scale, as the pipeline sets them: lam1 = relative_lam1 s,
    # s the mean column norm of the cross-correlation Z X^T / N; lam2 = ratio lam1
    scale = float(torch.linalg.vector_norm(Z @ X.T / X.shape[1], dim=0).mean())
    sol = lrsa.solve_layer(X, Z, lam1=RELATIVE_LAM1 * scale, lam2=RATIO * RELATIVE_LAM1 * scale,
                           response="linear", bias=b)
    A, B = sol.A.numpy(), sol.B.numpy()
    n, d = W.shape
    k2 = conv.kernel_size[0] * conv.kernel_size[1]
    kept = int(np.count_nonzero(np.abs(A).reshape(n, -1, k2).sum(axis=(0, 2)) > 0))
    print(f"{LAYER}: W {n} x {d}; A keeps {sol.nonzero_columns} columns ({kept} channels), "
          f"rank(B) = {sol.rank}; stored {kept * k2 * n + sol.rank * (n + d)} of {n * d}")

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), constrained_layout=True)
    panels = [(W.numpy(), f"W: the layer's weight\n{n} x {d}, {n * d:,} stored"),
              (A, f"A: structured sparse ($\\ell_{{2,1}}$)\n{kept} input channels kept: "
                  f"{kept * k2 * n:,} stored"),
              (B, f"B: low rank (nuclear norm)\nrank {sol.rank}: {sol.rank * (n + d):,} stored")]
    for ax, (M, title) in zip(axes, panels):
        vmax = float(np.abs(M).max()) * 0.6  # each panel on its own scale: the convex
        # relaxation shrinks A and B, and on W's scale B would be a pale wash
        ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto",
                  interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel("output channels")
    for ax in axes:
        ax.set_xlabel("inputs (channel, kernel position)")
    fig.text(0.355, 0.5, "$\\approx$", fontsize=22, ha="center", va="center")
    fig.text(0.68, 0.5, "+", fontsize=22, ha="center", va="center")
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
