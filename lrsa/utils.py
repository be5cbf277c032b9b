"""Small helpers every other module shares: input validation, atomic writes, the hashes that
say what computed a result (which code, which weights), and markdown tables.

A long run writes each result with :func:`atomic_write_text` or :func:`atomic_torch_save`:
to a temporary file in the same folder, then ``os.replace``, so a crash leaves either the
old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from array_api_compat import array_namespace, is_numpy_array, is_torch_array

if TYPE_CHECKING:
    import torch

# torch is imported inside the helpers that need it: as_numpy, format_table and the writers of
# text are used by lrsa.viz and the NumPy-only lessons, which run without torch
__all__ = ["as_numpy", "atomic_torch_save", "atomic_write_text", "call_model", "check_floating",
           "check_number", "code_version", "device_and_dtype", "evaluating", "format_table",
           "given_or_built", "progress_bar", "set_module", "weights_fingerprint"]


def check_floating(V, name="V"):
    """The array namespace of ``V``, a finite floating NumPy array or torch tensor;
    ValueError naming ``name`` for other types, non-float dtypes, NaN or Inf."""
    if not (is_numpy_array(V) or is_torch_array(V)):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(V).__name__}")
    xp = array_namespace(V)
    if not xp.isdtype(V.dtype, "real floating"):
        raise ValueError(f"{name} must be a floating array, got dtype {V.dtype}")
    if not bool(xp.all(xp.isfinite(V))):
        raise ValueError(f"{name} contains NaN or Inf")
    return xp


def check_number(name, value, *, positive=False, allow_inf=False):
    """``value`` as a float >= 0 (> 0 with ``positive``; inf only with ``allow_inf``), or a
    ValueError naming ``name``."""
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf) or value < 0 or (
            positive and value == 0):
        raise ValueError(f"{name} must be a {'' if allow_inf else 'finite '}number "
                         f"{'> 0' if positive else '>= 0'}, got {value}")
    return value


def given_or_built(cls, given, fields):
    """``given`` (an instance of the settings dataclass ``cls``), or ``cls(**fields)``; a
    ValueError when both are given or ``given`` is something else (e.g. a misplaced
    positional argument)."""
    if given is None:
        return cls(**fields)
    if not isinstance(given, cls):
        raise ValueError(f"expected a {cls.__name__} (or its fields as keywords), got "
                         f"{given!r}")
    if fields:
        raise ValueError(f"give a {cls.__name__} or its fields, not both (got one and "
                         f"{sorted(fields)})")
    return given


def as_numpy(x):
    """A float64 NumPy copy of an array, tensor or sequence."""
    if is_torch_array(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def _atomic(path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` (folders created) atomically; returns the path."""
    return _atomic(path, lambda tmp: Path(tmp).write_text(text))


def atomic_torch_save(obj, path) -> Path:
    """``torch.save(obj)`` to ``path`` (folders created) atomically; returns the path."""
    import torch
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def load_torch_file(path, expected: str):
    """``torch.load(path, weights_only=True)`` on the CPU, or a ValueError in one line that
    names the file and ``expected`` (what it should hold): for a folder, a missing file, a
    truncated or overwritten file, a JSON report, or a pickle with arbitrary objects, where
    torch would raise a paragraph about ``weights_only`` or a bare unpickling error."""
    import torch
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a file holding {expected}")
    if not path.is_file():
        raise ValueError(f"{path} does not exist; expected a file holding {expected}")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise ValueError(f"{path} could not be read as {expected} "
                         f"({type(exc).__name__}: {reason})") from exc


def code_version() -> str:
    """sha256 (16 hex digits) of lrsa's own source files: what computed a result."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (16 hex digits) over every byte of every tensor of ``model.state_dict()``
    (names, dtypes and shapes included)."""
    import torch
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(v.dtype).encode() + str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def format_table(columns, rows) -> str:
    """A markdown table: ``columns`` (header strings; the first column left-aligned, the rest
    right-aligned) and ``rows`` (sequences of cells; ``None`` prints as ``-``)."""
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    for row in cells:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells for {len(columns)} columns: {row}")
    lines = ["| " + " | ".join(columns) + " |",
             "|---|" + "".join("---:|" for _ in columns[1:])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def progress_bar(enabled: bool, total=None, desc=None, **kwargs):
    """A tqdm bar, or (``enabled=False``, or ``TQDM_DISABLE`` set in the environment, as
    tqdm's own switch) one that does nothing: callers update it either way. Use as a context
    manager so it closes."""
    from tqdm.auto import tqdm
    off = os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")
    return tqdm(total=total, desc=desc, disable=not enabled or off, **kwargs)


def device_and_dtype(model: torch.nn.Module):
    """The device of ``model``'s first tensor and its floating dtype (CPU float32 if none)."""
    import torch
    for t in (*model.parameters(), *model.buffers()):
        return t.device, (t.dtype if t.is_floating_point() else torch.float32)
    return torch.device("cpu"), torch.float32


def run_hooked(model, example_input, handles):
    """One forward pass of ``model`` on ``example_input`` in eval mode, then the hooks
    ``handles`` removed (also when the pass raises)."""
    try:
        with evaluating(model):
            call_model(model, example_input)
    finally:
        for h in handles:
            h.remove()


def set_module(model, name, new):
    """Put ``new`` in place of ``model``'s submodule ``name`` (dotted); returns the module it
    replaced."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def call_model(model, x):
    """``model`` applied to ``x`` moved to the model's device: a tensor, a tuple or list of
    positional inputs, or a dict of keyword inputs (their tensors moved, the rest as given)."""
    import torch
    dev = device_and_dtype(model)[0]
    if isinstance(x, torch.Tensor):
        return model(x.to(dev))
    if isinstance(x, (tuple, list)):
        return model(*[t.to(dev) if isinstance(t, torch.Tensor) else t for t in x])
    if isinstance(x, dict):
        return model(**{k: v.to(dev) if isinstance(v, torch.Tensor) else v
                        for k, v in x.items()})
    return model(x)


@contextmanager
def evaluating(*models):
    """Eval mode for ``models`` (``None`` entries skipped) under ``torch.no_grad``; every
    submodule's train/eval flag is restored afterwards, even after an exception."""
    import torch
    flags = [(m, m.training) for model in models if model is not None
             for m in model.modules()]
    try:
        for model in models:
            if model is not None:
                model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, training in flags:
            m.training = training
