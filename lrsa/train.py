"""Training and evaluation loops: SGD + per-step cosine schedule, optional bf16 autocast.

``train`` takes a generic ``param_hook(model)`` called after every optimizer step, which is
how fine-tuning keeps a compressed structure (e.g. zero columns of a sparse component) intact.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .data import TensorLoader
from .utils import atomic_torch_save, device_and_dtype, evaluating, given_or_built, progress_bar

__all__ = ["Distillation", "Recipe", "TrainHistory", "cosine_lr", "evaluate", "train"]


@dataclass
class TrainHistory:
    """What :func:`train` returns.

    Attributes
    ----------
    loss : list of float
        Mean training loss per epoch.
    acc : list of float
        Training top-1 accuracy (%) per epoch, on the augmented batches.
    lr : list of float
        Learning rate used at every step.
    grad_norm : list of float
        With ``max_grad_norm``: the gradients' total l2 norm at every step, before clipping
        (empty otherwise).
    optimizer : torch.optim.Optimizer
        The optimizer, left at the schedule's final learning rate (0 for cosine).
    """

    loss: list = field(default_factory=list)
    acc: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up to ``base_lr``, then cosine to 0.

    During warm-up, step ``s`` uses ``base_lr * (s + 1) / warmup_steps``; afterwards
    ``base_lr * (1 + cos(pi * (s - warmup_steps) / (total_steps - warmup_steps))) / 2``, which
    is 0 at ``step == total_steps``.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    t = min(step - warmup_steps, span) / span
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * t))


def _logits(out):
    return out[0] if isinstance(out, tuple) else out  # e.g. GoogLeNet's aux outputs


@dataclass(frozen=True)
class Recipe:
    """How :func:`train` trains: SGD with momentum, a per-step cosine schedule with an
    optional linear warm-up; checked once (ValueError naming a bad field).

    Attributes
    ----------
    epochs : int >= 1
        Passes over the loader.
    lr : float > 0
        Peak learning rate.
    momentum, nesterov, weight_decay : float, bool, float
        SGD settings (weight decay on every trainable parameter).
    warmup_epochs : float
        Linear warm-up length in epochs (may be fractional, at most ``epochs``); 0 for none.
    max_grad_norm : float > 0 or None
        Rescale the gradients so their total l2 norm is at most this before every step
        (``torch.nn.utils.clip_grad_norm_``); the norms are recorded in the history. Keeps
        a sharp start from diverging: a network without BatchNorm (folded) sits near the
        edge of stability, and one large step there can grow into the next.
    bf16 : bool
        Forward in ``torch.autocast(device, dtype=torch.bfloat16)``; the loss and the weights
        stay float32.
    seed : int
        Seeds dropout and other global-RNG ops inside the loop; the caller's RNG state is
        restored afterwards. (The loader has its own seed.)
    """

    epochs: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 0
    max_grad_norm: float | None = None
    bf16: bool = False
    seed: int = 0

    def __post_init__(self):
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got "
                             f"{self.warmup_epochs}")
        object.__setattr__(self, "epochs", int(self.epochs))


def train(model: nn.Module, train_loader, recipe: Recipe | None = None, *,
          criterion: Callable | None = None,
          param_hook: Callable[[nn.Module], None] | None = None,
          on_epoch_end: Callable | None = None, checkpoint=None, progress: bool = False,
          **recipe_fields) -> TrainHistory:
    """Train by a :class:`Recipe` (SGD, per-step cosine schedule, optional warm-up).

    ``train(model, loader, epochs=3, lr=0.1)`` is ``train(model, loader, Recipe(epochs=3,
    lr=0.1))``: the recipe's fields may be given as keywords instead.

    Under ``torchrun`` with K processes (:mod:`lrsa.distributed`; call
    :func:`lrsa.distributed.setup` first) the model is wrapped in PyTorch's
    DistributedDataParallel, which starts every process from rank 0's weights and averages
    the gradients at every step; ``train_loader`` must give each process its share of every
    global batch (``make_loader(..., shard=True)``, or a DataLoader with a
    DistributedSampler, whose ``set_epoch`` is called before every epoch). ``param_hook``
    runs on every process, so structure masks hold on all of them; BatchNorm statistics are
    each process's own (as in plain DDP); the global RNG (dropout) is seeded with
    ``seed + rank``; the history holds the mean over processes; only rank 0 writes
    ``checkpoint``, and every process resumes from it.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place (on the device of its parameters).
    train_loader : iterable with ``len()``
        Yields ``(inputs, integer labels)`` batches, e.g. :func:`lrsa.data.make_loader`.
    recipe : Recipe, optional
        How to train; or give its fields as keywords (``epochs``, ``lr``, ...).
    criterion : callable or None
        ``criterion(logits, inputs, labels) -> loss`` (a scalar tensor), e.g. a
        :class:`Distillation`; ``None`` is cross-entropy on the labels.
    param_hook : callable or None
        ``param_hook(model)`` after every optimizer step, under ``torch.no_grad()`` (e.g. to
        re-apply masks).
    on_epoch_end : callable or None
        ``on_epoch_end(epoch, stats)`` with ``stats = {"epoch", "loss", "acc", "lr"}``
        after each epoch; returning ``True`` stops training.
    checkpoint : path or None
        Resumable training: after every epoch the model, the optimizer, the history, the
        random states (global and the loader's ``generator``, if it has one) and the epoch
        are written to this file atomically (``torch.save`` to a temporary file, then
        rename). If the file exists when ``train`` starts, training resumes after its last
        finished epoch and ends exactly as an uninterrupted run would; a file written by
        another recipe (any field) or with other batches per epoch is refused.
    progress : bool
        tqdm bar per epoch.

    Returns
    -------
    TrainHistory

    Raises
    ------
    ValueError
        On bad arguments, an empty loader, or a non-finite loss.
    """
    r = given_or_built(Recipe, recipe, recipe_fields)
    try:
        steps_per_epoch = len(train_loader)
    except TypeError:
        raise ValueError("train_loader must have a len() (batches per epoch) for the "
                         "schedule") from None
    if steps_per_epoch < 1:
        raise ValueError("train_loader yields no batches")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if isinstance(train_loader, TensorLoader) and \
            train_loader.world_size != distributed.world_size():
        raise ValueError(f"{distributed.world_size()} processes are training, but the loader "
                         f"is split for {train_loader.world_size}: make it with "
                         "make_loader(..., shard=True) after lrsa.distributed.setup()")
    opt = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum,
                          nesterov=r.nesterov and r.momentum > 0, weight_decay=r.weight_decay)
    dev, hist = device_and_dtype(model)[0], TrainHistory(optimizer=opt)
    total, warm = r.epochs * steps_per_epoch, round(r.warmup_epochs * steps_per_epoch)
    run = {"epochs": r.epochs, "lr": float(r.lr), "steps_per_epoch": steps_per_epoch,
           "warmup_steps": warm, "seed": int(r.seed)}
    # the other fields (warm-up is in steps above) only where they differ from their
    # defaults, so that checkpoints written before they were recorded still resume
    run.update({f.name: getattr(r, f.name) for f in dataclasses.fields(r)
                if f.name not in (*run, "warmup_epochs") and getattr(r, f.name) != f.default})
    step, first = 0, 0
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(r.seed + distributed.rank())
        if checkpoint is not None and os.path.exists(checkpoint):
            first = _resume(checkpoint, run, model, opt, hist, train_loader)
            step = first * steps_per_epoch
        model.train()
        loop = _Loop(model=model, net=_data_parallel(model, dev), opt=opt, hist=hist,
                     recipe=r, dev=dev, total=total, warm=warm, criterion=criterion,
                     param_hook=param_hook, progress=progress)
        for epoch in range(first, r.epochs):
            if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
                train_loader.sampler.set_epoch(epoch)  # a DistributedSampler's reshuffle
            step = loop.epoch(train_loader, step, f"epoch {epoch + 1}/{r.epochs}")
            end_lr = cosine_lr(step, total, r.lr, warm)
            for g in opt.param_groups:
                g["lr"] = end_lr
            if checkpoint is not None:
                _save_state(checkpoint, run, epoch + 1, model, opt, hist, train_loader)
            if on_epoch_end is not None:
                stats = {"epoch": epoch, "loss": hist.loss[-1], "acc": hist.acc[-1],
                         "lr": end_lr}
                if on_epoch_end(epoch, stats) is True:
                    break
    return hist


def _data_parallel(model, dev):
    """``model`` wrapped in DistributedDataParallel when several processes train, else itself."""
    if not distributed.active():
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)


@dataclass
class _Loop:
    """What stays fixed over one :func:`train` run: the model and ``net`` (the model or its
    DDP wrapper), the optimizer, the history it fills, the recipe, the schedule's length
    ``total`` and warm-up ``warm`` in steps, the loss and the hook."""

    model: nn.Module
    net: nn.Module
    opt: torch.optim.Optimizer
    hist: TrainHistory
    recipe: Recipe
    dev: torch.device
    total: int
    warm: int
    criterion: Callable | None
    param_hook: Callable | None
    progress: bool

    def epoch(self, loader, step, desc):
        """One pass over ``loader`` (at most up to step ``total``); appends the epoch's mean
        loss and accuracy to the history and returns the step count."""
        loss_sum, correct, seen = 0.0, 0, 0
        with progress_bar(self.progress, len(loader), desc) as bar:
            for x, y in loader:
                if step >= self.total:  # loader longer than its len()
                    break
                loss, out, y = self._step(x, y, step, desc)
                step += 1
                loss_sum += loss.item() * y.shape[0]
                correct += (out.argmax(1) == y).sum().item()
                seen += y.shape[0]
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}",
                                    acc=f"{100 * correct / seen:.1f}")
        loss, acc = distributed.mean_over_ranks([loss_sum / max(seen, 1),
                                                 100.0 * correct / max(seen, 1)])
        self.hist.loss.append(loss)
        self.hist.acc.append(acc)
        return step

    def _step(self, x, y, step, desc):
        """One optimizer step at the schedule's rate for ``step``: (loss, logits, labels)."""
        r, dev = self.recipe, self.dev
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        cur = cosine_lr(step, self.total, r.lr, self.warm)
        for g in self.opt.param_groups:
            g["lr"] = cur
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=r.bf16):
            out = _logits(self.net(x))
        loss = (F.cross_entropy(out.float(), y) if self.criterion is None
                else self.criterion(out.float(), x, y))
        if not torch.isfinite(loss):
            raise ValueError(f"loss became non-finite ({loss.item()}) at {desc}, step "
                             f"{step}; try a lower lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if r.max_grad_norm is not None:  # gradients are already averaged over processes
            self.hist.grad_norm.append(torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), r.max_grad_norm).item())
        self.opt.step()
        if self.param_hook is not None:
            with torch.no_grad():
                self.param_hook(self.model)
        self.hist.lr.append(cur)
        return loss, out, y


