"""lrsa.pipeline.finetune: dropout off while fine-tuning, train's options passed on."""

import pytest
import torch
from torch import nn

import lrsa.pipeline


def test_finetune_switches_dropout_off_and_restores_it():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 10))
    seen = []
    model[3].register_forward_pre_hook(lambda m, args: seen.append(m.p))
    loader = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))]
    lrsa.pipeline.finetune(model, loader, epochs=1, lr=1e-3)
    assert seen == [0.0] and model[3].p == 0.5
    lrsa.pipeline.finetune(model, loader, epochs=1, lr=1e-3, dropout=True)
    assert seen[-1] == 0.5


def test_finetune_passes_warmup_and_epoch_callback_to_train():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    loader = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))] * 4
    ends = []
    hist = lrsa.pipeline.finetune(model, loader, epochs=2, lr=0.1, warmup_epochs=1,
                                  on_epoch_end=lambda e, stats: ends.append(e))
    assert hist.lr[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])  # linear, then cosine
    assert ends == [0, 1]


def test_finetune_takes_a_recipe_or_its_fields_with_its_own_defaults():
    from lrsa.train import Recipe
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    loader = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))]
    hist = lrsa.pipeline.finetune(model, loader, epochs=1)
    assert hist.lr == pytest.approx([1e-3]) and len(hist.grad_norm) == 1  # lr 1e-3, capped
    hist = lrsa.pipeline.finetune(model, loader, Recipe(epochs=1, lr=0.5))
    assert hist.lr == pytest.approx([0.5]) and hist.grad_norm == []  # the Recipe's own
    with pytest.raises(ValueError, match="not both"):
        lrsa.pipeline.finetune(model, loader, Recipe(epochs=1, lr=0.5), epochs=2)
