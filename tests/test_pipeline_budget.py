"""lrsa.pipeline.budget: Budget and plans, the spread of a whole-network target (brute-force
optima), the multiply-add budget."""

import itertools
import math

import pytest
import torch
from torch import nn

from lrsa.batchnorm import fold_batchnorm
from lrsa.pipeline import Budget, LayerPlan, compress
from lrsa.pipeline.budget import spread_by_energy


def test_mac_budget_is_met_and_cuts_early_layers_more(trained):
    """network_macs spreads the sizes by each layer's multiply-adds: the compressed model
    stays within the MAC budget (a factored layer's MACs are its stored size per output
    position), and the high-resolution early layer keeps less than under a weight budget
    of the same overall size."""
    from lrsa.report import count_macs
    model, calib, _ = trained
    by_macs, rep_macs = compress(model, calib, Budget(macs=0.5), fallback=None,
                                 progress=False)
    original = fold_batchnorm(model)
    assert count_macs(by_macs, (1, 1, 8, 8)) <= 0.5 * count_macs(original, (1, 1, 8, 8))
    stored = rep_macs.params_compressed / rep_macs.params_original
    _, rep_params = compress(model, calib, Budget(size=stored), fallback=None, progress=False)
    cr = lambda rep, name: next(r["params_compressed"] / r["params_original"]  # noqa: E731
                                for r in rep.layers if r["name"] == name)
    assert cr(rep_macs, "features.3") < cr(rep_params, "features.3")
    with pytest.raises(ValueError, match="takes one of size, macs"):
        compress(model, calib, Budget(size=0.5, speedup=2.0), progress=False)


def test_size_and_mac_limits_hold_together_and_the_mac_dear_layer_gives_way():
    """Budget(size, macs): both limits hold; with equal spectra a MAC limit that does not
    bind leaves the size's ranks (in general it only reorders the greedy steps); one that
    binds takes ranks from the layer whose ranks cost most multiply-adds (a high-resolution
    layer: here 10 MACs per weight) and gives the others at least as many; each plan says
    which limit stopped its layer."""
    n = d = 12
    spectra = [[5, 4, 3, 2, 1, 0.5], [5, 4, 3, 2, 1, 0.5], [5, 4, 3, 2, 1, 0.5]]
    layers = [(f"fc{i}", _linear_with_spectrum(n, d, s, i)) for i, s in enumerate(spectra)]
    weights = {name: n * d for name, _ in layers}
    macs = {**weights, "fc0": 10 * n * d}  # fc0 runs on ten positions
    size = 12 * (n + d) / (3 * n * d)  # 12 ranks in all

    def spread(mac_target):
        plan = {name: LayerPlan() for name, _ in layers}
        also = [] if mac_target is None else [(mac_target, macs, "Budget.macs", "MACs")]
        spread_by_energy(plan, layers, size, also=also)
        return plan, {k: round(p.size * n * d / (n + d)) for k, p in plan.items()}

    _, alone = spread(None)
    _, loose = spread(1.0)
    plan, tight = spread(0.25)
    assert alone == loose == {"fc0": 4, "fc1": 4, "fc2": 4}
    assert sum(tight.values()) <= 12 and tight["fc0"] < alone["fc0"]
    assert tight["fc1"] >= alone["fc1"] and tight["fc2"] >= alone["fc2"]
    mac_total = sum(r * (n + d) / (n * d) * macs[k] for k, r in tight.items())
    assert mac_total <= 0.25 * sum(macs.values())
    assert "exceed Budget.macs=0.25" in plan["fc0"].sized_by
    assert plan["fc0"].sized_by.startswith("Budget.size and Budget.macs spread: the size of rank ")


