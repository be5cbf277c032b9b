"""Seconds per layer of solve_layer on the VGG-16 (CIFAR-10) layer shapes, N = 10,000.

    python benchmarks/solver.py [--synthetic] [--images 2500] [--relative-lam1 0.03]

With the trained VGG-16 (``_common.checkpoint_path``) and CIFAR-10 (``LRSA_DATA`` or ``data``)
the layers' real sampled features are used (BatchNorm folded, symmetric inputs); otherwise,
or with ``--synthetic``, random nonnegative inputs of the same shapes. lambda1 is ``relative_lam1``
times the mean column norm of (Y - b) X^T / N (the gradient at 0, so the scale is the
layer's own), lambda2 = 3 lambda1 (paper: 2.5-3x); the ReLU solve uses half of each (its
data term has about half the curvature) and starts from the linear solution.
Prints a markdown table and writes benchmarks/results/solver.json.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from _common import CHECKPOINT, cifar_root, table, threads
from lrsa import solve_layer
from lrsa.batchnorm import fold_batchnorm
from lrsa.features import collect_features, find_layers

VGG_SHAPES = [(64, 27), (64, 576), (128, 576), (128, 1152), (256, 1152), (256, 2304),
              (256, 2304), (512, 2304), (512, 4608), (512, 4608), (512, 4608), (512, 4608),
              (512, 4608)]
NAMES = ["conv1-1", "conv1-2", "conv2-1", "conv2-2", "conv3-1", "conv3-2", "conv3-3",
         "conv4-1", "conv4-2", "conv4-3", "conv5-1", "conv5-2", "conv5-3"]


def real_features(images, samples_per_image):
    from lrsa.data import load_cifar10, make_loader
    from lrsa.models import load_checkpoint, vgg16_bn
    model = vgg16_bn()
    load_checkpoint(model, CHECKPOINT)
    model = fold_batchnorm(model.eval())
    x, y = load_cifar10(cifar_root(), train=True)
    loader = make_loader(x[:images], y[:images], batch_size=250, train=False)
    convs = [(n, m) for n, m in find_layers(model, torch.zeros(1, 3, 32, 32))
             if isinstance(m, torch.nn.Conv2d)]
    feats = collect_features(model, convs, loader, samples_per_image=samples_per_image)
    for (name, conv), label in zip(convs, NAMES, strict=True):
        f = feats[name]
        yield label, f.X, f.Z, conv.weight.detach().reshape(conv.out_channels, -1), \
            conv.bias.detach()


def synthetic_features(N):
    g = torch.Generator().manual_seed(0)
    for label, (n, d) in zip(NAMES, VGG_SHAPES, strict=True):
        mix = torch.randn(d, d // 4 + 1, generator=g) / d ** 0.5
        X = torch.relu(mix @ torch.randn(d // 4 + 1, N, generator=g))
        W = torch.randn(n, d, generator=g) / d ** 0.5
        b = 0.1 * torch.randn(n, generator=g)
        yield label, X, W @ X + b[:, None], W, b


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--images", type=int, default=2500, help="calibration images (real data)")
    p.add_argument("--samples", type=int, default=10_000, help="N, columns per layer")
    p.add_argument("--relative-lam1", type=float, default=0.03)
    p.add_argument("--max-iter", type=int, default=300)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "solver.json"))
    a = p.parse_args()
    real = not a.synthetic and CHECKPOINT.exists() and cifar_root() is not None
    t0 = time.perf_counter()
    layers = (real_features(a.images, a.samples // a.images) if real
              else synthetic_features(a.samples))
    rows = []
    for label, X, Z, W, b in layers:
        X, Z = X[:, :a.samples], Z[:, :a.samples]
        n, d = W.shape
        C = (Z - b[:, None]) @ X.T / X.shape[1]
        lam1 = a.relative_lam1 * float(torch.linalg.vector_norm(C, dim=0).mean())
        lam2 = 3 * lam1
        t1 = time.perf_counter()
        lin = solve_layer(X, Z, lam1, lam2, response="linear", W0=W, bias=b,
                          max_iter=a.max_iter)
        t2 = time.perf_counter()
        rel = solve_layer(X, torch.relu(Z), lam1 / 2, lam2 / 2, response="relu", W0=lin,
                          bias=b, max_iter=a.max_iter)
        t3 = time.perf_counter()
        row = {"layer": label, "n": n, "d": d, "N": X.shape[1]}
        for key, sol, sec in (("lin", lin, t2 - t1), ("relu", rel, t3 - t2)):
            h = sol.history
            row.update({f"{key}_s": sec, f"{key}_it": sol.iterations,
                        f"{key}_conv": sol.converged, f"{key}_r": h["primal_residual"][-1],
                        f"{key}_s_res": h["dual_residual"][-1], f"{key}_rank": sol.rank,
                        f"{key}_nz": sol.nonzero_columns,
                        f"{key}_CR": (sol.nonzero_columns * n + sol.rank * (n + d)) / (n * d)})
        rows.append(row)
        print(f"{label}: linear {t2 - t1:.1f}s ({lin.iterations} it), "
              f"relu {t3 - t2:.1f}s ({rel.iterations} it)", flush=True)
    total = {k: sum(r[f"{k}_s"] for r in rows) for k in ("lin", "relu")}
    cols = ["layer", "n", "d", "N", "lin_s", "lin_it", "lin_r", "lin_s_res", "lin_CR", "relu_s",
            "relu_it", "relu_r", "relu_s_res", "relu_CR"]
    print()
    print(table(rows, cols))
    print(f"\ndata: {'real VGG-16 features' if real else 'synthetic'}; torch threads "
          f"{threads()}; total linear {total['lin']:.1f} s (target 180), ReLU "
          f"{total['relu']:.1f} s (target 360); wall {time.perf_counter() - t0:.1f} s")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"data": "real" if real else "synthetic",
                                       "threads": threads(), "relative_lam1": a.relative_lam1,
                                       "total_linear_s": total["lin"],
                                       "total_relu_s": total["relu"], "layers": rows},
                                      indent=1))


if __name__ == "__main__":
    main()
