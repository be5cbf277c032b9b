"""Hosted checkpoints: a URL and a SHA-256, verified after download, cached, refused when
the hash differs. Served by http.server on 127.0.0.1 (no network needed)."""

import hashlib
import http.server
import threading
from functools import partial

import pytest
import torch

from lrsa import cli
from lrsa.models import fetch_checkpoint, load_checkpoint, small_cnn


@pytest.fixture
def server(tmp_path):
    """A folder served on 127.0.0.1; ``hits`` counts the GET requests."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def hosted(server, tmp_path, monkeypatch):
    """A small_cnn checkpoint as lrsa train writes it, served, with its SHA-256; the cache
    in a temporary folder."""
    root, base, hits = server
    monkeypatch.setenv("LRSA_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = small_cnn()
    torch.save({"arch": model.arch, "state_dict": model.state_dict(), "test_acc": 0.9},
               root / "course_cnn.pt")
    digest = hashlib.sha256((root / "course_cnn.pt").read_bytes()).hexdigest()
    return f"{base}/course_cnn.pt", digest, hits, model, tmp_path / "cache"


def test_downloaded_verified_cached_and_loadable(hosted):
    url, digest, hits, model, cache = hosted
    path = fetch_checkpoint(url, digest)
    assert path.is_file() and path.is_relative_to(cache) and path.name == "course_cnn.pt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    fresh = small_cnn()
    meta = load_checkpoint(fresh, path)
    assert meta["test_acc"] == 0.9
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                 model.state_dict().values()))
    assert fetch_checkpoint(url, digest.upper()) == path  # cached: no second download
    assert len(hits) == 1


def test_wrong_hash_is_refused_and_nothing_is_cached(hosted):
    url, digest, hits, _, cache = hosted
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(ValueError, match="refused the checkpoint") as exc:
        fetch_checkpoint(url, wrong)
    assert "SHA-256 is not the one given" in str(exc.value) and digest in str(exc.value)
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_a_cached_copy_changed_on_disk_is_fetched_again(hosted):
    url, digest, hits, _, _ = hosted
    path = fetch_checkpoint(url, digest)
    path.write_bytes(b"corrupted")
    assert fetch_checkpoint(url, digest) == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest and len(hits) == 2


def test_hash_must_be_a_full_sha256(hosted):
    url, digest, hits, _, _ = hosted
    for bad in (digest[:8], "", digest + "0", "z" * 64):
        with pytest.raises(ValueError, match="64 hex digits"):
            fetch_checkpoint(url, bad)
    assert not hits


def test_unreachable_url(server, tmp_path, monkeypatch):
    _, base, _ = server
    monkeypatch.setenv("LRSA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConnectionError, match="cannot download"):
        fetch_checkpoint(f"{base}/missing.pt", "a" * 64)


def test_cli_prints_the_cached_path(hosted, capsys):
    url, digest, _, _, cache = hosted
    assert cli.main(["fetch-checkpoint", url, digest]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.endswith("course_cnn.pt") and out.startswith(str(cache))
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    assert cli.main(["fetch-checkpoint", url, wrong]) == 2
    assert "refused the checkpoint" in capsys.readouterr().err
