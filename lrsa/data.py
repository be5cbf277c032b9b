"""Data: CIFAR-10 in its official python layout, in-memory loaders, and an offline default.

* :func:`load_cifar10` reads ``cifar-10-batches-py`` (the layout the CIFAR-10 site ships and
  :func:`download_cifar10` fetches) with a restricted unpickler that accepts only
  the few globals those files need (numpy array reconstruction), so a tampered batch file
  cannot run code.
* :func:`make_loader` batches uint8 (or [0, 1] float) image tensors, normalizes them and, for
  training, applies random crop (zero padding) + horizontal flip, vectorized per batch, with
  its own seeded generator (no torchvision, no global RNG).
* :func:`load_digits_images` is the embedded default: scikit-learn's bundled 8x8 digits, no
  network needed.

ImageNet-style folders (one subfolder per class) are read by :mod:`lrsa.image_folder`.
"""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ._download import download, verify_digest
from . import distributed

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_DIRNAME",
    "CIFAR10_MD5",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_URL",
    "DigitsSplit",
    "TensorLoader",
    "download_cifar10",
    "load_cifar10",
    "load_digits_images",
    "make_loader",
    "normalize",
    "verify_md5",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: CIFAR-10's validation split, held out of the 50,000 training images: every choice (budget,
#: learning rate, epochs, ...) is made on it, so the 10,000 test images stay for reporting
CIFAR10_VALIDATION_IMAGES = 5000
CIFAR10_VALIDATION_SEED = 0


