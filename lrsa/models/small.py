"""A small CNN for the embedded 8 x 8 digits (fast demos and tests)."""

from __future__ import annotations

from torch import nn

__all__ = ["SmallCNN", "small_cnn"]


def _block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """conv3x3 32 -> conv3x3 32 -> maxpool -> conv3x3 64 -> conv3x3 64 (each + BN + ReLU) ->
    global average pool -> Linear 128 -> ReLU -> Linear ``num_classes``.

    Same naming as the VGG (``features.{i}``, ``classifier.{i}``) so the compression code
    treats both alike. Any input size >= 2 x 2 works.
    """

    def __init__(self, num_classes=10, in_channels=1, width=32, hidden=128):
        super().__init__()
        self.arch = "small_cnn"
        self.features = nn.Sequential(
            *_block(in_channels, width), *_block(width, width), nn.MaxPool2d(2),
            *_block(width, 2 * width), *_block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Linear(2 * width, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def small_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> SmallCNN:
    """Small demo CNN (about 70k parameters at width 32) for
    :func:`lrsa.data.load_digits_images`.

    Parameters
    ----------
    num_classes : int
        Outputs.
    in_channels : int
        Input channels (1 for the digits).
    width : int
        Channels of the first two convolutions (the last two have twice as many).

    Returns
    -------
    SmallCNN
    """
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, width=width)
