"""Where the notebooks' networks and data come from: the embedded default (a small CNN
trained in seconds on scikit-learn's digits, cached) or, when the user has them, a trained
VGG-16 with CIFAR-10 (paths from arguments or ``$LRSA_VGG16`` and ``$LRSA_DATA``, never from
folders beside the package) and AlexNet on an ImageNet-style folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..features import find_layers
from ..paper import ALEXNET_LAYER_NAMES, VGG16_LAYER_NAMES
from ..train import evaluate
from ..utils import atomic_torch_save, code_version

__all__ = ["DIGITS_LAYER_NAMES", "Setup", "cache_folder", "cache_key", "digits_model",
           "digits_setup", "imagenet_alexnet_setup", "load_setup", "smoke_mode",
           "vgg16_cifar10_setup"]

#: The small digits CNN's module names -> short names.
DIGITS_LAYER_NAMES = {
    "features.0": "conv1", "features.3": "conv2", "features.7": "conv3",
    "features.10": "conv4", "classifier.0": "fc1", "classifier.2": "fc2",
}


def smoke_mode():
    """True when ``LRSA_SMOKE=1``: notebooks and examples use tiny sizes (CI)."""
    return os.environ.get("LRSA_SMOKE") == "1"


def cache_folder():
    """Where the notebooks cache what they compute (the digits model, lambda grids, resumable
    runs): ``$LRSA_CACHE/notebooks/<code version>`` if set, else
    ``<temp dir>/lrsa-notebooks/<code version>``. One folder per version of lrsa's code, so
    an upgraded lrsa recomputes instead of meeting layers it must refuse to resume."""
    base = os.environ.get("LRSA_CACHE")
    folder = Path(base) / "notebooks" if base else Path(tempfile.gettempdir()) / "lrsa-notebooks"
    folder = folder / code_version()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cache_key(*parts):
    """A short hash of JSON-able parts: names a cache file by what computed it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]



@dataclass
class Setup:
    """A network with its calibration and test data, as the notebooks use it.

    Attributes
    ----------
    name : str
        What it is, for printing.
    model : nn.Module
        The original network, eval mode (BatchNorm not folded).
    calib : list of Tensor
        Calibration input batches (fixed order), for :func:`lrsa.pipeline.compress`.
    test : iterable
        ``(inputs, labels)`` batches for :func:`lrsa.train.evaluate`.
    layers : list of str
        Conv2d/Linear module names in forward order.
    labels : dict
        Module name -> the paper's layer name.
    study_layers : tuple of str
        The layers of the single-layer study (Fig. 4: conv2-1 and conv3-1 on VGG-16).
    input_shape : tuple
        One input, batch first.
    real : bool
        True for the real VGG-16 / CIFAR-10.
    baseline_top1 : float
        Top-1 (%) of ``model`` on ``test``.
    """

    name: str
    model: nn.Module
    calib: list
    test: object
    layers: list
    labels: dict
    study_layers: tuple
    input_shape: tuple
    real: bool
    baseline_top1: float = field(default=float("nan"))

    def label(self, name):
        """The paper's name of a module (the module name when there is none)."""
        return self.labels.get(name, name)


def digits_model(epochs=6, seed=0, progress=False):
    """The embedded default: :func:`lrsa.models.small_cnn` trained on scikit-learn's 8 x 8
    digits (a few seconds on 2 cores), cached in :func:`cache_folder`.

    Parameters
    ----------
    epochs, seed : int
        Training epochs and seed (the cache is per pair and torch version).
    progress : bool
        Training progress bar.

    Returns
    -------
    nn.Module in eval mode.
    """
    from ..data import load_digits_images, make_loader
    from ..models import load_checkpoint, small_cnn
    from ..train import train

    path = cache_folder() / f"small_cnn_digits_e{epochs}_s{seed}_t{torch.__version__}.pt"
    torch.manual_seed(seed)
    model = small_cnn()
    if path.exists():
        try:
            load_checkpoint(model, path)
            return model.eval()
        except (ValueError, RuntimeError):
            pass  # a stale or broken cache file: train again
    d = load_digits_images()
    loader = make_loader(d.x_train, d.y_train, 64, train=True, mean=None, std=None, pad=1,
                         seed=seed)
    train(model, loader, epochs=epochs, lr=0.05, seed=seed, progress=progress)
    atomic_torch_save({"arch": "small_cnn", "state_dict": model.state_dict(), "epochs": epochs},
                      path)
    return model.eval()


