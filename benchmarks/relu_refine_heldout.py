"""Does the ReLU refinement generalize? Held-out post-ReLU error on VGG-16 layers.

    python benchmarks/relu_refine_heldout.py [--layers features.17:0.28 features.24:0.2 ...]

For each layer (name:stored-size fraction), features of 2000 calibration images are split
in halves: the fits see the first, the errors are measured on both. Compared at the same
rank: truncated SVD, reduced-rank regression (RRR), and RRR refined on the post-ReLU
response (:meth:`lrsa.structured_fit.StructuredFit.refine_relu`) for a grid of rounds and damping.
Writes benchmarks/results/relu_refine_heldout.{json,md}.
"""

import argparse
from pathlib import Path

import torch

from _common import CHECKPOINT, cifar_root, table
from lrsa.baselines import truncated_svd
from lrsa.batchnorm import fold_batchnorm
from lrsa.data import load_cifar10, make_loader
from lrsa.features import collect_features
from lrsa.models import load_checkpoint, vgg16_bn
from lrsa.paper import VGG16_LAYER_NAMES
from lrsa.report import write_report
from lrsa.solver import LayerProblem
from lrsa.structured_fit import StructuredFit

RESULTS = Path(__file__).parent / "results"


def relu_error(A, U, V, b, X, Z):
    Y = torch.relu(Z)
    return float(torch.linalg.norm(Y - torch.relu((A + U @ V) @ X + b[:, None]))
                 / torch.linalg.norm(Y))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", nargs="+", default=["features.10:0.56", "features.17:0.28",
                                                   "features.24:0.2", "features.34:0.139",
                                                   "classifier.0:0.42"])
    p.add_argument("--rounds", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--damping", nargs="+", type=float, default=[0.0, 0.3, 1.0, 3.0])
    p.add_argument("--out", default=str(RESULTS / "relu_refine_heldout"))
    a = p.parse_args()
    model = vgg16_bn()
    load_checkpoint(model, CHECKPOINT)
    model = fold_batchnorm(model.eval())
    xtr, ytr = load_cifar10(cifar_root(), train=True)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))
    calib = [x for x, _ in make_loader(xtr[idx[:2000]], ytr[idx[:2000]], 250)]
    rows = []
    for spec in a.layers:
        name, cr = spec.split(":")
        mod = model.get_submodule(name)
        f = collect_features(model, [name], calib, samples_per_image=10,
                             max_samples=20_000)[name]
        half = f.N // 2
        fit_part, held = (f.X[:, :half], f.Z[:, :half]), (f.X[:, half:], f.Z[:, half:])
        W = mod.weight.detach().reshape(mod.weight.shape[0], -1)
        b = mod.bias.detach()
        n, d = W.shape
        r = int(float(cr) * n * d) // (n + d)
        lin = LayerProblem(*fit_part, b, "linear")
        relu = lin.retarget(torch.relu(fit_part[1]), "relu")
        sf = StructuredFit(lin)
        A, U, V, _ = sf.fit([], r)
        base = {"layer": VGG16_LAYER_NAMES.get(name, name), "N fit": half, "d": d, "rank": r}

        fits = [("truncated SVD", (torch.zeros_like(W), *truncated_svd(W, r), b)),
                ("RRR", (A, U, V, b))]
        fits += [(f"RRR + ReLU refine, {rounds} rounds, damping {damping:g}",
                  sf.refine_relu(relu, A, U, V, rounds=rounds, damping=damping))
                 for rounds in a.rounds for damping in a.damping]
        for method, factors in fits:
            rows.append({**base, "method": method,
                         "error fit": relu_error(*factors, *fit_part),
                         "error held-out": relu_error(*factors, *held)})
            print(rows[-1], flush=True)
    cols = ["layer", "N fit", "d", "rank", "method", "error fit", "error held-out"]
    write_report(a.out, {"rows": rows, "markdown": table(rows, cols)})


if __name__ == "__main__":
    main()
