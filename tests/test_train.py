"""Tests of lrsa.train on the embedded digits (seconds on 2 cores)."""

import math

import pytest
import torch

from lrsa.data import load_digits_images, make_loader
from lrsa.models import small_cnn
from lrsa.train import cosine_lr, evaluate, train


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_digits_images()


def _loaders(s, n_train=800, batch_size=32):
    tr = make_loader(s.x_train[:n_train], s.y_train[:n_train], batch_size, train=True,
                     mean=None, std=None, seed=0, pad=1, flip=False)
    te = make_loader(s.x_test, s.y_test, 256, train=False, mean=None, std=None)
    return tr, te


def test_cosine_lr_schedule():
    assert cosine_lr(0, 100, 0.1, warmup_steps=10) == pytest.approx(0.01)
    assert cosine_lr(9, 100, 0.1, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_lr(10, 100, 0.1, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_lr(55, 100, 0.1, warmup_steps=10) == pytest.approx(0.05)
    assert cosine_lr(100, 100, 0.1, warmup_steps=10) == pytest.approx(0.0, abs=1e-12)
    lrs = [cosine_lr(s, 100, 0.1, 10) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_small_cnn_learns_digits(digits):
    tr, te = _loaders(digits)
    torch.manual_seed(0)
    model = small_cnn()
    calls, epochs_seen = [], []
    col = (slice(None), 0, 1, 1)  # keep one column (input channel 0, centre tap) at zero

    def hook(m):
        calls.append(1)
        m.features[0].weight[col] = 0

    hist = train(model, tr, epochs=2, lr=0.1, param_hook=hook, seed=0,
                 on_epoch_end=lambda e, st: epochs_seen.append((e, st["lr"])))
    assert len(calls) == 2 * len(tr) == len(hist.lr)
    assert hist.loss[1] < hist.loss[0]
    assert hist.lr[0] == pytest.approx(0.1) and hist.lr[-1] < 1e-3
    assert hist.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert [e for e, _ in epochs_seen] == [0, 1] and epochs_seen[-1][1] == pytest.approx(0.0)
    assert torch.count_nonzero(model.features[0].weight[col]) == 0
    acc = evaluate(model, te, topk=(1, 5))
    assert set(acc) == {"top1", "top5"}
    assert acc["top1"] > 60 and acc["top5"] >= acc["top1"]
    assert model.training  # evaluate restores the mode


def test_warmup_bf16_early_stop_and_determinism(digits):
    tr, _ = _loaders(digits, n_train=128, batch_size=32)

    def run():
        torch.manual_seed(1)
        m = small_cnn()
        h = train(m, tr, epochs=2, lr=0.05, warmup_epochs=1, bf16=True, seed=3,
                  on_epoch_end=lambda e, st: True)  # stop after the first epoch
        return m, h

    m1, h1 = run()
    assert len(h1.loss) == 1 and math.isfinite(h1.loss[0])
    assert h1.lr == pytest.approx([0.05 * (s + 1) / 4 for s in range(4)])
    tr.generator.manual_seed(0)
    m2, h2 = run()
    assert h1.loss == h2.loss
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(),
                                                  m2.state_dict().values(), strict=True))


def test_bad_arguments(digits):
    tr, te = _loaders(digits, n_train=64)
    m = small_cnn()
    with pytest.raises(ValueError, match="epochs"):
        train(m, tr, epochs=0, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        train(m, tr, epochs=1, lr=0.0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        train(m, tr, epochs=1, lr=0.1, warmup_epochs=2)
    with pytest.raises(ValueError, match="len"):
        train(m, iter(tr), epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="non-finite"):
        train(m, tr, epochs=1, lr=1e30)
    with pytest.raises(ValueError, match="top-11"):
        evaluate(small_cnn(), te, topk=(11,))


def test_checkpoint_resumes_exactly_as_an_uninterrupted_run(digits, tmp_path):
    def run(checkpoint=None, stop_after=None, init_seed=0):
        tr, _ = _loaders(digits, n_train=192, batch_size=32)
        torch.manual_seed(init_seed)
        m = small_cnn()  # has dropout: the global RNG must be restored too
        stop = None if stop_after is None else (lambda e, st: e + 1 == stop_after)
        h = train(m, tr, epochs=3, lr=0.05, warmup_epochs=1, seed=1, checkpoint=checkpoint,
                  on_epoch_end=stop)
        return m, h

    ref, h_ref = run()
    ck = tmp_path / "state.pt"
    _, h1 = run(ck, stop_after=1)  # "crash" after the first epoch
    assert len(h1.loss) == 1 and ck.is_file()
    # a fresh process would start from other weights: the checkpoint must replace them
    resumed, h2 = run(ck, init_seed=7)
    assert h2.loss == h_ref.loss and h2.lr == h_ref.lr
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(),
                                                  resumed.state_dict().values(), strict=True))
    # another run's checkpoint is refused, by name of what differs
    tr, _ = _loaders(digits, n_train=192, batch_size=32)
    with pytest.raises(ValueError, match="another run"):
        train(small_cnn(), tr, epochs=4, lr=0.05, checkpoint=ck)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an lrsa training checkpoint"):
        train(small_cnn(), tr, epochs=3, lr=0.05, checkpoint=tmp_path / "other.pt")


def test_cli_train_writes_a_loadable_checkpoint_and_cleans_its_state(tmp_path, capsys):
    from lrsa.cli import main
    from lrsa.models import load_checkpoint

    out = tmp_path / "cnn.pt"
    assert main(["train", "--model", "small_cnn", "--epochs", "2", "--lr", "0.05",
                 "--batch-size", "64", "--out", str(out)]) == 0
    assert "epoch 2/2" in capsys.readouterr().out
    ck = torch.load(out, weights_only=True)
    assert 0.5 < ck["test_acc"] <= 1 and len(ck["train_loss"]) == 2
    assert "--epochs 2" in ck["recipe"] and "--batch-size 64" in ck["recipe"]
    assert not (tmp_path / "cnn.pt.state").exists()  # finished: nothing left to resume
    load_checkpoint(small_cnn(), out)
