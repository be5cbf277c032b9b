import json
import os

import torch
from torch import nn

from lrsa import paper, report
from lrsa.layers import SparseLowRankConv2d, estimate_macs


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, 10))


def test_count_parameters_and_macs_dense():
    net = _tiny()
    assert report.count_parameters(net) == 8 * 27 + 8 + 512 * 10 + 10
    conv_macs = 8 * 27 * 64
    assert conv_macs == 13824
    assert report.count_macs(net[:1], (1, 3, 8, 8)) == 13824
    assert report.count_macs(net, (1, 3, 8, 8)) == 13824 + 5120
    assert report.count_macs(net, (2, 3, 8, 8)) == 2 * (13824 + 5120)
    assert net.training  # mode restored


def test_count_with_sparse_lowrank_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    n, d, r = 16, 16 * 9, 2
    A = torch.zeros(n, d)
    A[:, :9] = torch.randn(n, 9)  # only input channel 0 kept
    U, V = torch.randn(n, r), torch.randn(r, d)
    slr = SparseLowRankConv2d.from_factors(conv, A, U, V)
    dense = nn.Sequential(conv, nn.ReLU())
    comp = nn.Sequential(slr, nn.ReLU())
    shape = (1, 16, 8, 8)
    macs = report.count_macs(comp, shape)
    assert macs == estimate_macs(slr, shape) == (n * 9 + r * (d + n)) * 64
    assert macs < report.count_macs(dense, shape) == n * d * 64
    assert report.count_parameters(comp) == slr.num_parameters_stored
    assert report.count_parameters(comp) < report.count_parameters(dense)


def test_network_summary():
    net = _tiny()
    s = report.network_summary(net, net, (4, 3, 8, 8), latency_batches=(1, 2), repeats=2)
    assert s["params_ratio"] == 1 and s["macs_ratio"] == 1
    assert set(s["latency"]) == {"b1", "b2"}


def test_markdown_table():
    rows = [{"name": "features.3", "size_a": 0.05, "size_b": 0.5, "size": 0.55,
             "params_original": 1000, "params_compressed": 550},
            {"name": "classifier.0", "size_a": 0.4, "size_b": 0.0, "size": 0.4,
             "params_original": 1000, "params_compressed": 400}]
    md = report.markdown_table(rows, paper=paper.PAPER_TABLE_I,
                               names=paper.VGG16_LAYER_NAMES,
                               paper_ratio=paper.PAPER_VGG16["params_ratio"])
    assert "| conv1-2 | 5.0 | 50.0 | 55.0 | 5.4 | 52.1 | 57.5 |" in md
    assert "| fc1 | 40.0 | 0.0 | 40.0 | 44.2 | 0.0 | 44.2 |" in md
    last = md.splitlines()[-1]
    assert "47.5" in last and "2.11x" in last and "22.5" in last
    assert "paper" not in report.markdown_table(rows)


def test_write_report(tmp_path):
    stem = tmp_path / "sub" / "run"
    report.write_report(stem, {"a": 1, "t": torch.tensor(2.0), "markdown": "| x |"})
    assert json.loads((tmp_path / "sub" / "run.json").read_text())["t"] == 2.0
    assert (tmp_path / "sub" / "run.md").read_text() == "| x |\n"
    assert sorted(os.listdir(tmp_path / "sub")) == ["run.json", "run.md"]
