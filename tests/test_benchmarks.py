"""benchmarks/_headline.py through benchmarks/nin_cifar10.py, end to end on a tiny fake
CIFAR-10 and a random NIN: what its JSON says must follow from the run (sizes, per-epoch
curves, the drop), a rerun resumes instead of recomputing, other settings are refused."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lrsa.data import CIFAR10_CLASSES, make_loader
from lrsa.models import get_model
from lrsa.timing import KEEP_MEMORY

ROOT = Path(__file__).resolve().parents[1]


def _fake_cifar(parent, per_batch=40):
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))
    return parent


def _random_nin(folder):
    """A checkpoint of a random NIN (seeded) in ``folder``; its path."""
    torch.manual_seed(0)
    ckpt = folder / "nin_bn.pt"
    torch.save({"arch": "nin_bn", "state_dict": get_model("nin_bn").state_dict(),
                "recipe": "random weights"}, ckpt)
    return ckpt


@pytest.fixture(scope="module")
def nin_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    ckpt = _random_nin(tmp)
    env = {**{k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"},  # the default
           "LRSA_DATA": str(_fake_cifar(tmp / "data")), "TQDM_DISABLE": "1"}

    def bench(*args, out="nin", **more_env):
        return subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "nin_cifar10.py"), "--checkpoint",
             str(ckpt), "--calib-images", "24", "--train-images", "48",
             "--latency-repeats", "2", "--work", str(tmp / f"{out}_work"),
             "--out", str(tmp / out), *args], env={**env, **more_env}, capture_output=True,
            text=True, timeout=900)

    first = bench("--epochs", "2", "--baselines", "svd")
    assert first.returncode == 0, first.stderr[-3000:]
    return tmp, bench, json.loads((tmp / "nin.json").read_text())


@pytest.mark.slow
def test_nin_benchmark_json_follows_from_its_run(nin_run):
    _, _, data = nin_run
    kinds = {r["name"]: r["kind"] for r in data["layers"]}
    # the default budget approximates every layer, the first conv and the 1x1 ones too
    assert kinds["features.conv1"] == kinds["features.cccp1"] == "factored"
    assert data["budget"]["all_layers"] is True and data["budget"]["macs"] == 0.4
    assert data["macs_ratio"] >= 1 / 0.4 * 0.999
    assert data["params_ratio"] == pytest.approx(data["params_original"]
                                                 / data["params_compressed"])
    for b in ("b1", "b128"):
        lat = data["latency"][b]
        assert data[f"speedup_{b}"] == lat["speedup"]
        assert data[f"speedup_{b}_min"] == pytest.approx(lat["original_min_s"]
                                                         / lat["compressed_min_s"])
        assert data["realization"][b]["layout"] in ("channels_last", "contiguous")
    for key in ("finetuned", "baseline_finetuned", "svd_finetuned"):
        curve = data[f"curve_{key}"]
        assert [e["epoch"] for e in curve] == [1, 2]
        assert curve[-1]["top1"] == data[f"top1_{key}"]
    assert "curve_rrr_finetuned" not in data and "top1_rrr" not in data
    reference = max(data["top1_baseline"], data["top1_baseline_finetuned"])
    assert data["top1_drop"] == pytest.approx(reference - data["top1_finetuned"])
    assert data["top1_margin_over_best_baseline"] == pytest.approx(
        data["top1_compressed"] - data["top1_svd"])


@pytest.mark.slow
def test_nin_benchmark_resumes_and_refuses_other_settings(nin_run):
    tmp, bench, data = nin_run
    state_path = tmp / "nin_work" / "state.json"
    state = json.loads(state_path.read_text())
    # as if it had stopped before the SVD model's fine-tuning: only that is redone, the same
    for key in ("top1_svd_finetuned", "finetune_seconds_svd_finetuned",
                "curve_svd_finetuned"):
        del state[key]
    state_path.write_text(json.dumps(state))
    written = {f: (tmp / "nin_work" / f).stat().st_mtime_ns
               for f in ("compressed.pt", "finetuned.pt", "svd_finetuned.pt")}
    again = bench("--epochs", "2", "--baselines", "svd")
    assert again.returncode == 0, again.stderr[-3000:]
    redone = json.loads((tmp / "nin.json").read_text())
    now = {f: (tmp / "nin_work" / f).stat().st_mtime_ns for f in written}
    assert [f for f in written if now[f] != written[f]] == ["svd_finetuned.pt"]
    # the same seeds; bf16 training on a CPU is not bit-exact across runs, so the losses
    # agree closely rather than exactly
    old, new = data["curve_svd_finetuned"], redone["curve_svd_finetuned"]
    assert [e["epoch"] for e in new] == [e["epoch"] for e in old] == [1, 2]
    assert [e["train_loss"] for e in new] == pytest.approx([e["train_loss"] for e in old],
                                                           rel=0.02)
    other = bench("--epochs", "2", "--baselines", "svd", "--lr", "0.003")
    assert other.returncode != 0 and "other settings" in other.stderr
    assert "'lr': (0.01, 0.003)" in other.stderr  # NIN's default, then the one asked for
    # timings under another allocator do not mix with these
    kept = bench("--epochs", "2", "--baselines", "svd", GLIBC_TUNABLES=KEEP_MEMORY)
    assert kept.returncode != 0 and "'allocator': ('glibc default', " in kept.stderr


@pytest.mark.slow
def test_nin_benchmark_without_baselines_fine_tunes_lrsa_and_the_control(nin_run):
    tmp, bench, _ = nin_run
    run = bench("--epochs", "1", "--baselines", "--table-ii-scale", "1", out="alone")
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp / "alone.json").read_text())
    assert data["top1_margin_over_best_baseline"] is None
    assert {k for k in data if k.startswith("top1_") and k.endswith("finetuned")} == {
        "top1_finetuned", "top1_baseline_finetuned"}
    # Table II: the three spatial convolutions only, the cccp layers kept
    factored = sorted(r["name"] for r in data["layers"] if r["kind"] == "factored")
    assert factored == ["features.conv1", "features.conv2", "features.conv3"]


def test_every_model_is_fine_tuned_on_the_same_order(monkeypatch, tmp_path):
    """finetune_runs gives each model a loader of its own: lrsa's model, the control and the
    baselines see the same images in the same order (a shared loader would reshuffle)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import _common

    seen = {}

    def record(state, save, key, start, ft_path, train, test, **recipe):
        seen[key] = [y.tolist() for _ in range(2) for _, y in train]  # two epochs' labels

    monkeypatch.setattr(_common, "finetune_phase", record)
    monkeypatch.setattr(_common, "save_compressed", lambda *args, **kw: None)
    _common.finetune_runs({}, lambda: None, tmp_path, torch.nn.Linear(1, 1),
                          lambda: make_loader(torch.zeros(20, 3, 4, 4), torch.arange(20), 5,
                                              train=True, mean=None, std=None, pad=0, seed=0),
                          None, arch="nin_bn", epochs=2, lr=1e-3, distill="none",
                          baselines=["svd", "rrr"])
    orders = list(seen.values())
    assert list(seen) == ["finetuned", "baseline_finetuned", "svd_finetuned", "rrr_finetuned"]
    assert all(o == orders[0] for o in orders)
    assert orders[0][:4] != orders[0][4:]  # and the order does change from epoch to epoch


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory):
    """benchmarks/ablation.py on the fake CIFAR-10 and a random NIN, two seeds."""
    tmp = tmp_path_factory.mktemp("ablation")
    ckpt = _random_nin(tmp)
    env = {**os.environ, "LRSA_DATA": str(_fake_cifar(tmp / "data")), "TQDM_DISABLE": "1"}

    def bench(*args):
        return subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "ablation.py"), "--checkpoint",
             str(ckpt), "--calib-images", "24", "--seeds", "0", "1", "--work",
             str(tmp / "work"), "--out", str(tmp / "ablation"), *args], env=env,
            capture_output=True, text=True, timeout=900)

    first = bench()
    assert first.returncode == 0, first.stderr[-3000:]
    return tmp, bench, json.loads((tmp / "ablation.json").read_text())


