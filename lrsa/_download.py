"""Checked downloads shared by :mod:`lrsa.data` and :mod:`lrsa.models` (private helpers)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from .utils import progress_bar

__all__ = ["download", "file_digest", "verify_digest"]

_CHUNK = 1 << 20


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash.
    algorithm : str
        Any name :func:`hashlib.new` accepts (``"md5"``, ``"sha256"``, ...).

    Returns
    -------
    str
        Lower-case hex digest.
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_digest(path, expected: str, algorithm: str = "sha256") -> None:
    """Raise ValueError unless the file's digest starts with ``expected``.

    A full digest and a prefix (as in torchvision's ``name-<sha256[:8]>.pth``) both work.

    Parameters
    ----------
    path : str or os.PathLike
        File to check.
    expected : str
        Expected hex digest or its prefix (case-insensitive, non-empty).
    algorithm : str
        Hash name, ``"md5"`` or ``"sha256"`` typically.

    Raises
    ------
    ValueError
        If ``expected`` is empty or the digest does not match.
    """
    expected = expected.strip().lower()
    if not expected:
        raise ValueError(f"no expected {algorithm} checksum given for {path}")
    got = file_digest(path, algorithm)
    if not got.startswith(expected):
        raise ValueError(f"{algorithm} checksum mismatch for {path}: expected {expected}, "
                         f"got {got}; the file is corrupt or not the one expected")


def download(url: str, dst, *, expected: str, algorithm: str = "sha256",
             progress: bool = False) -> Path:
    """Download ``url`` to ``dst`` and verify its checksum before it appears there.

    The data go to ``dst + '.part'`` first; on a checksum mismatch that file is removed and
    nothing is left at ``dst``. ``file://`` URLs work too (handy for tests and mirrors).

    Parameters
    ----------
    url : str
        Source (``https://``, ``http://`` or ``file://``).
    dst : str or os.PathLike
        Destination file; its parent folder is created.
    expected : str
        Expected hex digest or prefix, see :func:`verify_digest`.
    algorithm : str
        Hash name.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    pathlib.Path
        ``dst``.

    Raises
    ------
    ConnectionError
        If the URL cannot be reached (offline, DNS, HTTP error).
    ValueError
        On a checksum mismatch.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress_bar(progress, total, dst.name, unit="B", unit_scale=True) as bar:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise ConnectionError(f"cannot download {url} ({exc}); if this machine is offline, "
                              f"fetch the file elsewhere and place it at {dst}") from exc
    try:
        verify_digest(part, expected, algorithm)
    except ValueError as exc:
        part.unlink(missing_ok=True)
        raise ValueError(f"downloaded {url}: {exc}") from None
    os.replace(part, dst)
    return dst
