"""VGG-16 with BatchNorm for 32 x 32 inputs (CIFAR-10), laid out like torchvision's ``vgg16_bn``.

Layout: ``features.{i}`` holds 13 blocks
Conv2d(3x3, padding 1) -> BatchNorm2d -> ReLU with MaxPool2d(2, 2) after blocks 2, 4, 7, 10, 13
(conv indices 0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40); the 512 values left after the
last pool are flattened (no average pool) into ``classifier.{0,3,6}``, the paper's fc1-fc3.
"""

from __future__ import annotations

from torch import nn

__all__ = ["VGG", "VGG16_CFG", "vgg16_bn"]

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M")


class VGG(nn.Module):
    """VGG network: ``features`` (conv stack), flatten, ``classifier`` (three Linear layers).

    Parameters
    ----------
    cfg : sequence of int or "M"
        Output channels of each 3x3 conv; ``"M"`` is a 2x2 max pool.
    num_classes : int
        Outputs of the last Linear layer.
    batch_norm : bool
        BatchNorm2d after every conv.
    in_channels : int
        Input channels.
    flat_features : int
        Values per sample after ``features`` (512 for 32 x 32 inputs and five pools).
    hidden : int
        Width of fc1 and fc2.
    dropout : float
        Dropout after fc1 and fc2.
    arch : str
        Architecture name that checkpoints record (see :func:`lrsa.models.load_checkpoint`).
    """

    def __init__(self, cfg=VGG16_CFG, num_classes=10, batch_norm=True, in_channels=3,
                 flat_features=512, hidden=512, dropout=0.5, arch="vgg"):
        super().__init__()
        self.arch = arch
        layers, c = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c, int(v), 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(v)))
            layers.append(nn.ReLU(inplace=True))
            c = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(flat_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def vgg16_bn(num_classes: int = 10) -> VGG:
    """VGG-16 with BatchNorm for CIFAR-10 (32 x 32 RGB inputs, normalized as in lrsa.data).

    Parameters
    ----------
    num_classes : int
        Outputs (10 for CIFAR-10). The model's ``arch`` is ``"vgg16_bn_cifar10"`` when 10,
        else ``"vgg16_bn_cifar{num_classes}"``.

    Returns
    -------
    VGG
        Randomly initialized; train it with ``lrsa train --model vgg16_bn`` and load the
        weights with :func:`lrsa.models.load_checkpoint`.
    """
    return VGG(VGG16_CFG, num_classes=num_classes, arch=f"vgg16_bn_cifar{num_classes}")
