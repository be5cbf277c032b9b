"""Checked checkpoint loading and cached, hash-verified pretrained weights."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from .._download import download, file_digest

__all__ = ["arch_of", "cache_dir", "check_state_dict", "fetch_checkpoint", "fetch_weights",
           "load_checkpoint"]

_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHOW = 4  # offending keys listed per kind


def arch_of(model: nn.Module) -> str:
    """The model's ``arch`` attribute, else its class name."""
    return getattr(model, "arch", type(model).__name__)


def _few(keys) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def check_state_dict(model: nn.Module, state_dict, arch: str | None = None) -> None:
    """Raise ValueError unless ``state_dict`` has exactly the model's keys and shapes.

    A missing ``*.num_batches_tracked`` is tolerated (older checkpoints lack it; BatchNorm
    fills it in).

    Parameters
    ----------
    model : torch.nn.Module
        Target model.
    state_dict : mapping of str to torch.Tensor
        Candidate weights.
    arch : str or None
        The checkpoint's recorded architecture, used in the message.

    Raises
    ------
    ValueError
        Naming the architectures and a few missing, unexpected or mis-shaped keys.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return
    who = f"checkpoint is for arch '{arch}'" if arch else "checkpoint (arch not recorded)"
    parts = [f"missing keys {_few(missing)}" if missing else "",
             f"unexpected keys {_few(unexpected)}" if unexpected else "",
             f"shape mismatch (checkpoint vs model) {_few(shapes)}" if shapes else ""]
    raise ValueError(f"{who}, not {arch_of(model)}: " + "; ".join(p for p in parts if p))


def load_checkpoint(model: nn.Module, path) -> dict:
    """Load weights into ``model`` after checking that they fit it exactly.

    The file is read with ``torch.load(path, weights_only=True, map_location='cpu')`` (no
    arbitrary code runs). It may hold a raw state dict or a dict with ``state_dict`` plus
    metadata (``arch``, ``test_acc``, ``epochs``, ``recipe``, ...), the layout
    ``lrsa train`` writes.

    Parameters
    ----------
    model : torch.nn.Module
        Target; its ``arch`` attribute (else class name) is used in error messages.
    path : str or os.PathLike
        Checkpoint file.

    Returns
    -------
    dict
        The metadata: every entry but ``state_dict`` (empty for a raw state dict).

    Raises
    ------
    ValueError
        If the file cannot be read safely or its weights do not fit ``model`` (the message
        names both architectures and a few offending keys).
    """
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state_dict = obj["state_dict"]
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state_dict, meta = obj, {}
    else:
        raise ValueError(f"checkpoint {path} holds neither a state dict nor a dict with "
                         f"'state_dict' (got {type(obj).__name__})")
    check_state_dict(model, state_dict, meta.get("arch"))
    model.load_state_dict(state_dict)
    return meta


def cache_dir() -> Path:
    """Where downloaded weights go: ``$LRSA_CACHE``, else ``~/.cache/lrsa``."""
    return Path(os.environ.get("LRSA_CACHE") or Path.home() / ".cache" / "lrsa")


def fetch_weights(url: str, progress: bool = False) -> dict:
    """Download (once) and load a torchvision-style ``name-<sha256 prefix>.pth`` state dict.

    The file is cached in :func:`cache_dir` / ``weights``; a fresh download is accepted only
    if its SHA-256 starts with the prefix in the file name. Loading uses
    ``weights_only=True``.

    Parameters
    ----------
    url : str
        Weights URL whose file name carries the hash prefix (as torchvision's do).
    progress : bool
        Download progress bar.

    Returns
    -------
    dict
        The state dict.

    Raises
    ------
    ConnectionError
        When the file is not cached and cannot be downloaded (offline); the message says where
        to put a copy by hand.
    ValueError
        On a hash mismatch or an unreadable file.
    """
    name = url.rsplit("/", 1)[-1]
    m = _HASH_IN_NAME.search(name)
    if m is None:
        raise ValueError(f"weights URL {url} carries no '-<sha256 prefix>.' in its file name")
    path = cache_dir() / "weights" / name
    if not path.is_file():
        download(url, path, expected=m.group(1), algorithm="sha256", progress=progress)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ValueError(f"cannot read cached weights {path}: {exc}; delete it to "
                         f"download again") from exc


def fetch_checkpoint(url: str, sha256: str, *, progress: bool = False) -> Path:
    """Download (once) a checkpoint that a course or a lab hosts, verify it, return its path.

    A course that trains its own VGG-16 or NIN (``lrsa train``) can put the file on any web
    server and hand students two things: the URL and the file's SHA-256 (``sha256sum FILE``).
    The file is downloaded to a temporary name, its SHA-256 is checked **before** it is
    stored, and it is cached as ``cache_dir() / "checkpoints" / <sha256[:16]> / <file name>``
    (``$LRSA_CACHE``, else ``~/.cache/lrsa``). Later calls check the cached copy's SHA-256
    again (a fraction of a second for a VGG-16) and download afresh if it changed on disk.

    Parameters
    ----------
    url : str
        ``https://``, ``http://`` or ``file://`` address of the checkpoint.
    sha256 : str
        The file's full SHA-256, 64 hex digits.
    progress : bool
        Download progress bar.

    Returns
    -------
    pathlib.Path
        The cached file; load it with :func:`load_checkpoint` (or ``lrsa compress
        --checkpoint PATH``, ``LRSA_VGG16=PATH`` for the notebooks).

    Raises
    ------
    ValueError
        If ``sha256`` is not 64 hex digits, or the downloaded file's SHA-256 differs (nothing
        is cached then).
    ConnectionError
        If the URL cannot be reached and no verified copy is cached.
    """
    digest = (sha256 or "").strip().lower()
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"sha256 must be the file's full SHA-256 (64 hex digits, as "
                         f"`sha256sum FILE` prints it), got {sha256!r}")
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "checkpoint.pt"
    path = cache_dir() / "checkpoints" / digest[:16] / name
    if path.is_file():
        if file_digest(path) == digest:
            return path
        path.unlink()  # changed on disk since it was verified: fetch it again
    try:
        download(url, path, expected=digest, algorithm="sha256", progress=progress)
    except ValueError as exc:
        raise ValueError(f"refused the checkpoint at {url}: its SHA-256 is not the one given "
                         f"({digest}), so it was not stored. Either the file on the server "
                         f"changed or the hash is wrong; ask whoever published the link. "
                         f"Details: {exc}") from None
    return path
