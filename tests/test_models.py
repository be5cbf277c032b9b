"""Tests of lrsa.models: layouts (shared checkpoint, torchvision names), checked loading."""

from pathlib import Path

import pytest
import torch

from lrsa import models
from lrsa.models import alexnet, googlenet, load_checkpoint, nin, small_cnn, vgg16_bn
from lrsa.models.checkpoint import fetch_weights

SHARED_VGG = Path(__file__).resolve().parents[2] / "shared" / "models" / "vgg16_bn_cifar10.pt"
VGG_CONVS = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]


pytestmark = pytest.mark.usefixtures("one_thread")


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


def test_vgg16_bn_layout_and_forward():
    m = vgg16_bn()
    sd = m.state_dict()
    convs = [int(k.split(".")[1]) for k, v in sd.items()
             if k.startswith("features.") and k.endswith("weight") and v.ndim == 4]
    assert convs == VGG_CONVS
    assert all(f"features.{i + 1}.running_var" in sd for i in VGG_CONVS)
    assert [k for k in sd if k.startswith("classifier")] == [
        f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert sd["classifier.0.weight"].shape == (512, 512)
    assert m.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert m.arch == "vgg16_bn_cifar10"


@pytest.mark.skipif(not SHARED_VGG.is_file(), reason="no ../shared/models checkpoint")
def test_vgg16_bn_loads_shared_checkpoint():
    m = vgg16_bn()
    meta = load_checkpoint(m, SHARED_VGG)
    assert meta["arch"] == "vgg16_bn_cifar10" and "state_dict" not in meta
    assert 0.8 < meta["test_acc"] <= 1.0
    ref = torch.load(SHARED_VGG, weights_only=True, map_location="cpu")["state_dict"]
    assert torch.equal(m.state_dict()["features.40.weight"], ref["features.40.weight"])


def test_wrong_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "small.pt"
    torch.save({"arch": "small_cnn", "state_dict": small_cnn().state_dict()}, path)
    with pytest.raises(ValueError, match=r"checkpoint is for arch 'small_cnn', not "
                       r"vgg16_bn_cifar10: missing keys .*features\.0\.weight \(32, 1, 3, 3\)"):
        load_checkpoint(vgg16_bn(), path)
    torch.save(nin().state_dict(), path)  # raw state dict: arch unknown
    with pytest.raises(ValueError, match=r"arch not recorded.*not vgg16_bn_cifar10.*"
                       r"unexpected keys features\.conv1\.weight"):
        load_checkpoint(vgg16_bn(), path)


def test_load_checkpoint_round_trip_and_bad_files(tmp_path):
    src, dst = small_cnn(), small_cnn()
    path = tmp_path / "ok.pt"
    torch.save({"arch": "small_cnn", "state_dict": src.state_dict(), "test_acc": 0.5}, path)
    assert load_checkpoint(dst, path) == {"arch": "small_cnn", "test_acc": 0.5}
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(),
                                                  dst.state_dict().values(), strict=True))
    torch.save(src.state_dict(), path)
    assert load_checkpoint(dst, path) == {}
    (tmp_path / "bad.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(dst, tmp_path / "bad.pt")
    torch.save({"state_dict": src.state_dict(), "extra": Path("x")}, path)  # not weights-only
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(dst, path)
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="neither a state dict"):
        load_checkpoint(dst, path)


def test_nin_layout_and_forward():
    m = nin()
    sd = m.state_dict()
    names = [k[len("features."):-len(".weight")] for k in sd if k.endswith(".weight")]
    assert names == ["conv1", "cccp1", "cccp2", "conv2", "cccp3", "cccp4", "conv3", "cccp5",
                     "cccp6"]
    assert sd["features.conv1.weight"].shape == (192, 3, 5, 5)
    assert sd["features.conv3.weight"].shape == (192, 192, 3, 3)
    assert sd["features.cccp6.weight"].shape == (10, 192, 1, 1)
    assert m.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_nin_bn_folds_to_the_plain_nin(tmp_path):
    from lrsa.batchnorm import fold_batchnorm
    from lrsa.models import nin_bn

    torch.manual_seed(0)
    m = nin_bn().eval()
    for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules()) == 9
    folded = fold_batchnorm(m)
    plain = nin().eval()
    torch.save(folded.state_dict(), tmp_path / "folded.pt")
    load_checkpoint(plain, tmp_path / "folded.pt")  # the very keys and shapes of nin()
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(plain(x), m(x), atol=1e-4, rtol=1e-4)