def digits_setup(epochs=6, seed=0, calib_images=384):
    """The embedded default :class:`Setup`: the small CNN on the digits (no files needed).

    Parameters
    ----------
    epochs, seed : int
        See :func:`digits_model`.
    calib_images : int
        Training images used for calibration (batches of 128).

    Returns
    -------
    Setup
    """
    from ..data import load_digits_images, make_loader

    model = digits_model(epochs=epochs, seed=seed)
    d = load_digits_images()
    test = make_loader(d.x_test, d.y_test, 256, mean=None, std=None)
    calib = [d.x_train[i:i + 128] for i in range(0, min(calib_images, len(d.x_train)), 128)]
    layers = [n for n, _ in find_layers(model, calib[0][:1])]
    return Setup(name="small_cnn / digits (embedded default)", model=model, calib=calib,
                 test=test, layers=layers, labels=dict(DIGITS_LAYER_NAMES),
                 study_layers=("features.3", "features.7"), input_shape=(1, 1, 8, 8),
                 real=False, baseline_top1=evaluate(model, test)["top1"])


def vgg16_cifar10_setup(checkpoint=None, data=None, *, calib_images=500, test_images=2000,
                        seed=0):
    """The real :class:`Setup`: a trained VGG-16 on CIFAR-10.

    Parameters
    ----------
    checkpoint : path or None
        VGG-16 weights, as ``lrsa train --model vgg16_bn --out FILE`` writes them
        (None: ``$LRSA_VGG16``).
    data : path or None
        The folder holding ``cifar-10-batches-py`` (None: ``$LRSA_DATA``, see
        :func:`lrsa.data.load_cifar10`; ``lrsa download-cifar10`` fetches it).
    calib_images : int
        Random training images for calibration (the paper: 1000), batches of 250.
    test_images : int or None
        First test images evaluated (None: all 10,000).
    seed : int
        Choice of the calibration images.

    Raises
    ------
    FileNotFoundError
        When the checkpoint or CIFAR-10 is missing, saying how to get each.
    """
    from ..data import load_cifar10, make_loader
    from ..models import load_checkpoint, vgg16_bn

    checkpoint = checkpoint or os.environ.get("LRSA_VGG16")
    if not checkpoint or not Path(checkpoint).expanduser().is_file():
        raise FileNotFoundError(
            f"no VGG-16 checkpoint ({checkpoint or 'LRSA_VGG16 is not set'}): train one with "
            "`lrsa train --model vgg16_bn --epochs 30 --bf16 --out vgg16.pt` and set "
            "LRSA_VGG16=vgg16.pt")
    model = vgg16_bn()
    load_checkpoint(model, Path(checkpoint).expanduser())
    model.eval()
    xtr, ytr = load_cifar10(data, train=True)
    xte, yte = load_cifar10(data, train=False)
    if test_images is not None:
        xte, yte = xte[:test_images], yte[:test_images]
    test = make_loader(xte, yte, 500)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))[:calib_images]
    calib = [x for x, _ in make_loader(xtr[idx], ytr[idx], 250)]
    layers = [n for n, _ in find_layers(model, calib[0][:1])]
    return Setup(name=f"vgg16_bn / CIFAR-10 ({len(yte)} test images)", model=model,
                 calib=calib, test=test, layers=layers, labels=dict(VGG16_LAYER_NAMES),
                 study_layers=("features.7", "features.14"), input_shape=(1, 3, 32, 32),
                 real=True, baseline_top1=evaluate(model, test)["top1"])