class Distillation:
    r"""Knowledge distillation from a teacher network, a ``criterion`` for :func:`train`.

    .. math::

        \mathcal{L} = (1-\alpha)\,\mathrm{CE}(s, y)
        + \alpha\, T^2\, \mathrm{KL}\big(\mathrm{softmax}(t/T)\,\|\,
          \mathrm{softmax}(s/T)\big)
        + \beta \sum_{\ell} \frac{\lVert F^s_\ell - F^t_\ell \rVert^2}
          {\lVert F^t_\ell \rVert^2}

    with student logits s, teacher logits t (Hinton et al. 2015; the T² keeps the soft
    term's gradient scale independent of T) and, optionally, the outputs F_ℓ of the
    modules named in ``features`` (e.g. the approximated layers), matched in relative
    squared error.

    Parameters
    ----------
    teacher : torch.nn.Module
        The uncompressed network, run in eval mode without gradients.
    student : torch.nn.Module
        The network being trained (needed only when ``features`` is given).
    alpha : float in [0, 1]
        Weight of the soft (teacher) term; 0 is plain cross-entropy.
    temperature : float > 0
        T, the softmax temperature of the soft term.
    features : sequence of str
        Module names present in both networks whose outputs are matched.
    feature_weight : float >= 0
        β.
    bf16 : bool
        Run the teacher under bf16 autocast (its logits are then cast to float32).
    """

    def __init__(self, teacher, student=None, *, alpha=0.5, temperature=4.0, features=(),
                 feature_weight=1.0, bf16=False):
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if feature_weight < 0:
            raise ValueError(f"feature_weight must be >= 0, got {feature_weight}")
        features = tuple(features)
        if features and student is None:
            raise ValueError("feature distillation needs the student network")
        self.teacher, self.alpha, self.temperature = teacher.eval(), alpha, temperature
        self.feature_weight, self.bf16 = feature_weight, bf16
        self._student_out, self._teacher_out = {}, {}
        self._hooks = [_capture(net, name, store) for name in features
                       for net, store in ((student, self._student_out),
                                          (teacher, self._teacher_out))]

    def __call__(self, logits, x, y):
        dev = device_and_dtype(self.teacher)[0]
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                             enabled=self.bf16):
            t = _logits(self.teacher(x.to(dev))).float().to(logits.device)
        T = self.temperature
        soft = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(t / T, 1),
                        log_target=True, reduction="batchmean") * T * T
        loss = (1 - self.alpha) * F.cross_entropy(logits, y) + self.alpha * soft
        for name, fs in self._student_out.items():
            ft = self._teacher_out[name].float().to(fs.device)
            loss = loss + self.feature_weight * (fs.float() - ft).pow(2).sum() / \
                ft.pow(2).sum().clamp_min(1e-12)
        return loss

    def close(self):
        """Remove the feature hooks."""
        for h in self._hooks:
            h.remove()
        self._hooks = []


