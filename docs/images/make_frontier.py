"""Draw docs/images/frontier.png: VGG-16's top-1 before fine-tuning against size and against
measured speed, for lrsa, truncated SVD and reduced-rank regression, from
benchmarks/results/frontier.json (benchmarks/frontier.py).

    python docs/images/make_frontier.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lrsa.course import lessons as L  # noqa: E402

OUT = Path(__file__).with_name("frontier.png")


def main():
    grid = L.saved_results("frontier")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    L.plot_frontier(grid["rows"], x="ratio", ax=axes[0])
    axes[0].set_title("size against top-1, both spreads")
    L.plot_frontier(grid["rows"], x="speedup_b128", ax=axes[1])
    axes[1].set_title("the default spread: batch-128 speed-up (label: x fewer weights)")
    for ax in axes:
        ax.axhline(grid["top1_original"], color="k", lw=1, ls="--")
    fig.suptitle(f"VGG-16 / CIFAR-10 before fine-tuning (code {grid['code_version'][:7]}; "
                 f"dashed: the original, {grid['top1_original']:.2f} %)", fontsize=10)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
