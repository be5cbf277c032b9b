"""GoogLeNet (Inception v1) with torchvision's layout, without torchvision.

Keys as in torchvision's ``googlenet``: ``conv1.conv``/``conv1.bn`` (BasicConv2d = conv without
bias + BatchNorm(eps=0.001) + ReLU), ``inception3a.branch{1..4}``, ..., ``fc``; optional
``aux1``/``aux2``. As in torchvision, the "5x5" branch uses a 3x3 kernel (a known quirk kept
for weight compatibility).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import check_state_dict, fetch_weights

__all__ = ["GOOGLENET_URL", "GoogLeNet", "GoogLeNetOutputs", "googlenet"]

GOOGLENET_URL = "https://download.pytorch.org/models/googlenet-1378be20.pth"

# in, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj
_INCEPTION = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNetOutputs(NamedTuple):
    """Training-mode output when aux classifiers are on (same order as torchvision)."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor | None
    aux_logits1: torch.Tensor | None


class BasicConv2d(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d(eps=0.001) -> ReLU."""

    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches concatenated along channels."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, c3r, kernel_size=1),
                                     BasicConv2d(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, c5r, kernel_size=1),
                                     BasicConv2d(c5r, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, pp, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv 128, fc 1024, dropout, fc."""

    def __init__(self, cin, num_classes, dropout=0.7):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4))).flatten(1)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


class GoogLeNet(nn.Module):
    """GoogLeNet; returns logits, or :class:`GoogLeNetOutputs` when training with aux heads.

    Parameters
    ----------
    num_classes : int
        Outputs.
    aux_logits : bool
        Build the two auxiliary classifiers (used only in training mode).
    transform_input : bool
        Re-normalize inputs given with ImageNet mean/std to the (x - 0.5) / 0.5 scaling that
        torchvision's pretrained weights expect.
    dropout, dropout_aux : float
        Dropout before ``fc`` and in the aux heads.
    """

    def __init__(self, num_classes=1000, aux_logits=False, transform_input=False, dropout=0.2,
                 dropout_aux=0.7):
        super().__init__()
        self.arch = "googlenet"
        self.aux_logits, self.transform_input = aux_logits, transform_input
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception3a", "inception3b"):
            setattr(self, name, Inception(*_INCEPTION[name]))
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            setattr(self, name, Inception(*_INCEPTION[name]))
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        for name in ("inception5a", "inception5b"):
            setattr(self, name, Inception(*_INCEPTION[name]))
        self.aux1 = InceptionAux(512, num_classes, dropout_aux) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, dropout_aux) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _transform(self, x):
        if not self.transform_input:
            return x
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        return torch.cat([x[:, i:i + 1] * (s / 0.5) + (m - 0.5) / 0.5
                          for i, (m, s) in enumerate(zip(mean, std, strict=True))], 1)

    def forward(self, x):
        x = self.maxpool1(self.conv1(self._transform(x)))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux = self.training and self.aux1 is not None
        aux1 = self.aux1(x) if aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(self.avgpool(x).flatten(1)))
        return GoogLeNetOutputs(x, aux2, aux1) if aux else x


def googlenet(num_classes: int = 1000, pretrained: bool = False, aux_logits: bool = False,
              transform_input: bool | None = None, progress: bool = False) -> GoogLeNet:
    """GoogLeNet whose state dict matches torchvision's ``googlenet``.

    Parameters
    ----------
    num_classes : int
        Outputs (must be 1000 with ``pretrained``).
    pretrained : bool
        Load torchvision's ImageNet weights (cached in ``$LRSA_CACHE`` or ``~/.cache/lrsa``,
        SHA-256 prefix verified, ``weights_only=True``). Their aux heads are dropped unless
        ``aux_logits``.
    aux_logits : bool
        Keep the auxiliary classifiers (off by default).
    transform_input : bool or None
        ``None``: ``True`` when ``pretrained`` (as torchvision), else ``False``.
    progress : bool
        Download progress bar.

    Returns
    -------
    GoogLeNet
    """
    if pretrained and num_classes != 1000:
        raise ValueError(f"pretrained GoogLeNet has 1000 classes, not {num_classes}")
    if transform_input is None:
        transform_input = pretrained
    model = GoogLeNet(num_classes, aux_logits=aux_logits or pretrained,
                      transform_input=transform_input)
    if pretrained:
        sd = fetch_weights(GOOGLENET_URL, progress=progress)
        check_state_dict(model, sd, "googlenet (torchvision)")
        model.load_state_dict(sd)
        if not aux_logits:
            model.aux_logits, model.aux1, model.aux2 = False, None, None
    return model
