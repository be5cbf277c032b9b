"""ImageNet-style folders: class-per-subfolder image trees read with Pillow and given the
ImageNet evaluation transform (shorter side 256, center crop 224, ImageNet mean/std).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data import normalize

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageFolder", "load_image_folder"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _require_pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("load_image_folder needs Pillow: pip install pillow") from exc
    return Image


class ImageFolder(torch.utils.data.Dataset):
    """Images in ``root/<class>/<file>``, read with Pillow and given the ImageNet eval transform.

    Classes are the sorted subfolder names; item ``i`` is ``(image float32 (3, size, size),
    class index)``. See :func:`load_image_folder`.
    """

    def __init__(self, root, size=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        _require_pil()
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        if not 0 < int(size) <= int(resize):
            raise ValueError(f"need 0 < size <= resize, got size={size}, resize={resize}")
        self.root, self.size, self.resize, self.mean, self.std = root, int(size), int(resize), \
            mean, std
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(p, self.class_to_idx[c]) for c in self.classes
                        for p in sorted((root / c).rglob("*"))
                        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        if not self.samples:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders "
                             f"of {root}")

    def __len__(self):
        return len(self.samples)

    def load(self, path) -> torch.Tensor:
        """Read one image and apply resize (shorter side), center crop, normalization."""
        image = _require_pil()
        with image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            r = self.resize  # torchvision Resize(int): shorter side -> r, longer truncated
            nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
            im = im.resize((nw, nh), getattr(image, "Resampling", image).BILINEAR)
            top, left = round((nh - self.size) / 2.0), round((nw - self.size) / 2.0)
            im = im.crop((left, top, left + self.size, top + self.size))
            arr = np.asarray(im, dtype=np.uint8).copy()
        x = torch.from_numpy(arr).permute(2, 0, 1)
        return normalize(x, self.mean, self.std)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.load(path), label


def load_image_folder(root, size: int = 224, resize: int = 256) -> ImageFolder:
    """ImageNet-style folder (one subfolder per class) as a torch Dataset.

    Parameters
    ----------
    root : str or os.PathLike
        Folder with one subfolder per class.
    size : int
        Center-crop side (224 for the paper's single-view evaluation).
    resize : int
        Shorter side after resizing (256).

    Returns
    -------
    ImageFolder
        Items ``(float32 (3, size, size) normalized with ImageNet mean/std, int label)``;
        ``.classes`` and ``.samples`` as in torchvision. Wrap in
        ``torch.utils.data.DataLoader`` for batches.

    Raises
    ------
    ImportError
        If Pillow is not installed.
    """
    return ImageFolder(root, size=size, resize=resize)
