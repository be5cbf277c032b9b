"""Tests of lrsa.train on the embedded digits (seconds on 2 cores)."""

import math

import pytest
import torch

from lrsa.data import load_digits_images, make_loader
from lrsa.models import small_cnn
from lrsa.train import Distillation, Recipe, cosine_lr, evaluate, predictions, train


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
    with pytest.raises(ValueError, match="not both"):
        train(m, tr, Recipe(epochs=1, lr=0.1), lr=0.2)
    with pytest.raises(TypeError, match="momentun"):
        train(m, tr, epochs=1, lr=0.1, momentun=0.5)  # a misspelt field is not ignored


def test_a_recipe_trains_as_its_fields_given_as_keywords(digits):
    tr, _ = _loaders(digits, n_train=64, batch_size=32)
    runs = []
    for call in (lambda m: train(m, tr, Recipe(epochs=1, lr=0.05, momentum=0.5, seed=2)),
                 lambda m: train(m, tr, epochs=1, lr=0.05, momentum=0.5, seed=2)):
        torch.manual_seed(0)
        tr.generator.manual_seed(0)
        m = small_cnn()
        runs.append((call(m).loss, m.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1].values(), runs[1][1].values(),
                                                  strict=True))


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


def _pair_of_nets(seed):
    torch.manual_seed(seed)
    return (torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4)),
            torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4)))


def test_distillation_loss_matches_its_formula_written_out():
    teacher, student = _pair_of_nets(0)
    x, y = torch.randn(7, 6), torch.randint(0, 4, (7,))
    loss = Distillation(teacher, student, alpha=0.3, temperature=2.0, features=["0"],
                        feature_weight=0.5)
    s = student(x)
    got = loss(s, x, y)
    with torch.no_grad():
        t = teacher(x)
    # KL(p_t || p_s) summed over classes, mean over the batch, times T^2, by hand
    p_t, p_s = torch.softmax(t / 2, 1), torch.softmax(s / 2, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * 4
    ce = -torch.log_softmax(s, 1)[torch.arange(7), y].mean()
    h_s, h_t = student[0](x), teacher[0](x)
    feat = ((h_s - h_t) ** 2).sum() / (h_t ** 2).sum()
    assert got.item() == pytest.approx((0.7 * ce + 0.3 * kl + 0.5 * feat).item(), rel=1e-5)
    loss.close()
    assert not student[0]._forward_hooks and not teacher[0]._forward_hooks


def test_distillation_without_soft_term_is_cross_entropy_and_zero_at_the_teacher():
    teacher, student = _pair_of_nets(1)
    x, y = torch.randn(5, 6), torch.randint(0, 4, (5,))
    s = student(x)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert Distillation(teacher, alpha=0.0)(s, x, y).item() == pytest.approx(ce.item())
    same = teacher(x).detach().requires_grad_()
    zero = Distillation(teacher, alpha=1.0)(same, x, y)
    zero.backward()
    assert zero.item() == pytest.approx(0.0, abs=1e-6)
    assert same.grad.abs().max().item() < 1e-6


def test_distillation_training_moves_the_student_to_the_teacher():
    teacher, student = _pair_of_nets(2)
    x = torch.randn(256, 6)
    y = torch.randint(0, 4, (256,))
    loader = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]

    def gap():
        with torch.no_grad():
            return torch.nn.functional.kl_div(torch.log_softmax(student(x), 1),
                                              torch.log_softmax(teacher(x), 1),
                                              log_target=True, reduction="batchmean").item()
    before = gap()
    train(student, loader, epochs=5, lr=0.1, criterion=Distillation(teacher, alpha=1.0))
    assert gap() < 0.2 * before


def test_distillation_bad_arguments():
    teacher, student = _pair_of_nets(3)
    with pytest.raises(ValueError, match="alpha"):
        Distillation(teacher, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        Distillation(teacher, temperature=0)
    with pytest.raises(ValueError, match="needs the student"):
        Distillation(teacher, features=["0"])
    with pytest.raises(ValueError, match="no module named 'conv9'"):
        Distillation(teacher, student, features=["conv9"])


def test_a_distributed_sampler_is_reshuffled_every_epoch():
    """A DataLoader with a DistributedSampler needs set_epoch(e) before epoch e, or every
    epoch repeats the first one's order."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    sampler = DistributedSampler(data, num_replicas=2, rank=1, seed=0)
    orders = []
    set_epoch = sampler.set_epoch
    sampler.set_epoch = lambda e: (set_epoch(e), orders.append(list(iter(sampler))))
    loader = DataLoader(data, batch_size=4, sampler=sampler)
    train(torch.nn.Linear(4, 2), loader, epochs=3, lr=0.1)
    assert len(orders) == 3 and orders[0] != orders[1] != orders[2]
    assert all(len(set(o)) == 8 for o in orders)  # this process's half of the 16


def test_max_grad_norm_scales_the_step_to_the_cap_as_written_out():
    # one batch, one step, plain SGD: the update is -lr * g * min(1, c / ||g||)
    torch.manual_seed(0)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    for cap in (0.05, 1e6):
        net, ref = _pair_of_nets(3)
        ref.load_state_dict(net.state_dict())
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        g = torch.cat([p.grad.flatten() for p in ref.parameters()])
        scale = min(1.0, cap / g.norm().item())
        h = train(net, [(x, y)], epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0,
                  max_grad_norm=cap)
        assert h.grad_norm == pytest.approx([g.norm().item()], rel=1e-5)
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q - 0.1 * scale * q.grad, rtol=0, atol=1e-6)
    assert train(_pair_of_nets(3)[0], [(x, y)], epochs=1, lr=0.1).grad_norm == []


def test_max_grad_norm_bad_values_and_resume_under_another_cap(digits, tmp_path):
    tr, _ = _loaders(digits, n_train=64)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="max_grad_norm"):
            train(small_cnn(), tr, epochs=1, lr=0.1, max_grad_norm=bad)
    ck = tmp_path / "state.pt"
    train(small_cnn(), tr, epochs=2, lr=0.05, max_grad_norm=1.0, checkpoint=ck,
          on_epoch_end=lambda e, st: True)
    with pytest.raises(ValueError, match="another run"):
        train(small_cnn(), tr, epochs=2, lr=0.05, max_grad_norm=2.0, checkpoint=ck)
    with pytest.raises(ValueError, match="another run"):  # every field of the recipe counts
        train(small_cnn(), tr, epochs=2, lr=0.05, max_grad_norm=1.0, momentum=0.5,
              checkpoint=ck)
    h = train(small_cnn(), tr, epochs=2, lr=0.05, max_grad_norm=1.0, checkpoint=ck)
    assert len(h.grad_norm) == 2 * len(tr)  # the first epoch's norms came back from the file


def test_predictions_agree_with_evaluate_and_keep_the_loader_order():
    torch.manual_seed(0)
    d = load_digits_images()
    model = small_cnn()
    loader = make_loader(d.x_test, d.y_test, 100, mean=None, std=None)
    pred, labels = predictions(model, loader)
    assert pred.shape == labels.shape == (len(d.y_test),)
    assert labels.tolist() == d.y_test.tolist()
    assert 100 * (pred == labels).mean() == pytest.approx(evaluate(model, loader)["top1"])
    with torch.no_grad():
        assert pred[:100].tolist() == model.eval()(d.x_test[:100].float()).argmax(1).tolist()
