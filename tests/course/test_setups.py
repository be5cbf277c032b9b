"""lrsa.course.setups: the embedded default, the VGG-16 / CIFAR-10 and AlexNet setups, and the
fall-back that says what is missing."""

import pytest
import torch

import lrsa.course.setups as S
from lrsa.paper import PAPER_TABLE_IV


def test_digits_setup_is_a_trained_default():
    setup = S.digits_setup()
    assert not setup.real and setup.baseline_top1 > 80
    assert setup.layers[:3] == ["features.0", "features.3", "features.7"]
    assert set(setup.study_layers) <= set(setup.layers)


def test_load_setup_falls_back_to_digits(monkeypatch, capsys):
    monkeypatch.delenv("LRSA_VGG16", raising=False)
    s = S.load_setup(smoke=False)
    out = capsys.readouterr().out
    assert not s.real and "Falling back" in out
    assert "lrsa train --model vgg16_bn" in out and "shared" not in out
    monkeypatch.setenv("LRSA_SMOKE", "1")
    assert S.smoke_mode() and not S.load_setup().real


def test_vgg16_setup_names_what_is_missing(tmp_path, monkeypatch):
    from lrsa.models import vgg16_bn
    monkeypatch.setenv("LRSA_VGG16", str(tmp_path / "nowhere.pt"))
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        S.vgg16_cifar10_setup()
    torch.save({"state_dict": vgg16_bn().state_dict()}, tmp_path / "vgg.pt")
    with pytest.raises(FileNotFoundError, match="lrsa download-cifar10"):
        S.vgg16_cifar10_setup(tmp_path / "vgg.pt", tmp_path / "no-data")


def test_imagenet_setup_on_a_tiny_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    import numpy as np

    from lrsa.models import alexnet
    rng = np.random.default_rng(0)
    for cls in ("n001", "n002"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            arr = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    s = S.imagenet_alexnet_setup(tmp_path, calib_images=2, batch_size=2,
                                 model=alexnet(pretrained=False), workers=0)
    assert [x.shape for x in s.calib] == [(2, 3, 224, 224)]
    assert len(s.test.dataset) == 4
    assert [s.label(n) for n in s.layers] == list(PAPER_TABLE_IV)