def _capture(net, name, store):
    try:
        module = net.get_submodule(name)
    except AttributeError:
        raise ValueError(f"feature distillation: no module named {name!r} in "
                         f"{type(net).__name__}") from None

    def hook(_module, _inputs, output):
        store[name] = output
    return module.register_forward_hook(hook)


def _save_state(path, run, epochs_done, model, opt, hist, loader):
    """Rank 0 writes (the weights and optimizer are the same on every rank); the global RNG
    state of each rank goes in a list."""
    rng = distributed.gather_to_main(torch.get_rng_state())
    if not distributed.is_main():
        return
    gen = getattr(loader, "generator", None)
    state = {"format": "lrsa-train-state-1", "run": run, "epochs_done": epochs_done,
             "model": model.state_dict(), "optimizer": opt.state_dict(),
             "history": {"loss": hist.loss, "acc": hist.acc, "lr": hist.lr,
                         "grad_norm": hist.grad_norm},
             "rng": rng, "loader_rng": gen.get_state() if gen is not None else None}
    atomic_torch_save(state, path)


def _resume(path, run, model, opt, hist, loader):
    """Restore a :func:`_save_state` file; returns the number of finished epochs."""
    state = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(state, dict) or state.get("format") != "lrsa-train-state-1":
        raise ValueError(f"{path} is not an lrsa training checkpoint")
    if state["run"] != run:
        raise ValueError(f"{path} was written by another run ({state['run']}), not this one "
                         f"({run}); remove it or pass another checkpoint path")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    hist.loss, hist.acc, hist.lr, hist.grad_norm = (
        list(state["history"].get(k, [])) for k in ("loss", "acc", "lr", "grad_norm"))
    rng = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
    torch.set_rng_state(rng[distributed.rank() % len(rng)])
    gen = getattr(loader, "generator", None)
    if gen is not None and state["loader_rng"] is not None:
        gen.set_state(state["loader_rng"])
    return int(state["epochs_done"])