def imagenet_alexnet_setup(root, *, calib_images=1500, eval_images=None, calib_root=None,
                           batch_size=50, model=None, seed=0, workers=None):
    """AlexNet on an ImageNet-style folder (paper Sec. V-C): the user's machine only.

    Parameters
    ----------
    root : path
        Evaluation images in class subfolders named by WordNet id (``n01440764/...``), e.g.
        the ILSVRC-2012 validation set sorted into its 1000 classes: sorted wnids give
        torchvision's class indices, which the pretrained weights use.
    calib_images : int
        Calibration images (the paper: 1500 training images).
    eval_images : int or None
        Evaluated images (None: all that are not used for calibration).
    calib_root : path, optional
        A separate folder (say a part of the training set) to draw calibration images from;
        without it they are drawn from ``root`` and left out of the evaluation.
    batch_size : int
        Batch size of both.
    model : nn.Module, optional
        The network; default :func:`lrsa.models.alexnet` with ``pretrained=True`` (downloads
        torchvision's weights once, checked).
    seed : int
        Choice of the calibration images.
    workers : int, optional
        DataLoader workers for the evaluation (default: up to 4).

    Returns
    -------
    Setup
        ``baseline_top1`` is left NaN (evaluating takes a while: call
        ``lrsa.train.evaluate(setup.model, setup.test, topk=(1, 5))``).
    """
    from torch.utils.data import DataLoader, Subset

    from ..image_folder import load_image_folder
    from ..models import alexnet

    data = load_image_folder(root)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=gen).tolist()
    if calib_root is not None:
        cdata = load_image_folder(calib_root)
        cperm = torch.randperm(len(cdata), generator=gen).tolist()
        calib_set, eval_idx = Subset(cdata, cperm[:calib_images]), perm
    else:
        calib_set, eval_idx = Subset(data, perm[:calib_images]), perm[calib_images:]
    if eval_images is not None:
        eval_idx = eval_idx[:eval_images]
    if not eval_idx:
        raise ValueError(f"no images left to evaluate in {root} after {calib_images} "
                         "calibration images")
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    calib = [x for x, _ in DataLoader(calib_set, batch_size=batch_size)]
    test = DataLoader(Subset(data, eval_idx), batch_size=batch_size, num_workers=workers)
    model = (alexnet(pretrained=True) if model is None else model).eval()
    layers = [n for n, _ in find_layers(model, calib[0][:1])]
    return Setup(name=f"AlexNet / {root} ({len(eval_idx)} images evaluated)", model=model,
                 calib=calib, test=test, layers=layers, labels=dict(ALEXNET_LAYER_NAMES),
                 study_layers=("features.6", "features.8", "features.10"),
                 input_shape=(1, 3, 224, 224), real=True)


def load_setup(smoke=None, **kwargs):
    """The real VGG-16 / CIFAR-10 setup when at hand and not in smoke mode, else the digits.

    Prints which one it uses and why.

    Parameters
    ----------
    smoke : bool or None
        None: :func:`smoke_mode`.
    **kwargs
        For :func:`vgg16_cifar10_setup` (by default it reads ``$LRSA_VGG16`` and
        ``$LRSA_DATA``).

    Returns
    -------
    Setup
    """
    smoke = smoke_mode() if smoke is None else smoke
    if smoke:
        print("smoke mode (LRSA_SMOKE=1): using the embedded default, a small CNN on the "
              "8x8 digits")
        return digits_setup()
    try:
        setup = vgg16_cifar10_setup(**kwargs)
    except FileNotFoundError as exc:
        print(f"{exc}.\nFalling back to the embedded default: a small CNN trained for a few "
              "seconds on the 8x8 digits (cached in " f"{cache_folder()}).")
        return digits_setup()
    print(f"full mode: {setup.name}, baseline top-1 {setup.baseline_top1:.2f}%")
    return setup