# ----------------------------------------------------------------------------- CIFAR-10 files
def _numpy_reconstruct():
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy arrays need; everything else is refused.

    The CIFAR-10 batches are dicts of bytes keys holding a uint8 ndarray, lists of ints and
    lists of bytes: besides builtin containers they only reference
    ``numpy.{core,_core}.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``.
    """

    def find_class(self, module, name):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy", "ndarray"): lambda: np.ndarray,
            ("numpy", "dtype"): lambda: np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"forbidden global '{module}.{name}'")
        return allowed[(module, name)]()


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one official batch file; return (data uint8 (N, 3072), labels int64 (N,))."""
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except OSError:
        raise
    except Exception as exc:  # truncated, corrupt, forbidden global: all mean "bad file"
        raise ValueError(f"cannot read CIFAR-10 batch file {path}: {exc}") from exc
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        raise ValueError(f"CIFAR-10 batch file {path} is not a dict with b'data' and b'labels'")
    data, labels = obj[b"data"], np.asarray(obj[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        raise ValueError(f"CIFAR-10 batch file {path}: b'data' must be uint8 (N, 3072), got "
                         f"{getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}")
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu" \
            or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"CIFAR-10 batch file {path}: b'labels' must be {data.shape[0]} "
                         f"integers in 0..9")
    return data, labels.astype(np.int64)


def _default_root() -> Path:
    return Path(os.environ.get("LRSA_DATA") or Path.home() / ".cache" / "lrsa")


def _cifar_dir(root) -> Path:
    """The ``cifar-10-batches-py`` folder: ``root`` itself or ``root/cifar-10-batches-py``."""
    root = _default_root() if root is None else Path(root).expanduser()
    for cand in (root, root / CIFAR10_DIRNAME):
        if (cand / "test_batch").is_file() or (cand / "data_batch_1").is_file():
            return cand
    raise FileNotFoundError(
        f"no CIFAR-10 batches in {root} (nor in {root / CIFAR10_DIRNAME}); write them with "
        f"`lrsa download-cifar10 DIR` (or lrsa.data.download_cifar10(DIR)), or point "
        f"LRSA_DATA at the folder that holds cifar-10-batches-py")


def load_cifar10(root=None, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load CIFAR-10 from the official ``cifar-10-batches-py`` layout.

    Parameters
    ----------
    root : str, os.PathLike or None
        The ``cifar-10-batches-py`` folder itself or its parent. ``None``: ``$LRSA_DATA``,
        else ``~/.cache/lrsa``.
    train : bool
        ``True``: the 50,000 images of ``data_batch_1..5``; ``False``: ``test_batch``.

    Returns
    -------
    images : torch.Tensor
        uint8, (N, 3, 32, 32), RGB, NCHW.
    labels : torch.Tensor
        int64, (N,), class indices into ``CIFAR10_CLASSES``.

    Raises
    ------
    FileNotFoundError
        If the folder or one of the batch files is missing.
    ValueError
        If a batch file is truncated, corrupt, or references a forbidden global (the message
        names the file).
    """
    folder = _cifar_dir(root)
    names = CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 folder {folder} lacks {', '.join(missing)}")
    parts = [_read_batch(folder / n) for n in names]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)


def validation_split(images, labels, val_images=CIFAR10_VALIDATION_IMAGES,
                     seed=CIFAR10_VALIDATION_SEED):
    """``((train images, labels), (validation images, labels))``: ``val_images`` of the
    samples held out by a permutation seeded by ``seed``
    (:func:`lrsa.evaluation.split_indices`), so the same images from the seed alone.
    ``val_images=0`` keeps every sample for training (no validation set)."""
    from .evaluation import split_indices
    if val_images == 0:
        return (images, labels), (images[:0], labels[:0])
    if not 0 < val_images < len(labels):
        raise ValueError(f"val_images must be in [0, {len(labels)}), got {val_images}")
    val, train = (torch.from_numpy(i) for i in split_indices(len(labels), val_images, seed))
    return (images[train], labels[train]), (images[val], labels[val])


def verify_md5(path, md5: str) -> None:
    """Raise ValueError unless the file at ``path`` has MD5 ``md5`` (the message names it)."""
    verify_digest(path, md5, "md5")


def _safe_extract(tar: tarfile.TarFile, dst: Path) -> None:
    dst = dst.resolve()
    for m in tar.getmembers():
        target = (dst / m.name).resolve()
        if not (target == dst or dst in target.parents) or not (m.isfile() or m.isdir()):
            raise ValueError(f"refusing to extract unsafe archive member {m.name!r}")
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dst, filter="data")
    else:  # pragma: no cover - Python without PEP 706 filters; members were checked above
        tar.extractall(dst)


def download_cifar10(root=None, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5,
                     progress: bool = False) -> Path:
    """Download the official CIFAR-10 python archive, verify its MD5, then extract it.

    Nothing is extracted unless the checksum matches. A complete copy already in ``root`` is
    left alone.

    Parameters
    ----------
    root : str, os.PathLike or None
        Parent folder for ``cifar-10-batches-py`` (``None``: ``$LRSA_DATA``, else
        ``~/.cache/lrsa``).
    url : str
        Archive URL; ``file://`` works for local mirrors.
    md5 : str
        Expected MD5 of the archive.
    progress : bool
        Show a download progress bar.

    Returns
    -------
    pathlib.Path
        The ``cifar-10-batches-py`` folder.

    Raises
    ------
    ValueError
        On a checksum mismatch or an unsafe archive member.
    ConnectionError
        When offline.
    """
    root = _default_root() if root is None else Path(root).expanduser()
    folder = root / CIFAR10_DIRNAME
    if all((folder / n).is_file() for n in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES):
        return folder
    archive = download(url, root / "cifar-10-python.tar.gz", expected=md5, algorithm="md5",
                       progress=progress)
    with tarfile.open(archive, "r:gz") as tar:
        _safe_extract(tar, root)
    if not (folder / "test_batch").is_file():
        raise ValueError(f"archive {archive} did not contain {CIFAR10_DIRNAME}/test_batch")
    return folder


# ----------------------------------------------------------------------------- tensors, loader
def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def normalize(images: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> torch.Tensor:
    """Scale to [0, 1] (uint8 input) and normalize per channel.

    Parameters
    ----------
    images : torch.Tensor
        (N, C, H, W) or (C, H, W); uint8 in 0..255 or float already in [0, 1].
    mean, std : sequence of float or None
        Per-channel statistics (length C). ``None`` skips normalization.

    Returns
    -------
    torch.Tensor
        float32, same shape.
    """
    x = _as_float(images)
    if mean is None and std is None:
        return x
    c = x.shape[-3]
    if mean is None or std is None or len(mean) != c or len(std) != c:
        raise ValueError(f"mean and std need one value per channel ({c}), got {mean}, {std}")
    shape = (c, 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    if (s <= 0).any():
        raise ValueError(f"std must be positive, got {std}")
    return (x - m) / s


def _random_crop_flip(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator):
    b, _, h, w = x.shape
    if pad > 0:
        x = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
        cols = (ox[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
        x = x[torch.arange(b)[:, None, None], :, rows, cols]  # (B, H, W, C)
        x = x.permute(0, 3, 1, 2).contiguous()
    if flip:
        m = torch.rand(b, generator=gen) < 0.5
        x[m] = x[m].flip(-1)
    return x


class TensorLoader:
    """Iterable of ``(images, labels)`` batches over in-memory tensors (see :func:`make_loader`).

    Each iteration is one epoch; in training mode the order and augmentation differ from epoch
    to epoch but are reproducible from ``seed``.
    """

    def __init__(self, images, labels, batch_size=128, train=False, mean=CIFAR10_MEAN,
                 std=CIFAR10_STD, seed=0, pad=4, flip=True, drop_last=False, shard=False):
        images, labels = torch.as_tensor(images), torch.as_tensor(labels)
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be ({images.shape[0]},) to match images, got "
                             f"{tuple(labels.shape)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.images, self.labels = images, labels.long()
        self.batch_size, self.train = int(batch_size), bool(train)
        self.mean, self.std, self.pad, self.flip = mean, std, int(pad), bool(flip)
        self.rank, self.world_size = (distributed.rank(), distributed.world_size()) if shard \
            else (0, 1)
        if self.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.batch_size} is the global batch and must be "
                             f"divisible by the {self.world_size} processes")
        # every process must take the same steps: a last, smaller global batch would not split
        self.drop_last = bool(drop_last) or self.world_size > 1
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self):
        n, b = self.images.shape[0], self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n = self.images.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = _as_float(self.images[idx])
            if self.train:  # the whole global batch: every process draws the same numbers
                x = _random_crop_flip(x, self.pad, self.flip, self.generator)
            y = self.labels[idx]
            if self.world_size > 1:
                rows = slice(self.rank * self.batch_size // self.world_size,
                             (self.rank + 1) * self.batch_size // self.world_size)
                x, y = x[rows], y[rows]
            yield normalize(x, self.mean, self.std), y


def make_loader(images, labels, batch_size=128, train=False, mean=CIFAR10_MEAN,
                std=CIFAR10_STD, seed=0, *, pad=4, flip=True, drop_last=False,
                shard=False) -> TensorLoader:
    """Batches of normalized images from in-memory tensors, augmented when ``train``.

    Parameters
    ----------
    images : torch.Tensor
        (N, C, H, W), uint8 (0..255) or float in [0, 1].
    labels : torch.Tensor
        (N,) integer class indices.
    batch_size : int
        Batch size.
    train : bool
        Shuffle every epoch and apply random crop (``pad`` zero pixels each side, then crop
        back to H x W) and horizontal flip (p = 0.5), vectorized per batch.
    mean, std : sequence of float or None
        Normalization; ``None`` for both keeps [0, 1] values.
    seed : int
        Seed of the loader's own generator (shuffling and augmentation).
    pad : int
        Crop padding; 0 disables cropping.
    flip : bool
        Random horizontal flips (disable for digits/text).
    drop_last : bool
        Drop the last incomplete batch.
    shard : bool
        Under ``torchrun`` with K processes (see :mod:`lrsa.distributed`): ``batch_size`` is
        the global batch (divisible by K) and this process gets its K-th of every batch
        (rows ``rank * batch_size / K`` onwards), all processes drawing the same order and
        augmentation, so K processes step as one would with the whole batch. The last
        incomplete batch is dropped so that every process takes the same steps. No effect
        in a plain process.

    Returns
    -------
    TensorLoader
        Re-iterable; ``len()`` is the number of batches per epoch.
    """
    return TensorLoader(images, labels, batch_size, train, mean, std, seed, pad, flip,
                        drop_last, shard)


# ----------------------------------------------------------------------------- digits
class DigitsSplit(NamedTuple):
    """Train/test split of the 8x8 digits (float images in [0, 1], int64 labels)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_images(test_fraction: float = 0.25, seed: int = 0,
                       size: int | None = None) -> DigitsSplit:
    """scikit-learn's bundled 8x8 handwritten digits as image tensors (offline default data).

    Parameters
    ----------
    test_fraction : float
        Share of the 1,797 images held out, stratified by class.
    seed : int
        Seed of the split.
    size : int or None
        Upsample (bilinear) to ``size x size``; ``None`` keeps 8 x 8.

    Returns
    -------
    DigitsSplit
        ``(x_train, y_train, x_test, y_test)``: float32 (N, 1, S, S) in [0, 1] and int64 (N,).
        The two parts are disjoint.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=test_fraction,
                                      random_state=seed, stratify=d.target)
    if size is not None:
        if int(size) < 1:
            raise ValueError(f"size must be a positive int, got {size}")
        x = F.interpolate(x, size=(int(size), int(size)), mode="bilinear", align_corners=False)
        x = x.clamp_(0, 1)
    idx_tr, idx_te = torch.from_numpy(idx_tr), torch.from_numpy(idx_te)
    return DigitsSplit(x[idx_tr], y[idx_tr], x[idx_te], y[idx_te])
