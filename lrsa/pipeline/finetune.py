"""Fine-tuning a compressed network with its structure kept."""

from __future__ import annotations

from torch import nn

from ..layers import FACTORED_MODULES, keep_structure_hook
from ..train import Distillation, Recipe, train
from ..utils import given_or_built

#: :func:`finetune`'s default gradient-norm cap
MAX_GRAD_NORM = 10.0
#: what :func:`finetune` fills in where its recipe's fields are given as keywords
FINETUNE_DEFAULTS = {"lr": 1e-3, "max_grad_norm": MAX_GRAD_NORM}


def finetune(model, loader, recipe=None, *, teacher=None, alpha=0.5, temperature=4.0,
             feature_weight=0.0, dropout=False, progress=False, checkpoint=None,
             on_epoch_end=None, **recipe_fields):
    """Fine-tune a compressed model keeping its structure: zero columns stay zero (masks
    re-applied after every step), factors stay factors (they are separate modules).

    Trained by :func:`lrsa.train.train` with a :class:`lrsa.train.Recipe`, given whole or as
    keywords (``finetune(model, loader, epochs=2, lr=1e-3)``); from keywords, ``lr`` defaults
    to 1e-3 and ``max_grad_norm`` to ``MAX_GRAD_NORM`` (``FINETUNE_DEFAULTS``), the other
    fields to the Recipe's own defaults.

    With a ``teacher`` (the uncompressed network) the loss is a :class:`lrsa.train.Distillation`
    of its logits (weight ``alpha``, temperature ``temperature``) and, if ``feature_weight`` > 0,
    of its outputs at every approximated layer; without one, cross-entropy on the labels.

    ``lr`` is the peak of a cosine schedule and belongs to the network, not to the method:
    choose it on validation images before comparing methods after fine-tuning
    (``benchmarks/lr_screen.py``; one epoch on CIFAR-10 chose 3e-3 for VGG-16, though 3e-4,
    1e-3 and 3e-3 were within 0.06 points, and 1e-2 for NIN, where 3e-2 diverged:
    ``benchmarks/results/lr_screen_*.json``).

    ``dropout=False`` (default) switches the model's nn.Dropout off while training: the
    refit layers keep fewer inputs with larger weights, and dropout's noise on them can blow
    up the logits (measured on VGG-16 at 16 % of its weights: training-mode loss 27 against
    0.38 in eval mode). The Dropout modules are restored after.

    ``max_grad_norm`` (default ``MAX_GRAD_NORM``; ``None``: no cap) caps the gradients'
    total norm at every step. A compressed network can start near the edge of stability,
    where each step's overshoot feeds the next (BatchNorm folding alone is not the cause:
    the benchmarks' control is folded too and did not blow up); the cap stops that, and
    where the norms reach it (NIN at lr 3e-3) it shapes the run. Notebook 09, section 3,
    shows a run without and with it; the measured norms: docs, Benchmarks.

    ``progress``, ``checkpoint`` (resumable) and ``on_epoch_end`` are
    :func:`lrsa.train.train`'s.
    Under ``torchrun`` the processes fine-tune together (DistributedDataParallel, see
    :mod:`lrsa.distributed`): give a loader made with ``make_loader(..., shard=True)``; every
    process keeps the structure and runs its own copy of the teacher on its share of a batch.
    """
    if recipe is None:
        recipe_fields = {**FINETUNE_DEFAULTS, **recipe_fields}
    recipe = given_or_built(Recipe, recipe, recipe_fields)
    criterion = None
    if teacher is not None:
        approximated = [n for n, m in model.named_modules()
                        if isinstance(m, FACTORED_MODULES)]
        criterion = Distillation(teacher, model, alpha=alpha, temperature=temperature,
                                 features=approximated if feature_weight > 0 else (),
                                 feature_weight=feature_weight, bf16=recipe.bf16)
    saved = {m: m.p for m in model.modules() if isinstance(m, nn.Dropout)} if not dropout \
        else {}
    for m in saved:
        m.p = 0.0
    try:
        return train(model, loader, recipe, criterion=criterion,
                     param_hook=keep_structure_hook(model), on_epoch_end=on_epoch_end,
                     checkpoint=checkpoint, progress=progress)
    finally:
        for m, p in saved.items():
            m.p = p
        if criterion is not None:
            criterion.close()