def test_compress_meets_size_and_macs_together_and_its_report_says_what_stopped_each_layer(
        trained):
    """compress with Budget(size, macs): the stored model holds at most both fractions, and
    each row of a spread layer names the spread (the skipped first conv has none)."""
    from lrsa.report import count_macs, count_parameters
    model, calib, _ = trained
    original = fold_batchnorm(model)
    compressed, rep = compress(model, calib, Budget(size=0.4, macs=0.4, ratio=0.0),
                               fallback=None, progress=False)
    assert count_macs(compressed, (1, 1, 8, 8)) <= 0.4 * count_macs(original, (1, 1, 8, 8))
    assert rep.params_compressed <= 0.4 * rep.params_original + 1e-9
    assert count_parameters(compressed) >= rep.params_compressed  # biases come on top
    rows = {r.name: r for r in rep.layers}
    assert rows["features.0"].sized_by is None
    spread = [r for r in rep.layers if r.sized_by]
    assert spread and all(r.sized_by.startswith("Budget.size and Budget.macs spread: ")
                          for r in spread)
    md = rep.markdown().splitlines()
    for r in spread:  # the report's markdown says it, after the fall-back's figures
        why = "; ".join(w for w in (r.sized_by, r.decision) if w)
        assert f"- {r.name}: {r.kind}, rank {r.rank}; {why}" in md
    assert rep.reasons({spread[0].name: "first"})[0].startswith("- first: ")


def test_presets_are_budgets_and_take_changes():
    """Budget.preset(name) is the named Budget; changes replace its fields; an unknown name
    is refused with the list of presets."""
    from lrsa.pipeline.budget import PRESETS
    assert Budget.preset("fast") == Budget(**PRESETS["fast"])
    assert Budget.preset("fast").macs is not None and Budget.preset("fast").ratio == 0
    assert Budget.preset("fast", size=0.25).size == 0.25
    with pytest.raises(ValueError, match=r"no Budget preset 'quick'; presets: \['fast'\]"):
        Budget.preset("quick")
    with pytest.raises(ValueError, match="Budget.all_layers is True or False, got 'yes'"):
        Budget(all_layers="yes")


def _linear_with_spectrum(n, d, singular_values, seed):
    """nn.Linear(d, n) whose weight has the given singular values (random singular vectors)."""
    g = torch.Generator().manual_seed(seed)
    P, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    s = torch.tensor(singular_values, dtype=torch.float32)
    layer = nn.Linear(d, n)
    with torch.no_grad():
        layer.weight.copy_(P[:, :len(s)] @ torch.diag(s) @ Q[:, :len(s)].T)
    return layer


def test_network_spread_is_the_brute_force_optimum_of_the_energy_product():
    """Equal-shaped layers (every rank costs the same): the greedy spread's ranks maximize
    the product of the layers' kept shares of ||W||_F^2 over every rank combination within
    the budget (brute force), and the budget holds."""
    n, d, budget_ranks = 12, 12, 9  # a rank of a 12 x 12 layer stores 24 of its 144 weights
    spectra = [[9, 0.5, 0.3, 0.2, 0.1, 0.05], [3, 2.9, 2.8, 2.7, 0.2, 0.1],
               [5, 4, 1, 0.5, 0.2, 0.1]]  # optimum (1, 4, 4), not the even (3, 3, 3)
    layers = [(f"fc{i}", _linear_with_spectrum(n, d, s, i)) for i, s in enumerate(spectra)]
    plan = {name: LayerPlan() for name, _ in layers}
    spread_by_energy(plan, layers, budget_ranks * (n + d) / (3 * n * d))
    ranks = [round(plan[name].size * n * d / (n + d)) for name, _ in layers]

    def log_energy(rs):
        return sum(math.log(sum(x * x for x in s[:r]) / sum(x * x for x in s))
                   for s, r in zip(spectra, rs))

    best = max((rs for rs in itertools.product(range(1, 6), repeat=3)
                if sum(rs) <= budget_ranks), key=log_energy)
    assert sum(ranks) <= budget_ranks
    assert log_energy(ranks) == pytest.approx(log_energy(best), abs=1e-9)


def test_network_spread_keeps_a_layer_dense_and_refuses_a_budget_below_rank_one():
    """A budget near the whole network's size leaves a layer dense (size 1) rather than
    storing factors larger than its weight; one that cannot give every layer rank 1 names
    the problem."""
    layers = [("a", _linear_with_spectrum(8, 8, [1] * 8, 0)),
              ("b", _linear_with_spectrum(8, 8, [4, 2, 1, 0.5], 1))]
    plan = {name: LayerPlan() for name, _ in layers}
    assert spread_by_energy(plan, layers, 0.99) is plan  # changed in place, and returned
    assert plan["a"].size == 1.0
    with pytest.raises(ValueError, match="smallest rank"):
        spread_by_energy(plan, layers, 0.05)


