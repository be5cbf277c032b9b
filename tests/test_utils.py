"""lrsa.utils: atomic writes keep the old file on failure, fingerprints see every byte,
markdown tables keep their shape."""

import pytest
import torch

from lrsa.utils import (atomic_torch_save, atomic_write_text, evaluating, format_table,
                        weights_fingerprint)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "old")
    assert path.read_text() == "old"

    def broken_save(obj, f):
        open(f, "w").write("half")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"x": 1}, path)
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]  # no temporary left behind


def test_atomic_torch_save_round_trips(tmp_path):
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "w.pt")
    assert torch.load(tmp_path / "w.pt", weights_only=True)["w"].tolist() == [0, 1, 2]


def test_fingerprint_sees_a_change_far_into_a_tensor():
    model = torch.nn.Linear(100, 100)  # 40 KB of weights
    before, last = weights_fingerprint(model), model.weight[-1, -1].item()
    with torch.no_grad():
        model.weight[-1, -1] += 1e-3  # the last byte range, beyond any prefix
    assert weights_fingerprint(model) != before
    with torch.no_grad():  # restored exactly (adding and subtracting 1e-3 may round)
        model.weight[-1, -1] = last
    assert weights_fingerprint(model) == before


def test_format_table():
    md = format_table(["layer", "CR %"], [["conv1", "5.0"], ["fc", None]])
    assert md.splitlines() == ["| layer | CR % |", "|---|---:|", "| conv1 | 5.0 |",
                               "| fc | - |"]
    with pytest.raises(ValueError, match="1 cells for 2 columns"):
        format_table(["a", "b"], [["x"]])


def test_evaluating_restores_every_flag_even_after_an_error():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    net.train()
    net[1].eval()  # a mixed state must come back as it was
    with pytest.raises(RuntimeError, match="boom"):
        with evaluating(net, None):
            assert not any(m.training for m in net.modules())
            assert not torch.is_grad_enabled()
            raise RuntimeError("boom")
    assert net.training and net[0].training and not net[1].training
    assert torch.is_grad_enabled()


def test_progress_bar_honours_tqdm_disable(monkeypatch):
    from lrsa.utils import progress_bar
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with progress_bar(True, 3) as bar:
        assert not bar.disable
    monkeypatch.setenv("TQDM_DISABLE", "1")  # e.g. notebooks executed for saving
    with progress_bar(True, 3) as bar:
        assert bar.disable
    with progress_bar(False, 3) as bar:
        assert bar.disable


def test_set_module_replaces_a_dotted_submodule_and_returns_the_old_one():
    from torch import nn

    from lrsa.utils import set_module
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    old, new = model[0][0], nn.Linear(2, 3)
    assert set_module(model, "0.0", new) is old and model[0][0] is new


def test_given_or_built_takes_an_instance_or_its_fields_never_both_nor_garbage():
    from dataclasses import dataclass

    from lrsa.utils import given_or_built

    @dataclass
    class Settings:
        a: int = 1

    assert given_or_built(Settings, None, {"a": 2}) == Settings(2)
    mine = Settings(3)
    assert given_or_built(Settings, mine, {}) is mine
    with pytest.raises(ValueError, match="not both"):
        given_or_built(Settings, mine, {"a": 2})
    with pytest.raises(ValueError, match="expected a Settings"):
        given_or_built(Settings, "linear", {})  # e.g. a misplaced positional argument
