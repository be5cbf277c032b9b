"""Network in Network for CIFAR-10 (Lin, Chen and Yan 2013; the Caffe model-zoo CIFAR model).

Three blocks of a spatial conv followed by two 1x1 "cccp" convs, ReLU after each conv:
conv1 5x5 192 -> cccp1 160 -> cccp2 96 -> max pool 3/2 -> dropout 0.5 ->
conv2 5x5 192 -> cccp3 192 -> cccp4 192 -> avg pool 3/2 -> dropout 0.5 ->
conv3 3x3 192 -> cccp5 192 -> cccp6 ``num_classes`` -> global average pool.
Pools use Caffe's ceil rounding (32 -> 16 -> 8). Module names follow the paper's Table II
(``features.conv1``, ``features.cccp1``, ...).

``nin_bn`` adds a BatchNorm after every conv (``features.bn_conv1``, ...): the plain NIN sits
at chance for a long while when trained from scratch with SGD, which a CPU budget of a few
epochs cannot afford. :func:`lrsa.batchnorm.fold_batchnorm` folds the BatchNorms into the convs
before compression, so the approximated layers are the same 9 convolutions, with the same
shapes, as in the plain NIN.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["NIN", "nin", "nin_bn"]


class NIN(nn.Module):
    """Network in Network; see the module docstring for the layout.

    Parameters
    ----------
    num_classes : int
        Channels of cccp6, i.e. the outputs after global average pooling.
    in_channels : int
        Input channels.
    dropout : float
        Dropout after the first two pools.
    batch_norm : bool
        A BatchNorm2d after every conv (before its ReLU).
    """

    def __init__(self, num_classes=10, in_channels=3, dropout=0.5, batch_norm=False):
        super().__init__()
        self.arch = f"nin{'_bn' if batch_norm else ''}_cifar{num_classes}"
        spec = [("conv1", in_channels, 192, 5), ("cccp1", 192, 160, 1), ("cccp2", 160, 96, 1),
                ("pool1", "max"), ("conv2", 96, 192, 5), ("cccp3", 192, 192, 1),
                ("cccp4", 192, 192, 1), ("pool2", "avg"), ("conv3", 192, 192, 3),
                ("cccp5", 192, 192, 1), ("cccp6", 192, num_classes, 1)]
        layers = OrderedDict()
        for item in spec:
            name = item[0]
            if name.startswith("pool"):
                pool = nn.MaxPool2d if item[1] == "max" else nn.AvgPool2d
                layers[name] = pool(3, stride=2, ceil_mode=True)
                layers[f"drop{name[-1]}"] = nn.Dropout(dropout)
            else:
                _, cin, cout, k = item
                layers[name] = nn.Conv2d(cin, cout, k, padding=k // 2)
                if batch_norm:
                    layers[f"bn_{name}"] = nn.BatchNorm2d(cout)
                layers[f"relu_{name}"] = nn.ReLU(inplace=True)
        layers["pool3"] = nn.AdaptiveAvgPool2d(1)
        self.features = nn.Sequential(layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.features(x).flatten(1)


def nin(num_classes: int = 10) -> NIN:
    """Network in Network for 32 x 32 RGB inputs (CIFAR-10); about 0.97 M parameters.

    Parameters
    ----------
    num_classes : int
        Outputs.

    Returns
    -------
    NIN
        Randomly initialized.
    """
    return NIN(num_classes=num_classes)


def nin_bn(num_classes: int = 10) -> NIN:
    """:func:`nin` with a BatchNorm after every conv (see the module docstring): trains in a
    few epochs; :func:`lrsa.batchnorm.fold_batchnorm` turns it into a plain NIN."""
    return NIN(num_classes=num_classes, batch_norm=True)
