import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrsa.features import collect_features
from lrsa.layers import (
    SparseLowRankConv2d,
    SparseLowRankLinear,
    apply_structure,
    estimate_macs,
    keep_structure_hook,
    model_structure,
)


def _factors(n, c, k, r, seed=0, zero_channels=(1,), zero_columns=(0, 5)):
    g = torch.Generator().manual_seed(seed)
    d = c * k * k
    A = torch.randn(n, d, generator=g)
    for ch in zero_channels:
        A[:, ch * k * k:(ch + 1) * k * k] = 0
    for col in zero_columns:
        A[:, col] = 0
    U, V = torch.randn(n, r, generator=g), torch.randn(r, d, generator=g)
    return A, U, V


def _close(out, ref):
    scale = float(ref.abs().max())
    assert float((out - ref).abs().max()) <= 1e-5 * max(scale, 1.0)


@pytest.mark.parametrize("kw", [
    {"kernel_size": 3, "padding": 1},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 5, "padding": 2, "dilation": 1},
    {"kernel_size": 3, "padding": 2, "dilation": 2},
    {"kernel_size": 1},
    {"kernel_size": 3, "padding": 1, "padding_mode": "reflect"},
])
def test_conv_matches_dense(kw):
    torch.manual_seed(0)
    c, n = 5, 7
    conv = nn.Conv2d(c, n, **kw)
    k = conv.kernel_size[0]
    inner = (0, 2 * k * k + k * k - 1) if k > 1 else ()  # single zero columns
    A, U, V = _factors(n, c, k, 2, zero_columns=inner)
    m = SparseLowRankConv2d.from_factors(conv, A, U, V)
    assert m.kept_index.tolist() == [0, 2, 3, 4]
    assert m.nonzero_columns == 4 * k * k - len(inner)
    W = (A + U @ V).reshape(n, c, k, k)
    torch.testing.assert_close(m.to_dense_weight(), W)
    dense = copy.deepcopy(conv)
    with torch.no_grad():
        dense.weight.copy_(W)
    x = torch.randn(2, c, 9, 10)
    with torch.no_grad():
        ref = dense(x)
        _close(m(x), ref)
        _close(m.to_dense_module()(x), ref)
        _close(m(x[0]), ref[0])  # unbatched input


def test_conv_branch_edge_cases():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    x = torch.randn(2, 3, 8, 8)
    A, U, V = _factors(4, 3, 3, 2, zero_channels=(), zero_columns=())
    cases = {
        "no sparse": (torch.zeros_like(A), U, V),
        "no low rank": (A, None, None),
        "rank 0": (A, U[:, :0], V[:0]),
        "all kept": (A, U, V),
        "bias only": (torch.zeros_like(A), None, None),
    }
    for label, (a, u, v) in cases.items():
        m = SparseLowRankConv2d.from_factors(conv, a, u, v)
        W = a + (u @ v if u is not None else 0)
        with torch.no_grad():
            ref = F.conv2d(x, W.reshape(4, 3, 3, 3), conv.bias, stride=2, padding=1)
            _close(m(x), ref)
        assert (m.sparse is None) == (label in ("no sparse", "bias only")), label
        assert (m.rank == 0) == (label in ("no low rank", "rank 0", "bias only")), label
    m = SparseLowRankConv2d.from_factors(nn.Conv2d(3, 4, 3, bias=False), A, U, V)
    assert m.bias is None and m.num_parameters_effective == 4 * 27 + 2 * (4 + 27)


def test_conv_numpy_factors_and_tol():
    conv = nn.Conv2d(2, 3, 3)
    A, U, V = _factors(3, 2, 3, 1, zero_channels=(), zero_columns=())
    A[:, :9] = 1e-9
    m = SparseLowRankConv2d.from_factors(conv, A.numpy(), U.numpy(), V.numpy(),
                                         np.zeros(3, np.float64), tol=1e-6)
    assert m.kept_index.tolist() == [1] and float(m.bias.detach().abs().sum()) == 0
    assert m.sparse.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="groups"):
        SparseLowRankConv2d.from_factors(nn.Conv2d(2, 2, 3, groups=2), A[:2, :9], None, None)
    with pytest.raises(ValueError, match="A must be"):
        SparseLowRankConv2d.from_factors(conv, A[:, :5], U, V)


def test_parameter_counts():
    n, c, k, r = 32, 16, 3, 4
    conv = nn.Conv2d(c, n, k, padding=1)
    A, U, V = _factors(n, c, k, r, zero_channels=range(2, 16), zero_columns=(0,))
    m = SparseLowRankConv2d.from_factors(conv, A, U, V)
    d = c * k * k
    assert m.num_parameters_effective == n * (2 * k * k - 1) + r * (n + d) + n
    assert m.num_parameters_stored == n * 2 * k * k + r * (n + d) + n
    assert m.num_parameters_effective < m.num_parameters_dense == n * d + n
    assert estimate_macs(m, (1, c, 8, 8)) < estimate_macs(conv, (1, c, 8, 8))


def test_structure_round_trip():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1)
    A, U, V = _factors(6, 4, 3, 2)
    m = SparseLowRankConv2d.from_factors(conv, A, U, V)
    s = json.loads(json.dumps(m.structure()))
    fresh = SparseLowRankConv2d.from_structure(s)
    fresh.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    assert "kept_channels=3/4" in repr(fresh) and "rank=2" in repr(fresh)
    assert torch.equal(fresh.column_mask, m.column_mask)