@pytest.mark.slow
def test_ablation_json_follows_from_its_saved_predictions(ablation_run):
    import hashlib

    from lrsa.data import load_cifar10
    tmp, _, data = ablation_run
    labels = load_cifar10(tmp / "data", train=False)[1].numpy()
    saved = np.load(tmp / "ablation_correct.npz")
    val, report = saved["validation"], saved["report"]
    assert sorted(np.concatenate([val, report]).tolist()) == list(range(len(labels)))
    assert data["seeds"] == {"before": [0, 1], "after": [0, 1]}
    assert data["split"]["report"] == len(report)
    for key in data["params"]:
        for stage in ("before", "after"):
            correct = np.stack([np.load(tmp / "work" / f"seed{s}" / f"{key}_{stage}.npy")
                                == labels for s in (0, 1)])
            packed = np.unpackbits(saved[f"{key}__{stage}"], axis=1)[:, :len(labels)]
            assert np.array_equal(packed, correct)
            iv = data["report_top1"][key][stage]
            assert iv["mean"] == pytest.approx(100 * correct[:, report].mean())
            assert iv["low"] <= iv["mean"] <= iv["high"]
            assert data["selection"]["validation_top1"][key][stage] == pytest.approx(
                100 * correct[:, val].mean())
            pred = np.load(tmp / "work" / "seed0" / f"{key}_{stage}.npy")
            assert (data["per_seed"]["0"][key][stage]["predictions_sha256"]
                    == hashlib.sha256(pred.tobytes()).hexdigest())
    sel = data["selection"]
    assert sel["winner"] == max(sel["candidates"], key=lambda k: sel["validation_top1"][k]["after"])
    drop = data["comparisons"]["control - b_alone, before"]
    assert drop["mean"] == pytest.approx(data["report_top1"]["control"]["before"]["mean"]
                                         - data["report_top1"]["b_alone"]["before"]["mean"])
    # the baselines take exactly B alone's per-layer sizes; the control is the whole network
    assert data["params"]["svd"] == data["params"]["rrr"] == data["params"]["b_alone"]
    assert data["params"]["control"] > data["params"]["b_alone"]
    assert data["per_seed"]["1"]["control"]["curve"][0]["epoch"] == 1


