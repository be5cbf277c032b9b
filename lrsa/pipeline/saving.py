"""Saving a compressed model with the structure needed to rebuild it, and loading it back."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..attention import split_attention
from ..batchnorm import fold_batchnorm
from ..layers import apply_structure, model_structure
from ..models import get_model
from ..utils import atomic_torch_save, load_torch_file
from .results import CompressionReport


def save_compressed(model, path, *, arch=None, model_kwargs=None, report=None):
    """Write a compressed model (state dict + the structure needed to rebuild it) atomically.

    ``arch`` and ``model_kwargs`` name the :func:`lrsa.models.get_model` factory that built
    the original network, so :func:`load_compressed` can rebuild it alone; for a model of
    your own leave ``arch`` out and give ``load_compressed`` its constructor.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"format": "lrsa-compressed-1", "arch": arch,
                       "model_kwargs": dict(model_kwargs or {}),
                       "structure": model_structure(model),
                       "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       "report": json.dumps(report.to_dict() if report is not None else None)},
                      path)


def load_compressed(path, build=None):
    """Rebuild a model written by :func:`save_compressed` (loaded with weights_only=True).

    Parameters
    ----------
    path : str or os.PathLike
    build : callable or None
        ``build()`` returns the *uncompressed* network (any weights): needed for a model
        saved without ``arch``, and used instead of the registered factory when given.

    Returns
    -------
    model : torch.nn.Module
    report : CompressionReport or None
        The report saved with the model, of the type :func:`compress` returns.

    Raises
    ------
    ValueError
        For a file of another kind, a file without ``arch`` and no ``build``, or a state
        dict that does not fit the recorded structure.
    """
    obj = load_torch_file(path, "a compressed model written by lrsa.save_compressed")
    if not isinstance(obj, dict) or obj.get("format") != "lrsa-compressed-1":
        raise ValueError(f"{path} is not a compressed model written by lrsa.save_compressed "
                         "(for original weights use lrsa.models.load_checkpoint)")
    if build is None and obj["arch"] is None:
        raise ValueError(f"{path} holds a model of your own (saved without arch): pass "
                         "load_compressed(path, build=...) a function that builds it")
    model = build() if build is not None else get_model(obj["arch"], **obj["model_kwargs"])
    if not isinstance(model, nn.Module):
        raise ValueError(f"build() returned a {type(model).__name__}, not a torch.nn.Module")
    model = fold_batchnorm(model.eval())
    split_attention(model)  # as compress did: the projections are modules there
    apply_structure(model, obj["structure"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the recorded structure: {exc}") from exc
    report = json.loads(obj["report"])
    return model, None if report is None else CompressionReport.from_dict(report)
