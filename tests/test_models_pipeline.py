"""The pipeline on the paper's other architectures, random weights, tiny synthetic images
(no ImageNet and no network here): it must find, order, approximate and rebuild them."""

import torch
from torch import nn

from lrsa.features import find_layers
from lrsa.layers import SparseLowRankConv2d
from lrsa.models import alexnet, googlenet, nin
from lrsa.pipeline import Budget, SolverSettings, compress, default_plan
from lrsa.report import count_macs, count_parameters


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
    plan = default_plan(layers, relative_lam1=0.1)
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
    comp, rep = compress(model, images(2, 64), Budget(relative_lam1=0.1, exclude=exclude),
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


def test_nin_all_layers_factors_the_first_and_1x1_convs_as_eckart_young():
    """Budget(all_layers=True) approximates the first conv and the 1x1 convs the defaults keep
    (only ``exclude`` stays); with truncated SVD each factored conv is the best rank-r
    approximation of its lowered weight: the error is the tail of the spectrum."""
    from lrsa.pipeline.layer import lowered_weight
    model = nin().eval()
    layers = find_layers(model, torch.zeros(1, 3, 32, 32))
    last = layers[-1][0]
    plan = default_plan(layers, all_layers=True, exclude=[last])
    assert [n for n, p in plan.items() if p.skip] == [last]
    # a multiply-add budget: random weights' flat spectra would leave the small layers
    # whole under a size budget; in MACs the full-resolution first layers are dear
    comp, rep = compress(model, images(2, 32), Budget(macs=0.25, ratio=0.0, all_layers=True,
                                                      exclude=[last]),
                         method="svd", progress=False, fallback=None)
    rows = {r["name"]: r for r in rep.layers}
    first, pointwise = layers[0][0], "features.cccp1"
    for name in (first, pointwise):
        assert rows[name]["kind"] == "factored", name
        mod = comp.get_submodule(name)
        A, U, V, _ = mod.factors()
        W = lowered_weight(model.get_submodule(name)).double()
        s = torch.linalg.svdvals(W)
        err = torch.linalg.matrix_norm(W - (A + U @ V).double()) ** 2
        assert 0 < mod.rank < min(W.shape)
        assert torch.isclose(err, (s[mod.rank:] ** 2).sum(), rtol=1e-4), name
    assert count_macs(comp, (1, 3, 32, 32)) <= 0.25 * count_macs(model, (1, 3, 32, 32))
