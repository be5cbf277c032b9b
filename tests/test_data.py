"""Tests of lrsa.data: restricted CIFAR-10 unpickler, checked download, loader, digits."""

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lrsa import data
from lrsa.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    download_cifar10,
    load_cifar10,
    load_digits_images,
    make_loader,
    normalize,
    verify_md5,
)

REAL_CIFAR = Path(__file__).resolve().parents[2] / "data" / "cifar-10-batches-py"
N_PER_BATCH = 4


def _batch(seed, n=N_PER_BATCH, label="training batch"):
    rng = np.random.default_rng(seed)
    return {b"batch_label": label.encode(), b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)]}


def _fake_cifar(parent: Path) -> tuple[Path, dict]:
    """Official layout: 5 data batches, test_batch and batches.meta, pickled like the release."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _batch(i) for i in range(1, 6)}
    batches["test_batch"] = _batch(99, label="testing batch 1 of 1")
    for name, obj in batches.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=4))
    meta = {b"num_cases_per_batch": N_PER_BATCH, b"num_vis": 3072,
            b"label_names": [c.encode() for c in data.CIFAR10_CLASSES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))
    return folder, batches


def test_fake_cifar_round_trip(tmp_path, monkeypatch):
    folder, batches = _fake_cifar(tmp_path)
    x, y = load_cifar10(folder, train=True)
    assert x.dtype == torch.uint8 and x.shape == (5 * N_PER_BATCH, 3, 32, 32)
    assert y.dtype == torch.int64 and y.shape == (5 * N_PER_BATCH,)
    want = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert np.array_equal(x.numpy().reshape(-1, 3072), want)
    assert y.tolist() == [v for i in range(1, 6) for v in batches[f"data_batch_{i}"][b"labels"]]
    xt, yt = load_cifar10(tmp_path, train=False)  # the parent folder works too
    assert np.array_equal(xt.numpy().reshape(-1, 3072), batches["test_batch"][b"data"])
    assert yt.tolist() == batches["test_batch"][b"labels"]
    monkeypatch.setenv("LRSA_DATA", str(tmp_path))
    assert torch.equal(load_cifar10(None, train=False)[0], xt)


def test_forbidden_global_is_refused(tmp_path):
    folder, _ = _fake_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(ValueError, match=r"data_batch_3.*forbidden global 'os.system'"):
        load_cifar10(folder, train=True)

    class Evil:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(ValueError, match=r"test_batch.*forbidden global 'builtins.eval'"):
        load_cifar10(folder, train=False)


def test_truncated_and_malformed_batches(tmp_path):
    folder, _ = _fake_cifar(tmp_path)
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10(folder, train=False)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8),
                                                      b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"test_batch.*uint8 \(N, 3072\)"):
        load_cifar10(folder, train=False)
    (folder / "data_batch_2").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_2"):
        load_cifar10(folder, train=True)
    with pytest.raises(FileNotFoundError, match="lrsa download-cifar10"):
        load_cifar10(tmp_path / "nowhere")


@pytest.mark.skipif(not (REAL_CIFAR / "test_batch").is_file(), reason="no ../data CIFAR-10")
def test_real_cifar_test_batch():
    x, y = load_cifar10(REAL_CIFAR.parent, train=False)
    assert x.shape == (10000, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.bincount(y, minlength=10).tolist() == [1000] * 10


def _tar_gz(path: Path, members: dict) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_download_checksum_mismatch_extracts_nothing(tmp_path):
    src = _tar_gz(tmp_path / "fake.tar.gz", {"cifar-10-batches-py/test_batch": b"x"})
    dst = tmp_path / "root"
    with pytest.raises(ValueError, match="md5 checksum mismatch"):
        download_cifar10(dst, url=src.as_uri())
    assert not (dst / "cifar-10-batches-py").exists()
    assert not list(dst.glob("*.tar.gz*"))
    with pytest.raises(ValueError, match="fake.tar.gz"):
        verify_md5(src, data.CIFAR10_MD5)


def test_download_good_checksum_then_load(tmp_path):
    folder, _ = _fake_cifar(tmp_path / "src")
    members = {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in folder.iterdir()}
    src = _tar_gz(tmp_path / "mirror.tar.gz", members)
    from lrsa._download import file_digest
    out = download_cifar10(tmp_path / "root", url=src.as_uri(), md5=file_digest(src, "md5"))
    assert out == tmp_path / "root" / "cifar-10-batches-py"
    assert load_cifar10(out, train=True)[0].shape[0] == 5 * N_PER_BATCH
    # an unsafe member is refused even with a matching checksum
    evil = _tar_gz(tmp_path / "evil.tar.gz", {"../escape": b"x"})
    with pytest.raises(ValueError, match="unsafe"):
        download_cifar10(tmp_path / "r2", url=evil.as_uri(), md5=file_digest(evil, "md5"))
    assert not (tmp_path / "escape").exists()


def test_download_offline_is_a_clear_error(tmp_path):
    with pytest.raises(ConnectionError, match="offline"):
        download_cifar10(tmp_path, url=(tmp_path / "missing.tar.gz").as_uri())


def test_normalize():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(x)
    want = (1 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(CIFAR10_STD)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, :, 0, 0], want)
    assert torch.equal(normalize(x, None, None), torch.ones_like(out))
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(x, (0.5,), (0.5,))


def test_loader_eval_order_and_train_augmentation():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (10, 3, 6, 6), dtype=torch.uint8, generator=g)
    labels = torch.arange(10)
    ev = make_loader(imgs, labels, 4, train=False, mean=None, std=None)
    assert len(ev) == 3
    xs, ys = zip(*ev, strict=True)
    assert torch.equal(torch.cat(ys), labels)
    assert torch.allclose(torch.cat(xs), imgs.float() / 255)

    pad = 2
    tr = make_loader(imgs, labels, 4, train=True, mean=None, std=None, seed=3, pad=pad)
    padded = torch.nn.functional.pad(imgs.float() / 255, (pad,) * 4)
    seen = []
    for x, y in tr:
        assert x.shape[1:] == (3, 6, 6)
        for xi, yi in zip(x, y, strict=True):  # each output is a window of the padded image
            windows = [padded[yi, :, i:i + 6, j:j + 6] for i in range(2 * pad + 1)
                       for j in range(2 * pad + 1)]
            assert any(torch.equal(xi, w) or torch.equal(xi, w.flip(-1)) for w in windows)
            seen.append(int(yi))
    assert sorted(seen) == list(range(10))
    first = [b[0] for b in make_loader(imgs, labels, 4, True, None, None, seed=3, pad=pad)]
    second = [b[0] for b in make_loader(imgs, labels, 4, True, None, None, seed=3, pad=pad)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with pytest.raises(ValueError, match="labels must be"):
        make_loader(imgs, labels[:3], 4)


def test_digits_split():
    s = load_digits_images()
    assert s.x_train.shape[1:] == (1, 8, 8) and s.x_test.shape[1:] == (1, 8, 8)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert len(s.x_train) + len(s.x_test) == 1797 and len(s.x_test) == 450
    assert 0 <= s.x_train.min() and s.x_train.max() <= 1
    # a partition of the dataset: the union is the whole set as a multiset
    from sklearn.datasets import load_digits
    full = load_digits()
    whole = sorted((r.tobytes(), int(t)) for r, t in
                   zip((full.images / 16.0).astype(np.float32), full.target, strict=True))
    parts = sorted((r.numpy()[0].tobytes(), int(t)) for r, t in
                   zip(torch.cat([s.x_train, s.x_test]), torch.cat([s.y_train, s.y_test]),
                       strict=True))
    assert whole == parts
    assert torch.equal(load_digits_images().x_test, s.x_test)  # fixed seed
    assert load_digits_images(size=16).x_train.shape[1:] == (1, 16, 16)


def test_validation_split_is_a_fixed_partition_of_the_training_images():
    images = torch.arange(100).view(100, 1, 1, 1).expand(100, 3, 2, 2)
    labels = torch.arange(100) % 10
    (xtr, ytr), (xval, yval) = data.validation_split(images, labels, 10, seed=0)
    assert len(xval) == 10 and len(xtr) == 90
    ids_train, ids_val = set(xtr[:, 0, 0, 0].tolist()), set(xval[:, 0, 0, 0].tolist())
    assert not ids_train & ids_val and ids_train | ids_val == set(range(100))
    assert yval.tolist() == [i % 10 for i in sorted(ids_val)]
    again = data.validation_split(images, labels, 10, seed=0)[1][0]
    assert torch.equal(again, xval)  # the same images from the seed alone
    assert not torch.equal(data.validation_split(images, labels, 10, seed=1)[1][0], xval)
    (all_x, _), (none_x, _) = data.validation_split(images, labels, 0)
    assert len(all_x) == 100 and len(none_x) == 0
    with pytest.raises(ValueError, match="val_images"):
        data.validation_split(images, labels, 100)
