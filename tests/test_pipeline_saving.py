"""lrsa.pipeline.saving: save and rebuild, for a registered architecture and one's own."""

import json

import pytest
import torch
from torch import nn

from lrsa.pipeline import (Budget, CompressionReport, compress, load_compressed,
                           save_compressed)
from lrsa.pipeline.results import RENAMED_FIELDS


def test_save_load_round_trip(trained, tmp_path):
    model, calib, _ = trained
    comp, rep = compress(model, calib, Budget(relative_lam1=0.05), progress=False)
    save_compressed(comp, tmp_path / "c.pt", arch="small_cnn", report=rep)
    loaded, report = load_compressed(tmp_path / "c.pt")
    x = torch.cat(calib)[:16]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), comp(x))
    assert isinstance(report, CompressionReport)
    assert report.to_dict() == json.loads(json.dumps(rep.to_dict()))
    report_json = rep.to_dict()
    report_json["layers"][0]["invented"] = 1
    with pytest.raises(ValueError, match="invented"):
        CompressionReport.from_dict(report_json)
    older = rep.to_dict()  # saved before frac became relative_lam1 and cr, cr_a, cr_b sizes
    old_name = {new: old for old, new in RENAMED_FIELDS.items()}
    older["layers"] = [{old_name.get(k, k): v for k, v in row.items()} for row in older["layers"]]
    assert {"frac", "cr", "cr_a", "cr_b"} <= set(older["layers"][0])
    assert CompressionReport.from_dict(older).to_dict() == rep.to_dict()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a compressed model"):
        load_compressed(tmp_path / "plain.pt")


def test_a_model_of_ones_own_reloads_through_its_constructor(tmp_path):
    def build():  # not a registered architecture
        return nn.Sequential(nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(16 * 25, 4))
    torch.manual_seed(0)
    calib = [torch.randn(64, 2, 5, 5)]
    comp, _ = compress(build(), calib, Budget(layer_size=0.5), progress=False, fallback=None)
    save_compressed(comp, tmp_path / "own.pt")
    with pytest.raises(ValueError, match="build="):
        load_compressed(tmp_path / "own.pt")
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        load_compressed(tmp_path / "own.pt", build=lambda: "vgg")
    loaded, _ = load_compressed(tmp_path / "own.pt", build=build)
    with torch.no_grad():
        torch.testing.assert_close(loaded(calib[0]), comp(calib[0]))
    assert any(type(m).__name__.startswith("SparseLowRank") for m in loaded.modules())
