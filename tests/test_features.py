import pytest
import torch
from torch import nn

from lrsa.features import (
    collect_features,
    find_layers,
    lower_conv_input,
)
from test_batchnorm import TwoBranch


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
