"""The command line (lrsa.cli): each command end to end on the embedded digits, and bad input
reported as one line, not a traceback."""

import json

import torch

from lrsa.cli import main
from lrsa.models import small_cnn


def test_cli_demo_writes_a_report(tmp_path):
    rc = main(["demo", "--out", str(tmp_path), "--epochs", "2", "--finetune-epochs", "1",
               "--repeats", "2", "--distill", "features"])
    assert rc == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["finetune_distill"] == "features"
    assert data["params_ratio"] > 1.5
    assert {"top1_baseline", "top1_compressed", "top1_finetuned", "approx_seconds"} <= set(data)
    for method in ("svd", "rrr"):  # the baselines at lrsa's per-layer sizes (rank steps)
        stored = data["baselines"][method]["params_compressed"]
        assert 0.95 * data["params_compressed"] <= stored <= data["params_compressed"]
        assert f"{data['baselines'][method]['top1']:.2f}%" in data["markdown"]
    assert (tmp_path / "compressed.pt").exists() and (tmp_path / "report.md").exists()


def test_cli_reports_bad_input_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"arch": "small_cnn", "state_dict": small_cnn().state_dict()}, bad)
    rc = main(["evaluate", "--model", "vgg16_bn", "--checkpoint", str(bad), "--data",
               str(tmp_path)])
    assert rc == 2
    assert "error" in capsys.readouterr().err


def test_cli_train_writes_a_loadable_checkpoint_and_cleans_its_state(tmp_path, capsys):
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


def test_cli_download_cifar10_fetches_and_verifies_a_local_mirror(tmp_path, capsys,
                                                                  monkeypatch):
    import functools
    import hashlib
    import io
    import pickle
    import tarfile

    import numpy as np
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]:
            raw = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    archive = tmp_path / "mirror.tar.gz"
    archive.write_bytes(buf.getvalue())
    md5 = hashlib.md5(buf.getvalue()).hexdigest()
    import lrsa.data
    monkeypatch.setattr(lrsa.data, "download_cifar10", functools.partial(
        lrsa.data.download_cifar10, url=archive.as_uri(), md5=md5))
    assert main(["download-cifar10", str(tmp_path / "data")]) == 0
    assert "cifar-10-batches-py" in capsys.readouterr().out
    x, y = lrsa.data.load_cifar10(tmp_path / "data", train=False)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [0, 1]


def test_a_missing_cifar_folder_names_the_package_own_download(tmp_path, capsys):
    assert main(["compress", "--model", "vgg16_bn", "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "lrsa download-cifar10" in err and "shared" not in err


def test_cli_demo_at_its_defaults_fine_tunes_without_collapsing(tmp_path):
    # the README's first command: with logit distillation at lr 1e-3 and no gradient cap,
    # the compressed CNN went from 94.9 % to 54.2 % in two epochs (its gradient norm grew
    # from 6 to 271 in five steps); fine-tuning must not cost more than a few test images
    assert main(["demo", "--out", str(tmp_path), "--repeats", "2"]) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["finetune_distill"] == "logits" and data["finetune_epochs"] == 2
    assert data["top1_finetuned"] >= data["top1_compressed"] - 1.0


def _one_line_error(capsys, *names):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, err
    return err


def test_cli_slips_get_one_line_naming_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"markdown": "| layer | kind |"}))
    (run / "report.md").write_text("| layer | kind |\n")
    # the run folder instead of its report.json: read as its report.json
    assert main(["report", str(run)]) == 0
    assert "| layer | kind |" in capsys.readouterr().out
    assert main(["report", str(run / "report.md")]) == 2
    _one_line_error(capsys, "report.md", "not JSON", "report.json")
    assert main(["report", str(tmp_path / "nothing")]) == 2
    _one_line_error(capsys, "nothing", "does not exist")
    # a report given as a checkpoint
    assert main(["evaluate", "--model", "small_cnn", "--checkpoint",
                 str(run / "report.json")]) == 2
    _one_line_error(capsys, "report.json", "could not be read as a checkpoint")
    assert main(["evaluate", "--model", "small_cnn", "--checkpoint", str(run)]) == 2
    _one_line_error(capsys, "is a folder")


def test_cli_preset_is_the_named_budget_with_the_options_given(capsys):
    """--preset fast is Budget.preset("fast"); an option given changes that field alone;
    without a preset the options make the Budget as before; a pair Budget refuses is one
    line naming it."""
    from lrsa.cli import _compress_args
    from lrsa.cli_parser import build_parser
    from lrsa.pipeline import Budget

    def budget(*argv):
        return _compress_args(build_parser().parse_args(["compress", *argv]))["budget"]

    assert budget("--preset", "fast") == Budget.preset("fast")
    assert budget("--preset", "fast", "--size", "0.25", "--ratio", "3") == Budget.preset(
        "fast", size=0.25, ratio=3.0)
    assert budget("--size", "0.2", "--macs", "0.3") == Budget(size=0.2, macs=0.3)
    assert budget("--preset", "fast", "--all-layers") == Budget.preset("fast", all_layers=True)
    assert budget("--preset", "fast").all_layers is False
    assert budget() == Budget()
    assert main(["compress", "--model", "small_cnn", "--size", "0.2", "--layer-size", "0.3",
                 "--out", "unused"]) == 2
    assert "takes one of size, macs, speedup, layer_size" in capsys.readouterr().err


def test_cli_train_holds_out_a_validation_split_and_records_it(tmp_path, capsys):
    import hashlib

    from test_data import _fake_cifar
    folder, _ = _fake_cifar(tmp_path)  # 20 training images
    out = tmp_path / "nin.pt"
    assert main(["train", "--model", "nin_bn", "--data", str(folder), "--epochs", "1",
                 "--batch-size", "8", "--val-images", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    ck = torch.load(out, weights_only=True)
    assert ck["val_images"] == 5 and ck["val_acc"] in {i / 5 for i in range(6)}
    assert "--val-images 5" in ck["recipe"]
    assert "validation top-1" in printed
    assert hashlib.sha256(out.read_bytes()).hexdigest() in printed


def test_demo_starts_over_when_its_layers_come_from_other_code(tmp_path, capsys):
    from lrsa.cli import _start_over_if_stale
    from lrsa.utils import code_version
    work = tmp_path / "work"
    work.mkdir()
    torch.save({"provenance": {"code": code_version()}}, work / "layer_000.pt")
    _start_over_if_stale(work)
    assert (work / "layer_000.pt").exists() and capsys.readouterr().out == ""
    torch.save({"provenance": {"code": "0123456789abcdef"}}, work / "layer_001.pt")
    _start_over_if_stale(work)
    assert not (work / "layer_000.pt").exists()
    assert "another version of lrsa's code: starting over" in capsys.readouterr().out


def test_demo_starts_over_when_its_options_change(tmp_path, capsys):
    """`lrsa demo --size 0.5` after a default run: not a refusal, a fresh start."""
    from lrsa.cli import _start_over_if_stale
    from lrsa.utils import code_version
    work = tmp_path / "work"
    _start_over_if_stale(work, {"size": None})
    torch.save({"provenance": {"code": code_version()}}, work / "layer_000.pt")
    _start_over_if_stale(work, {"size": None})
    assert (work / "layer_000.pt").exists() and capsys.readouterr().out == ""
    _start_over_if_stale(work, {"size": 0.5})
    assert not (work / "layer_000.pt").exists()
    assert "other options: starting over" in capsys.readouterr().out
