"""Tests of lrsa.image_folder: classes from subfolders, non-images skipped, the ImageNet
evaluation transform."""

import pytest
import torch

from lrsa.image_folder import IMAGENET_MEAN, IMAGENET_STD, load_image_folder


def test_image_folder(tmp_path):
    image = pytest.importorskip("PIL.Image")
    for cls, color, size in (("cat", (255, 0, 0), (60, 50)), ("dog", (0, 128, 255), (40, 90))):
        (tmp_path / cls).mkdir()
        image.new("RGB", size, color).save(tmp_path / cls / "a.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = load_image_folder(tmp_path, size=32, resize=40)
    assert ds.classes == ["cat", "dog"] and len(ds) == 2
    x, label = ds[1]
    assert x.shape == (3, 32, 32) and label == 1
    want = (torch.tensor([0, 128, 255]) / 255 - torch.tensor(IMAGENET_MEAN)) \
        / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[:, 16, 16], want, atol=1e-5)
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty")