def test_network_spread_in_rank_multiples_is_the_brute_force_optimum():
    """With rank_multiple=2 every layer's rank is a multiple of 2 and the ranks maximize the
    energy product over all multiples of 2 within the budget (brute force)."""
    n, d, budget_ranks = 12, 12, 10
    spectra = [[9, 0.5, 0.3, 0.2, 0.1, 0.05], [3, 2.9, 2.8, 2.7, 0.2, 0.1],
               [5, 4, 1, 0.5, 0.2, 0.1]]
    layers = [(f"fc{i}", _linear_with_spectrum(n, d, s, i)) for i, s in enumerate(spectra)]
    plan = {name: LayerPlan(rank_multiple=2) for name, _ in layers}
    spread_by_energy(plan, layers, budget_ranks * (n + d) / (3 * n * d))
    ranks = [round(plan[name].size * n * d / (n + d)) for name, _ in layers]

    def log_energy(rs):
        return sum(math.log(sum(x * x for x in s[:r]) / sum(x * x for x in s))
                   for s, r in zip(spectra, rs))

    best = max((rs for rs in itertools.product((2, 4), repeat=3) if sum(rs) <= budget_ranks),
               key=log_energy)
    assert all(r % 2 == 0 for r in ranks) and sum(ranks) <= budget_ranks
    assert log_energy(ranks) == pytest.approx(log_energy(best), abs=1e-9)


def test_compress_refuses_a_rank_multiple_that_is_not_a_positive_integer(trained):
    """As an argument or in a plan of its own (0 would never grow a rank in the spread)."""
    model, calib, _ = trained
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="rank_multiple must be a positive integer"):
            compress(model, calib, Budget(size=0.3, rank_multiple=bad), progress=False)
    plan = {n: LayerPlan(rank_multiple=0) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}
    with pytest.raises(ValueError, match="rank_multiple must be a positive integer, got 0 "
                                         r"\(layer "):
        compress(model, calib, plan, progress=False)


def test_sqrt_spread_is_the_closed_form_and_saturates_small_layers():
    """Budget(spread="sqrt"): CR_l = c / sqrt(size_l). Where no layer reaches its full size,
    c = budget / sum_l sqrt(size_l) in closed form; with a budget that fills the smallest
    layer, that layer is kept whole and the others share the rest at one c."""
    from lrsa.pipeline.budget import spread_by_sqrt
    shapes = [(8, 8), (16, 32), (64, 64)]
    layers = [(f"fc{i}", nn.Linear(d, n)) for i, (n, d) in enumerate(shapes)]
    sizes = [n * d for n, d in shapes]
    total = sum(sizes)

    plan = {name: LayerPlan() for name, _ in layers}
    assert spread_by_sqrt(plan, layers, 0.05) is plan
    c = 0.05 * total / sum(math.sqrt(s) for s in sizes)
    for (name, _), s in zip(layers, sizes):
        assert plan[name].size == pytest.approx(c / math.sqrt(s), rel=1e-9)

    plan = {name: LayerPlan() for name, _ in layers}
    spread_by_sqrt(plan, layers, 0.35)
    assert plan["fc0"].size == 1.0
    rest = 0.35 * total - sizes[0]
    c = rest / (math.sqrt(sizes[1]) + math.sqrt(sizes[2]))
    assert plan["fc2"].size == pytest.approx(c / math.sqrt(sizes[2]), rel=1e-9)
    stored = sum(plan[n].size * s for (n, _), s in zip(layers, sizes))
    assert stored == pytest.approx(0.35 * total, rel=1e-9)


def test_budget_spread_is_checked(trained):
    model, calib, _ = trained
    with pytest.raises(ValueError, match="spread is one of"):
        Budget(size=0.3, spread="uniform")
    with pytest.raises(ValueError, match="spreads a size"):
        Budget(macs=0.3, spread="sqrt")
    _, energy = compress(model, calib, Budget(size=0.3), fallback=None, progress=False)
    _, sqrt = compress(model, calib, Budget(size=0.3, spread="sqrt"), fallback=None,
                       progress=False)
    sizes = [[r["params_compressed"] / r["params_original"] for r in rep.layers
            if r["kind"] == "factored"] for rep in (energy, sqrt)]
    assert sizes[0] != sizes[1]  # the two rules give this network different per-layer sizes
