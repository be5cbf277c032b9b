"""The pipeline on the paper's other architectures, random weights, tiny synthetic images
(no ImageNet and no network here): it must find, order, approximate and rebuild them."""

import torch
from torch import nn

from lrsa.features import find_layers
from lrsa.layers import SparseLowRankConv2d
from lrsa.models import alexnet, googlenet, nin
from lrsa.pipeline import Budget, SolverSettings, compress, default_plan
from lrsa.report import count_parameters


def images(n, size, seed=0):
    return [torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))]


def test_googlenet_branches_are_found_in_call_order_and_compressed():
    torch.manual_seed(0)
    model = googlenet(num_classes=10).eval()
    layers = find_layers(model, images(1, 64)[0])
    names = [n for n, _ in layers]
    # inception branches appear in the order the forward calls them
    assert names.index("inception3a.branch1.conv") < names.index("inception3a.branch2.0.conv")
    assert names.index("inception3a.branch4.1.conv") < names.index("inception3b.branch1.conv")
    plan = default_plan(layers, frac=0.1)
    approximated = [n for n, p in plan.items() if not p.skip]
    # 1x1 convs and the first conv are left alone; 3x3 convs and the fc are approximated
    assert "conv1.conv" not in approximated and "inception3a.branch1.conv" not in approximated
    assert "inception3a.branch2.1.conv" in approximated
    keep = {n: plan[n] for n in ["inception3a.branch2.1.conv", "inception4e.branch3.1.conv",
                                 "fc"]}
    comp, rep = compress(model, images(2, 64), keep,
                         solver=SolverSettings(max_samples=300, max_iter=30), progress=False,
                         fallback=None)
    assert isinstance(comp.get_submodule("inception3a.branch2.1.conv"), SparseLowRankConv2d)
    assert count_parameters(comp) < count_parameters(model)
    assert comp(images(1, 64, seed=1)[0]).shape == (1, 10)


def test_alexnet_convs_compress_and_run():
    torch.manual_seed(0)
    model = alexnet(num_classes=10).eval()
    exclude = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    comp, rep = compress(model, images(2, 64), Budget(frac=0.1, exclude=exclude),
                         solver=SolverSettings(max_samples=200, max_iter=20), progress=False,
                         fallback=None)
    kinds = {r["name"]: r["kind"] for r in rep.layers}
    assert kinds["features.0"] == "original"  # the paper keeps the first conv
    assert all(kinds[n] == "original" for n in exclude)
    assert sum(r["params_compressed"] for r in rep.layers) < sum(
        r["params_original"] for r in rep.layers)
    assert comp(images(1, 64, seed=2)[0]).shape == (1, 10)


def test_nin_spatial_convs_only():
    model = nin().eval()
    layers = find_layers(model, torch.zeros(1, 3, 32, 32))
    plan = default_plan(layers)
    spatial = [n for n, m in layers if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert [n for n, p in plan.items() if not p.skip] == spatial[1:]
