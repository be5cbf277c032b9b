"""Model definitions (no torchvision needed) and checked checkpoint loading.

Every model carries an ``arch`` string that checkpoints record and error messages name.
"""

from .alexnet import AlexNet, alexnet
from .checkpoint import (arch_of, cache_dir, check_state_dict, fetch_checkpoint, fetch_weights,
                         load_checkpoint)
from .googlenet import GoogLeNet, googlenet
from .nin import NIN, nin, nin_bn
from .small import SmallCNN, small_cnn
from .vgg import VGG, vgg16_bn
from .vit import TinyViT, tiny_vit

__all__ = [
    "NIN", "VGG", "AlexNet", "GoogLeNet", "SmallCNN", "TinyViT", "alexnet", "arch_of",
    "cache_dir", "check_state_dict", "fetch_checkpoint", "fetch_weights", "get_model",
    "googlenet", "load_checkpoint", "nin", "nin_bn", "small_cnn", "tiny_vit", "vgg16_bn",
]

_FACTORIES = {"vgg16_bn": vgg16_bn, "small_cnn": small_cnn, "nin": nin, "nin_bn": nin_bn,
              "alexnet": alexnet, "googlenet": googlenet, "tiny_vit": tiny_vit}


def get_model(name: str, **kwargs):
    """Build a model by factory name (``vgg16_bn``, ``small_cnn``, ``nin``, ``nin_bn``,
    ``alexnet``, ``googlenet``, ``tiny_vit``); ``kwargs`` go to the factory."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(_FACTORIES)}")
    return _FACTORIES[name](**kwargs)
