import importlib.util

import pytest
import torch

#: the reference-solver checks need cvxpy (the "verify" extra); every other check runs without
needs_cvxpy = pytest.mark.skipif(importlib.util.find_spec("cvxpy") is None,
                                 reason="cvxpy is not installed (pip install lrsa[verify])")


@pytest.fixture(scope="module")
def one_thread():
    """Small models on a shared 2-core machine: one intra-op thread avoids OpenMP contention."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def trained():
    """(small CNN trained 4 epochs on the bundled digits, 3 calibration batches, test loader):
    the network the pipeline tests compress."""
    from lrsa.data import load_digits_images, make_loader
    from lrsa.models import small_cnn
    from lrsa.train import train

    torch.manual_seed(0)
    d = load_digits_images()
    model = small_cnn()
    loader = make_loader(d.x_train, d.y_train, 64, train=True, mean=None, std=None, pad=1)
    train(model, loader, epochs=4, lr=0.05)
    test = make_loader(d.x_test, d.y_test, 256, mean=None, std=None)
    calib = [d.x_train[i:i + 128] for i in range(0, 384, 128)]
    return model.eval(), calib, test


@pytest.fixture
def latency_script(monkeypatch):
    """``script(per_layer, whole)``: lrsa.pipeline.speed's compare_latency answered by
    ``per_layer`` for a layer against its factored form and by ``whole`` for the whole model
    against the original (each returns compare_latency's dict)."""
    import lrsa.pipeline.speed
    from lrsa.layers import SparseLowRankConv2d, SparseLowRankLinear

    def script(per_layer, whole):
        def compare(original, compressed, shape, repeats):
            one = isinstance(compressed, (SparseLowRankConv2d, SparseLowRankLinear))
            return (per_layer if one else whole)(original, compressed, shape, repeats)
        monkeypatch.setattr(lrsa.pipeline.speed, "compare_latency", compare)
    return script
