r"""Whole networks: approximate layer after layer (paper sections IV-V).

For each layer, in the order a traced forward pass calls them, :func:`compress` samples
lowered inputs X and pre-activation responses Z on calibration images, solves
:func:`lrsa.solve_layer` for A + B, and swaps in a :class:`lrsa.layers.SparseLowRankConv2d`
(or ``...Linear``), or a dense layer where that is cheaper. BatchNorm is folded first.

Strategies (paper Fig. 3): ``"symmetric"`` takes X from the original network,
``"asymmetric"`` from the network approximated so far (targets always from the original).

Lambdas are per layer and relative: ``lam1 = frac * s`` where ``s`` is the mean column norm
of :math:`(Z - b)X^\top/N` (the data term's gradient at 0), so one ``frac`` means the same
on every layer whatever its scale; ``lam2 = ratio * lam1`` (paper: 2.5-3). Instead of
lambdas a user can ask for a compression rate: per layer (``target_cr``) or for the whole
network (``network_cr``, spread evenly over the approximated layers); lrsa then bisects
``frac`` on the linear-response solve, which is convex and fast, and for the ReLU response
refits on the structure found (a trade-off: the ReLU ADMM itself would move the rate).

A run with ``workdir`` writes each finished layer atomically and, started again with the
same arguments, continues after the last finished layer.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .features import collect_features, find_layers, fold_batchnorm
from .layers import SparseLowRankConv2d, SparseLowRankLinear, choose_implementation
from .solver import LayerProblem

__all__ = ["CompressionReport", "LayerPlan", "compress", "default_plan", "finetune",
           "load_compressed", "save_compressed"]


@dataclass
class LayerPlan:
    """How one layer is approximated.

    frac : lam1 relative to the layer's gradient scale (ignored when target_cr is set).
    ratio : lam2 / lam1 (math.inf: sparse only, no low-rank part).
    target_cr : wanted CR(A+B) of this layer in (0, 1]; lambdas are searched.
    skip : leave the layer as it is.
    """

    frac: float = 0.03
    ratio: float = 3.0
    target_cr: float | None = None
    skip: bool = False


def default_plan(layers, *, frac=0.03, ratio=3.0, target_cr=None, exclude=()):
    """The paper's defaults: skip the first conv and 1x1 convs, FC layers sparse only.

    layers : ordered (name, module) pairs (see :func:`lrsa.features.find_layers`).
    """
    plan, first_conv = {}, True
    for name, mod in layers:
        conv = isinstance(mod, nn.Conv2d)
        skip = (name in exclude or (conv and first_conv)
                or (conv and tuple(mod.kernel_size) == (1, 1)))
        first_conv = first_conv and not conv
        plan[name] = LayerPlan(frac=frac, ratio=ratio if conv else math.inf,
                               target_cr=target_cr, skip=skip)
    return plan


@dataclass
class CompressionReport:
    """Per-layer results (paper Table I) and totals. CR = approximated / original size."""

    layers: list = field(default_factory=list)
    strategy: str = "asymmetric"
    response: str = "relu"
    seconds: float = 0.0

    @property
    def params_original(self):
        return sum(r["params_original"] for r in self.layers)

    @property
    def params_compressed(self):
        return sum(r["params_compressed"] for r in self.layers)

    def to_dict(self):
        d = asdict(self)
        d.update(params_original=self.params_original, params_compressed=self.params_compressed)
        return d

    def markdown(self):
        head = ("| layer | kind | CR(A) % | CR(B) % | CR(A+B) % | rank | nonzero cols | "
                "rel. error | s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
        rows = [f"| {r['name']} | {r['kind']} | {100 * r['cr_a']:.1f} | {100 * r['cr_b']:.1f} | "
                f"{100 * r['cr']:.1f} | {r['rank']} | {r['nonzero_columns']} | "
                f"{r['rel_error']:.3f} | {r['seconds']:.1f} |" for r in self.layers]
        return "\n".join([head, *rows])


def _weight(mod):
    return mod.weight.detach().reshape(mod.weight.shape[0], -1)


def _bias(mod):
    return (mod.bias.detach() if mod.bias is not None
            else torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype))


def _cr(sol, n, d):
    cr_a = sol.nonzero_columns * n / (n * d)
    cr_b = sol.rank * (n + d) / (n * d)
    return cr_a, cr_b


def _solve(X, Z, W, b, p, response, debias, max_iter, tol, hint=None):
    """Solve one layer for its plan; returns (solution, frac used)."""
    n, d = W.shape
    lin_problem = LayerProblem(X, Z, b, "linear")
    scale = max(float(torch.linalg.vector_norm(lin_problem.C, dim=0).mean()), 1e-12)

    def lams(frac, resp):
        lam1 = frac * scale
        lam2 = math.inf if math.isinf(p.ratio) else p.ratio * lam1
        if resp == "relu":  # its data term has about half the curvature of the linear one
            lam1, lam2 = lam1 / 2, lam2 / 2
        return lam1, lam2

    if p.target_cr is None:
        lin = lin_problem.solve(*lams(p.frac, "linear"), W0=W, max_iter=max_iter, tol=tol,
                                debias=debias and response == "linear")
        if response == "linear":
            return lin, p.frac
        relu = lin_problem.retarget(torch.relu(Z), "relu")
        return relu.solve(*lams(p.frac, "relu"), W0=lin, max_iter=max_iter, tol=tol,
                          debias=debias), p.frac
    # bisection on log(frac) for CR(A+B) <= target with the convex linear solve, warm-started
    # and loosely converged while searching (the structure, not the last digit, is sought);
    # the bracket starts around the previous layer's answer, widened when it misses
    guess = p.frac if hint is None else hint
    lo, hi, best, W0 = guess / 4, guess * 4, None, W
    for _ in range(10):
        mid = math.sqrt(lo * hi)
        sol = lin_problem.solve(*lams(mid, "linear"), W0=W0, max_iter=40, tol=1e-2)
        cr = sum(_cr(sol, n, d))
        if cr <= p.target_cr:
            hi, best, W0 = mid, mid, sol
            if cr >= 0.9 * p.target_cr:
                break
        else:
            lo = mid
        if hi / lo < 1.15:
            if best is not None:
                break
            hi *= 4  # the target is not met inside the bracket: look at larger lambdas
    frac = best if best is not None else hi
    sol = lin_problem.solve(*lams(frac, "linear"), W0=W0, max_iter=max_iter, tol=tol,
                            debias=True)
    # converged solves shrink more than the loose ones of the search: when the structure
    # falls well short of the target, step lambda back down while the target still holds
    for _ in range(4):
        if sum(_cr(sol, n, d)) >= 0.85 * p.target_cr:
            break
        trial = lin_problem.solve(*lams(frac / 1.4, "linear"), W0=sol, max_iter=max_iter,
                                  tol=tol, debias=True)
        if sum(_cr(trial, n, d)) > p.target_cr:
            break
        frac, sol = frac / 1.4, trial
    if response == "relu":  # nonlinear refit on the structure the linear search found
        sol = _relu_refit(lin_problem.retarget(torch.relu(Z), "relu"), sol)
    return sol, frac


def _relu_refit(data, sol):
    """Refit the ReLU response on a fixed structure (support of A, row space of B)."""
    from .solver import _refit
    Q = torch.linalg.qr(sol.V.T).Q.T  # orthonormal rows spanning the row space of B
    A, U, s, Vh = _refit(data, sol.A, Q, 20, sol.U @ (sol.V @ Q.T))
    root = torch.sqrt(s)
    out = copy.copy(sol)
    out.A, out.B, out.U, out.V = A, (U * s) @ Vh, U * root, root[:, None] * Vh
    out.response = "relu"
    return out


def _set_module(model, name, new):
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _atomic_save(obj, path):
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _run_key(model, plan, settings):
    """Identifies a run: the same model weights and arguments resume, others refuse."""
    h = hashlib.sha256(json.dumps({k: asdict(v) for k, v in plan.items()},
                                  sort_keys=True).encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes()[:4096])
    return h.hexdigest()[:16]


def compress(model, calibration_data, *, plan=None, frac=0.03, ratio=3.0, target_cr=None,
             network_cr=None, response="relu", strategy="asymmetric", samples_per_image=10,
             max_samples=10_000, debias=True, max_iter=200, tol=1e-3, exclude=(), workdir=None,
             fallback="macs", progress=True, seed=0):
    """Compress ``model`` by layer-wise sparse + low-rank approximation.

    Parameters
    ----------
    model : nn.Module (not modified). Conv2d (groups=1) and Linear layers are approximated.
    calibration_data : iterable of input batches or (inputs, labels) pairs, re-iterated once
        per layer (a list of tensors or a loader with a fixed order).
    plan : dict name -> :class:`LayerPlan`; default :func:`default_plan` with ``frac``,
        ``ratio``, ``target_cr`` and ``exclude``.
    network_cr : whole-network CR(A+B) target over all Conv2d/Linear weights; overrides the
        per-layer targets with one even target for the approximated layers.
    response : "relu" (paper) or "linear".
    strategy : "asymmetric" (paper) or "symmetric".
    samples_per_image, max_samples : feature sampling (N <= max_samples per layer).
    debias : refit each layer on its found structure (removes shrinkage bias).
    max_iter, tol : per-layer solver limits (see :func:`lrsa.solve_layer`).
    workdir : folder for resumable runs (None: no files).
    fallback : "macs" or "time": how the dense fall-back is decided; None: always factored.

    Returns
    -------
    (compressed model, :class:`CompressionReport`)
    """
    if response not in ("relu", "linear"):
        raise ValueError(f"response must be 'relu' or 'linear', got {response!r}")
    if strategy not in ("asymmetric", "symmetric"):
        raise ValueError(f"strategy must be 'asymmetric' or 'symmetric', got {strategy!r}")
    batches = list(calibration_data) if not isinstance(calibration_data, list) \
        else calibration_data
    if not batches:
        raise ValueError("calibration_data is empty")
    first = batches[0][0] if isinstance(batches[0], (tuple, list)) else batches[0]
    start = time.perf_counter()
    original = fold_batchnorm(copy.deepcopy(model).eval())
    layers = find_layers(original, first[:1])
    if plan is None:
        plan = default_plan(layers, frac=frac, ratio=ratio, target_cr=target_cr,
                            exclude=exclude)
    unknown = set(plan) - {n for n, _ in layers}
    if unknown:
        raise ValueError(f"plan names layers the model does not have: {sorted(unknown)}")
    if network_cr is not None:
        _spread_network_target(plan, layers, network_cr)

    settings = dict(response=response, strategy=strategy, samples_per_image=samples_per_image,
                    max_samples=max_samples, debias=debias, max_iter=max_iter, tol=tol,
                    seed=seed,
                    fallback=fallback)
    work = None
    if workdir is not None:
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
        key = _run_key(model, plan, settings)
        meta = work / "run.json"
        if meta.exists() and json.loads(meta.read_text()).get("key") != key:
            raise ValueError(f"{work} holds a run with other settings or weights; use a new "
                             "workdir or delete it")
        meta.write_text(json.dumps({"key": key, "settings": settings}))
    compressed = copy.deepcopy(original)
    report = CompressionReport(strategy=strategy, response=response)
    in_shapes, relu_after = _trace(original, first[:1])

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(layers), desc="compress", unit="layer")
    hint = None  # the last layer's frac: where the next CR search starts
    for idx, (name, mod) in enumerate(layers):
        p = plan.get(name, LayerPlan(skip=True))
        n, d = _weight(mod).shape
        row = {"name": name, "type": type(mod).__name__, "n": n, "d": d,
               "params_original": n * d}
        done = work / f"layer_{idx:03d}.pt" if work is not None else None
        if p.skip:
            row.update(kind="original", cr_a=0.0, cr_b=1.0, cr=1.0, rank=min(n, d),
                       nonzero_columns=d, rel_error=0.0, seconds=0.0, frac=None,
                       params_compressed=n * d, converged=True)
        elif done is not None and done.exists():
            saved = torch.load(done, weights_only=True, map_location="cpu")
            row = saved["row"]
            hint = row.get("frac") or hint  # as an uninterrupted run would have it
            new = _build(mod, saved["A"], saved["U"], saved["V"], saved["bias"],
                         in_shapes[name], fallback)
            _set_module(compressed, name, new)
        else:
            t0 = time.perf_counter()
            feats = collect_features(
                original, [name], batches, samples_per_image=samples_per_image,
                max_samples=max_samples, seed=seed,
                inputs_from=compressed if strategy == "asymmetric" else None)[name]
            W, b = _weight(mod).to(feats.X), _bias(mod).to(feats.X)
            # the ReLU response only where a ReLU follows (not for the logits layer)
            resp = response if name in relu_after else "linear"
            sol, used = _solve(feats.X, feats.Z, W, b, p, resp, debias, max_iter, tol, hint)
            hint = used
            new = _build(mod, sol.A, sol.U, sol.V, b, in_shapes[name], fallback)
            _set_module(compressed, name, new)
            cr_a, cr_b = _cr(sol, n, d)
            Y = feats.targets(resp)
            out = sol.W @ feats.X + b[:, None]
            out = torch.relu(out) if resp == "relu" else out
            rel = float(torch.linalg.norm(Y - out) / max(float(torch.linalg.norm(Y)), 1e-30))
            kind = _kind(new)
            row.update(kind=kind, response=resp, cr_a=cr_a, cr_b=cr_b, cr=cr_a + cr_b,
                       rank=sol.rank, nonzero_columns=sol.nonzero_columns, rel_error=rel,
                       seconds=time.perf_counter() - t0, frac=used, converged=bool(sol.converged),
                       params_compressed=round((cr_a + cr_b) * n * d) if kind == "factored"
                       else n * d)
            if done is not None:
                _atomic_save({"row": row, "A": sol.A.cpu(), "U": sol.U.cpu(), "V": sol.V.cpu(),
                              "bias": b.cpu()}, done)
        report.layers.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(layer=name, cr=f"{row['cr']:.2f}")
    if bar is not None:
        bar.close()
    report.seconds = time.perf_counter() - start
    return compressed, report


def _kind(module):
    return "factored" if isinstance(module, (SparseLowRankConv2d, SparseLowRankLinear)) \
        else "dense"


def _build(mod, A, U, V, b, x_shape, fallback):
    if fallback is None:
        cls = SparseLowRankLinear if isinstance(mod, nn.Linear) else SparseLowRankConv2d
        new = cls.from_factors(mod, A, U, V, b)
    else:
        new = choose_implementation(mod, A, U, V, x_shape, bias=b, method=fallback).module
    return new


def _trace(model, x):
    """One traced forward: the input shape (batch 1) of every Conv2d/Linear, and the names
    of those whose output goes straight into an ``nn.ReLU`` module (through Identity
    modules, e.g. folded BatchNorms). A functional ``F.relu`` is not seen: such layers get
    the linear response, the safe choice."""
    shapes, outputs, relu_inputs, hooks = {}, {}, set(), []

    def record(name):
        def pre(mod, args):
            shapes.setdefault(name, tuple(args[0].shape))  # returns None: inputs unchanged

        def post(mod, args, out):
            outputs[name] = out  # kept alive, so no later tensor reuses its memory
        return pre, post

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            pre, post = record(name)
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        elif isinstance(m, nn.ReLU):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args: relu_inputs.add(args[0].data_ptr()) and None))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes, {name for name, out in outputs.items() if out.data_ptr() in relu_inputs}


def _spread_network_target(plan, layers, network_cr):
    """Per-layer targets CR_l = min(1, k sqrt(P_max / P_l)) meeting the network target.

    Small (early) layers keep more of their weights, big (deep) ones less, the pattern of the
    paper's Table I; k is found by bisection.
    """
    if not 0 < network_cr <= 1:
        raise ValueError(f"network_cr must be in (0, 1], got {network_cr}")
    sizes = {name: _weight(m).numel() for name, m in layers}
    total = sum(sizes.values())
    kept = sum(sizes[n] for n in sizes if plan[n].skip)
    free = {n: p for n, p in sizes.items() if not plan[n].skip}
    if not free or network_cr * total <= kept:
        raise ValueError(f"network_cr={network_cr} is out of reach: the skipped layers alone "
                         f"hold {kept / total:.1%} of the weights")
    p_max = max(free.values())

    def crs(k):
        return {n: min(1.0, k * math.sqrt(p_max / p)) for n, p in free.items()}

    lo, hi = 0.0, 1.0
    for _ in range(60):
        k = (lo + hi) / 2
        if sum(c * free[n] for n, c in crs(k).items()) + kept > network_cr * total:
            hi = k
        else:
            lo = k
    for name, cr in crs(lo).items():
        plan[name].target_cr = cr


def finetune(model, loader, *, epochs, lr=1e-3, bf16=False, dropout=False, progress=False,
             seed=0):
    """Fine-tune a compressed model keeping its structure: zero columns stay zero (masks
    re-applied after every step), factors stay factors (they are separate modules).

    ``dropout=False`` (default) switches the model's nn.Dropout off while training: the
    refit layers keep fewer inputs with larger weights, and dropout's noise on them blows
    up the logits (measured on VGG-16 at CR 16%: training-mode loss 27 against 0.38 in eval
    mode, and fine-tuning collapsed to 18% top-1). The Dropout modules are restored after.
    """
    from .layers import keep_structure_hook
    from .train import train
    saved = {m: m.p for m in model.modules() if isinstance(m, nn.Dropout)} if not dropout \
        else {}
    for m in saved:
        m.p = 0.0
    try:
        return train(model, loader, epochs=epochs, lr=lr, bf16=bf16, progress=progress,
                     seed=seed, param_hook=keep_structure_hook(model))
    finally:
        for m, p in saved.items():
            m.p = p


def save_compressed(model, path, *, arch, model_kwargs=None, report=None):
    """Write a compressed model (state dict + the structure needed to rebuild it) atomically.

    ``arch`` and ``model_kwargs`` name the :func:`lrsa.models.get_model` factory that built
    the original network; :func:`load_compressed` rebuilds from them.
    """
    from .layers import model_structure
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save({"format": "lrsa-compressed-1", "arch": arch,
                  "model_kwargs": dict(model_kwargs or {}),
                  "structure": model_structure(model),
                  "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                  "report": json.dumps(report.to_dict() if report is not None else None)},
                 path)


def load_compressed(path):
    """Rebuild a model written by :func:`save_compressed` (loaded with weights_only=True).

    Returns (model, report dict or None). Raises ValueError for a file of another kind or a
    state dict that does not fit the recorded structure.
    """
    from .layers import apply_structure
    from .models import get_model
    obj = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(obj, dict) or obj.get("format") != "lrsa-compressed-1":
        raise ValueError(f"{path} is not a compressed model written by lrsa.save_compressed "
                         "(for original weights use lrsa.models.load_checkpoint)")
    model = fold_batchnorm(get_model(obj["arch"], **obj["model_kwargs"]).eval())
    apply_structure(model, obj["structure"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the recorded structure: {exc}") from exc
    return model, json.loads(obj["report"])