def test_model_structure_round_trip():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 5))
    A, U, V = _factors(4, 3, 3, 1)
    net[0] = SparseLowRankConv2d.from_factors(net[0], A, U, V)
    Al = torch.randn(5, 64)
    Al[:, 10:40] = 0
    net[3] = SparseLowRankLinear.from_factors(net[3], Al, torch.randn(5, 2), torch.randn(2, 64))
    structs = json.loads(json.dumps(model_structure(net)))
    assert set(structs) == {"0", "3"}
    skeleton = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * 4 * 4, 5))
    apply_structure(skeleton, structs).load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(skeleton(x), net(x), rtol=0, atol=0)


def test_keep_structure_hook_after_sgd_step():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    A, U, V = _factors(4, 3, 3, 1, zero_channels=(2,), zero_columns=(0, 13))
    net = nn.Sequential(SparseLowRankConv2d.from_factors(conv, A, U, V), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 5 * 5, 2))
    hook = keep_structure_hook(net)
    assert len(hook) == 1
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt.register_step_post_hook(hook)
    before = net[0].sparse.weight.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        loss = net(torch.randn(3, 3, 5, 5)).pow(2).sum()
        loss.backward()
        assert float(net[0].sparse.weight.grad[:, 0, 0, 0].abs().sum()) > 0  # would move
        opt.step()
    w = net[0].sparse.weight.detach()
    mask = net[0].column_mask.expand_as(w)
    assert float(w[~mask].abs().max()) == 0
    assert not torch.allclose(w[mask], before[mask])
    A_now, _, _, _ = net[0].factors()
    assert float(A_now[:, 18:27].abs().sum()) == 0  # dropped channel stays dropped
    assert float(A_now[:, [0, 13]].abs().sum()) == 0


@pytest.mark.parametrize("r", [0, 3])
def test_linear_matches_dense_and_round_trip(r):
    torch.manual_seed(0)
    lin = nn.Linear(10, 6)
    A = torch.randn(6, 10)
    A[:, [1, 4, 5]] = 0
    U, V = torch.randn(6, r), torch.randn(r, 10)
    m = SparseLowRankLinear.from_factors(lin, A, U, V)
    assert m.kept_index.tolist() == [0, 2, 3, 6, 7, 8, 9] and m.rank == r
    x = torch.randn(4, 3, 10)
    with torch.no_grad():
        ref = F.linear(x, A + U @ V, lin.bias)
        _close(m(x), ref)
        _close(m.to_dense_module()(x), ref)
    torch.testing.assert_close(m.to_dense_weight(), A + U @ V)
    assert m.num_parameters_effective == 6 * 7 + r * 16 + 6
    fresh = SparseLowRankLinear.from_structure(json.loads(json.dumps(m.structure())))
    fresh.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    # keep_structure_hook: dropped features cannot come back
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    opt.register_step_post_hook(keep_structure_hook(m))
    m(x).sum().backward()
    opt.step()
    assert float(m.factors()[0][:, [1, 4, 5]].abs().sum()) == 0


def test_linear_degenerate():
    lin = nn.Linear(4, 3)
    m = SparseLowRankLinear.from_factors(lin, torch.zeros(3, 4), None, None)
    x = torch.randn(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(m(x), lin.bias.expand(2, 3))
    assert m.num_parameters_effective == 3


def test_asymmetric_inputs_from_compressed_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3))
    approx = copy.deepcopy(net)
    W = net[0].weight.detach().reshape(4, -1)
    approx[0] = SparseLowRankConv2d.from_factors(net[0], torch.zeros_like(W), W[:, :1] * 0 + 1,
                                                 W[:1])
    batches = [torch.randn(2, 3, 6, 6)]
    f = collect_features(net, ["2"], batches, samples_per_image=5, inputs_from=approx)["2"]
    own = collect_features(approx, {"2": approx[2]}, batches, samples_per_image=5)["2"]
    torch.testing.assert_close(f.X, own.X)  # inputs: the approximated network's
    sym = collect_features(net, ["2"], batches, samples_per_image=5)["2"]
    torch.testing.assert_close(f.Z, sym.Z)  # targets: the original network's


def test_features_solver_layer_end_to_end():
    from lrsa.batchnorm import fold_batchnorm
    from lrsa.solver import solve_layer

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()).eval()
    net = fold_batchnorm(net)
    f = collect_features(net, ["3"], [torch.randn(2, 3, 6, 6)], samples_per_image=30)["3"]
    sol = solve_layer(f.X, f.targets("linear"), 0.01, 0.03, response="linear",
                      bias=net[3].bias.detach(), max_iter=20)
    m = SparseLowRankConv2d.from_factors(net[3], sol.A, sol.U, sol.V, sol.bias)
    x = torch.randn(2, 6, 6, 6)
    with torch.no_grad():
        _close(m(x), F.conv2d(x, sol.W.reshape(6, 6, 3, 3), sol.bias, padding=1))


def test_entry_sparse_linear_equals_its_dense_a_plus_uv_and_counts_nonzeros():
    from lrsa.layers import EntrySparseLowRankLinear
    from lrsa.prox import project_n_m
    torch.manual_seed(0)
    lin = nn.Linear(8, 6)
    A = project_n_m(torch.randn(6, 8), 2, 4)
    U, V = torch.randn(6, 2), torch.randn(2, 8)
    mod = EntrySparseLowRankLinear.from_factors(lin, A, U, V)
    x = torch.randn(5, 3, 8)
    want = x @ (A + U @ V).T + lin.bias
    torch.testing.assert_close(mod(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mod.to_dense_module()(x), want, rtol=1e-5, atol=1e-5)
    assert mod.nonzeros == 24 and mod.rank == 2
    assert estimate_macs(mod, (5, 3, 8)) == (24 + 2 * 14) * 15
    rebuilt = EntrySparseLowRankLinear.from_structure(mod.structure())
    rebuilt.load_state_dict(mod.state_dict())
    torch.testing.assert_close(rebuilt(x), mod(x))