@pytest.mark.slow
def test_ablation_resumes_and_refuses_other_settings(ablation_run):
    tmp, bench, data = ablation_run
    again = bench()
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp / "ablation.json").read_text())["report_top1"] == data["report_top1"]
    other = bench("--lr", "0.5")
    assert other.returncode != 0 and "other settings" in other.stderr


@pytest.mark.slow
def test_ablation_fine_tunes_again_from_another_runs_compressed_models(ablation_run):
    """--compressed-from: the same compressed models (identical predictions before
    fine-tuning), a new lr after; the source is recorded; other compression settings refused."""
    tmp, bench, data = ablation_run
    again = bench("--lr", "0.002", "--compressed-from", str(tmp / "work"), "--work",
                  str(tmp / "work_lr"), "--out", str(tmp / "ablation_lr"))
    assert again.returncode == 0, again.stderr[-3000:]
    new = json.loads((tmp / "ablation_lr.json").read_text())
    assert new["settings"]["lr"] == 0.002
    assert new["settings"]["compressed_from"]["work"] == str(tmp / "work")
    assert "only the fine-tuning ran again" in new["cut"]
    for key in data["params"]:
        assert (new["per_seed"]["1"][key]["before"]["predictions_sha256"]
                == data["per_seed"]["1"][key]["before"]["predictions_sha256"])
        assert np.array_equal(np.load(tmp / "work_lr" / "seed1" / f"{key}_before.npy"),
                              np.load(tmp / "work" / "seed1" / f"{key}_before.npy"))
    other = bench("--calib-images", "16", "--compressed-from", str(tmp / "work"), "--work",
                  str(tmp / "work_other"))
    assert other.returncode != 0 and "compressed with other settings" in other.stderr


@pytest.mark.slow
def test_timing_records_raw_times_and_a_ratio_per_process(tmp_path):
    from lrsa.pipeline import Budget, compress, save_compressed
    torch.manual_seed(0)
    model = get_model("nin_bn")
    ckpt = tmp_path / "nin_bn.pt"
    torch.save({"arch": "nin_bn", "state_dict": model.state_dict()}, ckpt)
    compressed, _ = compress(model, torch.randn(16, 3, 32, 32), Budget(size=0.4),
                             progress=False)
    save_compressed(compressed, tmp_path / "compressed.pt", arch="nin_bn")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "timing.py"), "--checkpoint", str(ckpt),
         "--compressed", str(tmp_path / "compressed.pt"), "--processes", "2", "--repeats",
         "3", "--out", str(tmp_path / "timing")], env=env, capture_output=True, text=True,
        timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "timing.json").read_text())
    assert list(data["allocators"]) == ["glibc default", "KEEP_MEMORY"]
    for batch, medians in data["realization"]["original_medians_s"].items():
        faster = min(("contiguous", "channels_last"), key=lambda f: medians[f"{f}_s"])
        assert data["realization"]["layout"][batch] == faster
    for row in data["allocators"].values():
        assert len(row["processes"]) == 2
        for batch in ("b1", "b128"):
            runs = [p[batch] for p in row["processes"]]
            assert all(len(r["original_times_s"]) == len(r["compressed_times_s"]) == 3
                       for r in runs)
            ratios = [np.median(r["original_times_s"]) / np.median(r["compressed_times_s"])
                      for r in runs]
            assert row[batch]["per_process_ratios"] == pytest.approx(ratios)
            iv = row[batch]["median_ratio"]
            assert iv["mean"] == pytest.approx(np.median(ratios))
            assert iv["low"] <= iv["mean"] <= iv["high"]
        assert row["peak_rss_added_mb_b128"]["original"] >= 0


def test_a_benchmark_without_its_trained_network_says_how_to_make_one(tmp_path):
    env = {**os.environ, "LRSA_CHECKPOINTS": str(tmp_path), "TQDM_DISABLE": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablation.py"), "--model",
                          "vgg16_bn", "--work", str(tmp_path / "work")], env=env,
                         capture_output=True, text=True, timeout=300)
    expected = tmp_path / "vgg16_bn_cifar10.pt"
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"lrsa train --model vgg16_bn --out {expected}" in run.stderr
