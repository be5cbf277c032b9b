"""Draw docs/images/ablation.png: the ablation on NIN and VGG-16 (benchmarks/ablation.py),
every method's top-1 after fine-tuning and its paired drop against the control, with 95 %
intervals on the report half, from benchmarks/results/ablation_<network>_correct.npz.

    python docs/images/make_ablation.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lrsa.course import fine_tuning as F  # noqa: E402
from lrsa.course.resources import saved_correctness, saved_results  # noqa: E402

OUT = Path(__file__).with_name("ablation.png")
NETWORKS = {"nin": "NIN", "vgg16": "VGG-16"}


def main():
    fig, axes = plt.subplots(len(NETWORKS), 2, figsize=(13, 7.6), constrained_layout=True)
    for row, (key, name) in zip(axes, NETWORKS.items()):
        seeds, val, report, correct = saved_correctness(f"ablation_{key}_correct")
        _, top1, drops = F.ablation_intervals(correct, val, report)
        settings = saved_results(f"ablation_{key}")["settings"]
        F.plot_ablation(top1, drops, axes=row,
                        network=f"{name} ({len(seeds['after'])} seeds, {settings['epochs']} "
                                f"ep. at lr {settings['lr']:g}):")
    fig.suptitle("Does the sparse part pay? After fine-tuning, on the report half "
                 f"({len(report)} test images)", fontsize=10)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