def test_alexnet_torchvision_layout():
    m = alexnet()
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert list(shapes) == [f"{s}.{i}.{p}" for s, idx in (("features", (0, 3, 6, 8, 10)),
                                                          ("classifier", (1, 4, 6)))
                            for i in idx for p in ("weight", "bias")]
    assert shapes["features.0.weight"] == (64, 3, 11, 11)
    assert shapes["classifier.1.weight"] == (4096, 9216)
    assert _nparams(m) == 61_100_840  # torchvision's documented count
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_googlenet_torchvision_layout():
    m = googlenet()
    sd = m.state_dict()
    assert sd["conv1.conv.weight"].shape == (64, 3, 7, 7) and "conv1.conv.bias" not in sd
    assert m.conv1.bn.eps == 1e-3
    assert sd["inception3a.branch2.1.conv.weight"].shape == (128, 96, 3, 3)
    assert sd["inception3a.branch3.1.conv.weight"].shape == (32, 16, 3, 3)  # torchvision's 3x3
    assert sd["inception5b.branch4.1.bn.running_mean"].shape == (128,)
    assert sd["fc.weight"].shape == (1000, 1024)
    assert not any(k.startswith("aux") for k in sd)
    assert _nparams(m) == 6_624_904  # torchvision's documented count
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    aux = googlenet(num_classes=7, aux_logits=True)
    assert aux.state_dict()["aux1.fc1.weight"].shape == (1024, 2048)
    assert aux.state_dict()["aux2.conv.conv.weight"].shape == (128, 528, 1, 1)


def test_pretrained_wiring_without_network(monkeypatch):
    """pretrained=True: checked load, aux heads dropped, transform_input on (no download)."""
    import importlib

    alexnet_mod = importlib.import_module("lrsa.models.alexnet")  # the attribute is the factory
    googlenet_mod = importlib.import_module("lrsa.models.googlenet")

    ref = googlenet_mod.GoogLeNet(aux_logits=True).state_dict()
    monkeypatch.setattr(googlenet_mod, "fetch_weights", lambda url, progress=False: ref)
    g = googlenet(pretrained=True)
    assert g.transform_input and g.aux1 is None and g.aux2 is None
    assert torch.equal(g.state_dict()["fc.weight"], ref["fc.weight"])
    bad = small_cnn().state_dict()
    monkeypatch.setattr(alexnet_mod, "fetch_weights", lambda url, progress=False: bad)
    with pytest.raises(ValueError, match="alexnet"):
        alexnet(pretrained=True)
    with pytest.raises(ValueError, match="1000 classes"):
        alexnet(num_classes=10, pretrained=True)


def test_fetch_weights_cache_hash_and_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("LRSA_CACHE", str(tmp_path / "cache"))
    from lrsa._download import file_digest
    src = tmp_path / "tmp.pth"
    torch.save(small_cnn().state_dict(), src)
    good = tmp_path / f"w-{file_digest(src)[:8]}.pth"
    src.rename(good)
    sd = fetch_weights(good.as_uri())
    assert (tmp_path / "cache" / "weights" / good.name).is_file()
    assert "classifier.2.weight" in sd
    wrong = tmp_path / "v-deadbeef.pth"
    wrong.write_bytes(good.read_bytes())
    with pytest.raises(ValueError, match="sha256 checksum mismatch"):
        fetch_weights(wrong.as_uri())
    assert not (tmp_path / "cache" / "weights" / wrong.name).exists()
    with pytest.raises(ConnectionError, match="offline"):
        fetch_weights((tmp_path / "gone-0123abcd.pth").as_uri())


def test_small_cnn_and_registry():
    m = small_cnn()
    assert m.eval()(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert _nparams(m) < 100_000
    assert isinstance(models.get_model("nin"), models.NIN)
    with pytest.raises(ValueError, match="unknown model"):
        models.get_model("resnet")


def test_tiny_vit_tokens_are_the_patches_row_by_row():
    from lrsa.models import get_model
    vit = get_model("tiny_vit", patch=2)
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    tokens = vit.tokens(x)
    assert tokens.shape == (2, 16, 4)
    # token 1 is the 2 x 2 patch at rows 0-1, columns 2-3
    assert tokens[0, 1].tolist() == [2.0, 3.0, 10.0, 11.0]
    assert vit(x).shape == (2, 10) and vit.arch == "tiny_vit"
    with pytest.raises(ValueError, match="whole number of 2 x 2 patches"):
        vit(torch.zeros(1, 1, 7, 7))
    with pytest.raises(ValueError, match="multiple of patch"):
        get_model("tiny_vit", image_size=9, patch=2)