def evaluate(model: nn.Module, loader, topk=(1,), bf16: bool = False) -> dict:
    """Top-k accuracies (%) of ``model`` over ``loader``, in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
        Evaluated in ``eval()`` mode; its previous mode is restored.
    loader : iterable
        Yields ``(inputs, integer labels)``.
    topk : sequence of int
        Which k to report.
    bf16 : bool
        Forward under bf16 autocast.

    Returns
    -------
    dict
        ``{"top1": ..., "top5": ...}`` (one entry per k), in percent.
    """
    ks = sorted({int(k) for k in topk})
    if not ks or ks[0] < 1:
        raise ValueError(f"topk must hold positive ints, got {topk}")
    hits, n = dict.fromkeys(ks, 0), 0
    for out, y in _outputs(model, loader, bf16):
        if ks[-1] > out.shape[1]:
            raise ValueError(f"top-{ks[-1]} asked but the model has {out.shape[1]} outputs")
        match = out.topk(ks[-1], dim=1).indices == y[:, None]
        for k in ks:
            hits[k] += match[:, :k].any(1).sum().item()
        n += y.shape[0]
    if n == 0:
        raise ValueError("loader yielded no samples")
    return {f"top{k}": 100.0 * hits[k] / n for k in ks}


def predictions(model: nn.Module, loader, bf16: bool = False):
    """The class ``model`` predicts for each sample of ``loader``, and the labels, in the
    loader's order: two int64 numpy arrays of shape (samples,). What the intervals of
    :mod:`lrsa.evaluation` are computed from (``predicted == labels``)."""
    pairs = [(out.argmax(1).cpu(), y.cpu()) for out, y in _outputs(model, loader, bf16)]
    if not pairs:
        raise ValueError("loader yielded no samples")
    return tuple(torch.cat(t).numpy() for t in zip(*pairs))


def _outputs(model, loader, bf16):
    """(float logits, labels) of each batch of ``loader``, in eval mode, on the model's
    device."""
    dev = device_and_dtype(model)[0]
    with evaluating(model), torch.no_grad():
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                yield _logits(model(x)).float(), y
