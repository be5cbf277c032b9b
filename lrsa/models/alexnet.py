"""AlexNet with torchvision's layout (``features.{0,3,6,8,10}``, ``classifier.{1,4,6}``).

No torchvision needed; ``pretrained=True`` fetches torchvision's public ImageNet weights.
Inputs: 224 x 224 RGB normalized with ImageNet mean/std
(:func:`lrsa.image_folder.load_image_folder`).
"""

from __future__ import annotations

from torch import nn

from .checkpoint import check_state_dict, fetch_weights

__all__ = ["ALEXNET_URL", "AlexNet", "alexnet"]

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


def _relu():
    return nn.ReLU(inplace=True)


class AlexNet(nn.Module):
    """AlexNet ("one weird trick" variant, as in torchvision): 5 convs and 3 FC layers."""

    def __init__(self, num_classes=1000, dropout=0.5):
        super().__init__()
        self.arch = "alexnet"
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), _relu(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), _relu(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), _relu(),
            nn.Conv2d(384, 256, 3, padding=1), _relu(),
            nn.Conv2d(256, 256, 3, padding=1), _relu(), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), _relu(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), _relu(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def alexnet(num_classes: int = 1000, pretrained: bool = False, progress: bool = False) -> AlexNet:
    """AlexNet whose state dict matches torchvision's ``alexnet``.

    Parameters
    ----------
    num_classes : int
        Outputs (1000 for ImageNet; must be 1000 with ``pretrained``).
    pretrained : bool
        Load torchvision's ImageNet weights (downloaded once into ``$LRSA_CACHE`` or
        ``~/.cache/lrsa``, SHA-256 prefix verified, read with ``weights_only=True``).
    progress : bool
        Download progress bar.

    Returns
    -------
    AlexNet
    """
    if pretrained and num_classes != 1000:
        raise ValueError(f"pretrained AlexNet has 1000 classes, not {num_classes}")
    model = AlexNet(num_classes=num_classes)
    if pretrained:
        sd = fetch_weights(ALEXNET_URL, progress=progress)
        check_state_dict(model, sd, "alexnet (torchvision)")
        model.load_state_dict(sd)
    return model
