"""fold_batchnorm: exact on nn.Sequential, on attribute modules (registration or traced
pairs), and never folds a BatchNorm that does not take the layer's output."""

import torch
import torch.nn.functional as F
from torch import nn

from lrsa.batchnorm import fold_batchnorm


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
