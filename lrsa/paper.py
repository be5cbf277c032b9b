"""The paper's published numbers (Ma et al., ICTAI 2019), verbatim, and the maps from this
package's module names to the paper's layer names. Everything that compares with the paper
reads them from here.
"""

__all__ = ["ALEXNET_LAYER_NAMES", "NIN_LAYER_NAMES", "PAPER_ALEXNET", "PAPER_NIN",
           "PAPER_TABLE_I", "PAPER_TABLE_II", "PAPER_TABLE_IV", "PAPER_VGG16",
           "VGG16_LAYER_NAMES"]

#: Paper Table I (VGG-16, CIFAR-10): layer -> (CR(A), CR(B), CR(A+B)) in %, verbatim.
#: Note: the paper's conv4-3 row does not add up (4.0 + 16.3 != 24.3); kept as printed.
PAPER_TABLE_I = {
    "conv1-1": (0.0, 100.0, 100.0), "conv1-2": (5.4, 52.1, 57.5),
    "conv2-1": (5.4, 38.2, 43.6), "conv2-2": (2.2, 28.6, 30.8),
    "conv3-1": (2.8, 47.7, 50.5), "conv3-2": (4.0, 54.3, 58.3),
    "conv3-3": (10.0, 59.0, 69.0), "conv4-1": (2.0, 16.0, 18.0),
    "conv4-2": (2.0, 22.4, 24.4), "conv4-3": (4.0, 16.3, 24.3),
    "conv5-1": (2.0, 9.8, 11.8), "conv5-2": (2.0, 8.7, 10.7),
    "conv5-3": (2.0, 6.7, 8.7), "fc1": (44.2, 0.0, 44.2),
    "fc2": (36.2, 0.0, 36.2), "fc3": (24.0, 0.0, 24.0),
}
#: Paper whole-network VGG-16 results (Tables I and III): size reduction, speed-up, top-1 drop
#: (points) after fine-tuning, and the baseline's top-1 (%).
PAPER_VGG16 = {"params_ratio": 4.44, "speedup": 2.2, "accuracy_drop": 0.40,
               "baseline_top1": 92.05}

#: Paper Table II (NIN, CIFAR-10): layer -> (CR(A), CR(B), CR(A+B)) in %, verbatim. Only the
#: three spatial convolutions are approximated, and only by their low-rank part.
PAPER_TABLE_II = {
    "conv1": (0.0, 18.4, 18.4), "cccp1": (0.0, 100.0, 100.0), "cccp2": (0.0, 100.0, 100.0),
    "conv2": (0.0, 16.9, 16.9), "cccp3": (0.0, 100.0, 100.0), "cccp4": (0.0, 100.0, 100.0),
    "conv3": (0.0, 38.2, 38.2), "cccp5": (0.0, 100.0, 100.0), "cccp6": (0.0, 100.0, 100.0),
}
#: Paper whole-network NIN results (Tables II and III): CR 36.0 %, 2.77x smaller, top-1 drop
#: 0.41 points. Speed-up: Table II prints 2.2x, Table III and the text 1.70x.
PAPER_NIN = {"size_pct": 36.0, "params_ratio": 2.77, "speedup": 1.7, "speedup_table_ii": 2.2,
             "accuracy_drop": 0.41}
#: Our NIN module names -> the paper's layer names.
NIN_LAYER_NAMES = {f"features.{n}": n for n in PAPER_TABLE_II}

_CONV_IDX = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)
_CONV_NAMES = [f"conv{s}-{i}" for s, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
               for i in range(1, n + 1)]
#: Our VGG-16 module names -> the paper's layer names.
VGG16_LAYER_NAMES = {
    **{f"features.{i}": nm for i, nm in zip(_CONV_IDX, _CONV_NAMES)},
    "classifier.0": "fc1", "classifier.3": "fc2", "classifier.6": "fc3",
}

#: Paper Table IV (AlexNet, ILSVRC-2012): layer -> (CR(A), CR(B), CR(A+B)) in %, verbatim.
#: Note: the text says the first two convolutions are not approximated, the table lists
#: conv2 at 45.0 %; kept as printed.
PAPER_TABLE_IV = {
    "conv1": (0.0, 100.0, 100.0), "conv2": (21.4, 23.6, 45.0), "conv3": (30.0, 22.9, 52.9),
    "conv4": (0.0, 32.6, 32.6), "conv5": (0.0, 26.0, 26.0), "fc1": (12.8, 0.0, 12.8),
    "fc2": (26.2, 0.0, 26.2), "fc3": (18.8, 0.0, 18.8),
}
#: Paper whole-network AlexNet results (Table IV): CR 18.0 %, 5.56x smaller, 1.1x faster,
#: top-5 accuracy 1.27 points lower (after fine-tuning).
PAPER_ALEXNET = {"size_pct": 18.0, "params_ratio": 5.56, "speedup": 1.1, "top5_drop": 1.27}
#: Our AlexNet module names (torchvision layout) -> the paper's layer names.
ALEXNET_LAYER_NAMES = {
    "features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
    "features.10": "conv5", "classifier.1": "fc1", "classifier.4": "fc2", "classifier.6": "fc3",
}
