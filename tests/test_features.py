import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrsa.features import (
    collect_features,
    find_layers,
    fold_batchnorm,
    lower_conv_input,
)


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            if m.affine:
                m.weight.data.copy_(torch.randn(c, generator=g))
                m.bias.data.copy_(torch.randn(c, generator=g))
    return model


def _seq_net():
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8, affine=False), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 5), nn.BatchNorm1d(5))


class BasicConv2d(nn.Module):  # torchvision GoogLeNet style
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class TwoBranch(nn.Module):
    def __init__(self):
        super().__init__()
        # registered in an order different from the call order
        self.b2 = BasicConv2d(4, 3, kernel_size=3, padding=1)
        self.b1 = BasicConv2d(4, 5, kernel_size=1)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = torch.cat([self.b1(x), self.b2(x)], 1)
        return self.head(y.mean((2, 3)))


def test_fold_batchnorm_sequential_exact():
    torch.manual_seed(0)
    net = _randomize_bn(_seq_net()).eval()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # original untouched
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    assert folded[3].bias is not None


def test_fold_batchnorm_attribute_module_and_traced():
    torch.manual_seed(1)
    net = _randomize_bn(TwoBranch()).eval()
    x = torch.randn(2, 3, 6, 6)
    for folded in (fold_batchnorm(net), fold_batchnorm(net, example_input=x)):
        assert isinstance(folded.b1.bn, nn.Identity) and isinstance(folded.b2.bn, nn.Identity)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_traced_skips_preactivation():
    class Pre(nn.Module):  # registration order conv, bn but forward is conv(bn(x))
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv(self.bn(x))

    net = _randomize_bn(Pre()).eval()
    x = torch.randn(2, 3, 4, 4)
    folded = fold_batchnorm(net, example_input=x)
    assert isinstance(folded.bn, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x))


@pytest.mark.parametrize("kw", [
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 5, "padding": 2},
    {"kernel_size": 1},
    {"kernel_size": 3, "dilation": 2, "padding": 1, "stride": 2},
    {"kernel_size": (3, 2), "padding": (1, 0)},
    {"kernel_size": 4, "padding": "same"},
    {"kernel_size": 3, "padding": 1, "padding_mode": "reflect"},
])
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_lowering_matches_conv(kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, **kw)
    x = torch.randn(2, 3, 9, 8)
    X = lower_conv_input(x, conv)
    with torch.no_grad():
        out = conv(x)
        Z = conv.weight.reshape(4, -1) @ X + conv.bias[:, None]
    ref = out.reshape(2, 4, -1).permute(1, 0, 2).reshape(4, -1)
    torch.testing.assert_close(Z, ref, rtol=1e-5, atol=1e-5)


def test_lowering_linear_and_errors():
    lin = nn.Linear(6, 3)
    x = torch.randn(5, 6)
    torch.testing.assert_close(lower_conv_input(x, lin), x.T)
    with pytest.raises(ValueError, match="grp.*groups=2"):
        lower_conv_input(torch.randn(1, 4, 5, 5), nn.Conv2d(4, 4, 3, groups=2), name="grp")


def _conv_net():
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, stride=2), nn.ReLU(),
                         nn.Conv2d(5, 6, 3, dilation=2, padding=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 4))


def test_collect_features_columns_match_lowering():
    torch.manual_seed(0)
    net = _conv_net()
    batches = [torch.randn(3, 3, 8, 8) for _ in range(2)]
    feats = collect_features(net, ["0", "2", "5"], batches, samples_per_image=7, seed=3)
    for name in ("0", "2", "5"):
        f = feats[name]
        W, b = net.get_submodule(name).weight, net.get_submodule(name).bias
        assert f.X.dtype == torch.float32 and f.Z.dtype == torch.float32
        assert f.num_images == 6
        with torch.no_grad():
            torch.testing.assert_close(W.reshape(W.shape[0], -1) @ f.X + b[:, None], f.Z,
                                       rtol=1e-5, atol=1e-5)
    assert feats["0"].X.shape == (27, 6 * 7) and feats["5"].X.shape == (96, 6)
    # sampled columns are columns of the full lowering of the first image
    X_full = lower_conv_input(batches[0][:1], net[0])
    first = feats["0"].X[:, :7]
    dist = torch.cdist(first.T, X_full.T).min(1).values
    assert float(dist.max()) < 1e-5
    # same seed, same positions, whatever the other layers
    again = collect_features(net, ["2"], batches, samples_per_image=7, seed=3)
    torch.testing.assert_close(again["2"].X, feats["2"].X)


def test_collect_features_cap():
    torch.manual_seed(0)
    net = _conv_net()
    batches = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    feats = collect_features(net, {"0": net[0]}, batches, samples_per_image=5, max_samples=23)
    f = feats["0"]
    assert f.X.shape[1] == 23 and f.num_images == 5
    # the 23 columns are the first 23 of an uncapped run (the cap truncates, not resamples)
    full = collect_features(net, ["0"], batches, samples_per_image=5)["0"]
    torch.testing.assert_close(f.X, full.X[:, :23])
    torch.testing.assert_close(f.Z, full.Z[:, :23])


def test_collect_features_asymmetric():
    torch.manual_seed(0)
    net = _conv_net()
    approx = _conv_net()  # different weights: the "approximated" network
    batches = [(torch.randn(2, 3, 8, 8), torch.zeros(2)) for _ in range(2)]
    sym = collect_features(net, ["2"], batches, samples_per_image=4, seed=1)["2"]
    asym = collect_features(net, ["2"], batches, samples_per_image=4, seed=1,
                            inputs_from=approx)["2"]
    torch.testing.assert_close(asym.Z, sym.Z)  # targets from the original network
    assert not torch.allclose(asym.X, sym.X)
    # X are the approximated network's inputs at the same positions
    own = collect_features(approx, ["2"], batches, samples_per_image=4, seed=1)["2"]
    torch.testing.assert_close(asym.X, own.X)


def test_collect_features_unsupported_layers():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.ConvTranspose2d(4, 2, 2))
    batches = [torch.randn(1, 4, 6, 6)]
    with pytest.raises(ValueError, match="'0'.*Conv2d.*groups=2"):
        collect_features(net, ["0"], batches)
    with pytest.raises(ValueError, match="'1'.*ConvTranspose2d"):
        collect_features(net, ["1"], batches)
    with pytest.raises(ValueError, match="no module named 'nope'"):
        collect_features(net, ["nope"], batches)


def test_find_layers_call_order_and_twice():
    net = TwoBranch()
    layers = find_layers(net, torch.randn(1, 3, 6, 6))
    assert [n for n, _ in layers] == ["stem", "b1.conv", "b2.conv", "head"]
    assert layers[0][1] is net.stem

    shared = nn.Linear(3, 3)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(ValueError, match="more than once"):
        find_layers(twice, torch.randn(2, 3))
