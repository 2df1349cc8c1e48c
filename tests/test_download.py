"""Downloads into the torch hub cache, against a local HTTP server started by the test."""

import functools
import hashlib
import http.server
import socket
import threading
import time

import pytest

from detr_irpe.core.errors import SourceError
from detr_irpe.hub.download import cache_path, download, file_sha256, hash_in_name


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``/short.pth`` announces more bytes than it sends."""

    def do_GET(self):
        if self.path == "/short.pth":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base URL, served folder, stop function) of a server on 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "*")
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            httpd.shutdown()
            httpd.server_close()
            stopped.append(True)

    yield f"http://127.0.0.1:{httpd.server_address[1]}/", folder, stop
    stop()


def _serve(folder, payload: bytes, name: str | None = None) -> str:
    """Write ``payload`` into the served folder under ``name`` (default: with its hash prefix)."""
    name = name or f"weights-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (folder / name).write_bytes(payload)
    return name


def test_download_then_cache_hit_without_the_server(hub, server):
    base, folder, stop = server
    payload = bytes(range(256)) * 4000
    name = _serve(folder, payload)
    path = download(base + name, progress=False)
    assert path == hub / name and path.read_bytes() == payload
    assert [p.name for p in hub.iterdir()] == [name]  # no partial file left
    stop()
    with pytest.raises(SourceError):  # the server is gone...
        download(base + "other.pth", progress=False, timeout=5)
    assert download(base + name, progress=False) == path  # ...and the cached file needs none


def test_full_hash_accepted_and_progress_shown(hub, server, capsys):
    base, folder, _ = server
    payload = b"weights" * 1000
    _serve(folder, payload, "plain.pth")
    path = download(base + "plain.pth", sha256=hashlib.sha256(payload).hexdigest())
    assert path.read_bytes() == payload
    assert "plain.pth" in capsys.readouterr().err


def test_hash_mismatch_refused_and_file_removed(hub, server):
    base, folder, _ = server
    payload = b"not the expected weights"
    _serve(folder, payload, "model.pth")
    got = hashlib.sha256(payload).hexdigest()
    with pytest.raises(SourceError, match=f"sha256 {got} does not match the expected 0123abcd; the file was removed"):
        download(base + "model.pth", sha256="0123ABCD", progress=False)
    assert list(hub.iterdir()) == []


def test_hash_prefix_in_file_name_is_checked(hub, server):
    base, folder, _ = server
    _serve(folder, b"something else", "detr-r50-e632da11.pth")
    with pytest.raises(SourceError, match=r"expected e632da11; the file was removed"):
        download(base + "detr-r50-e632da11.pth", progress=False)
    assert list(hub.iterdir()) == []


def test_http_error_names_the_url_and_the_path(hub, server):
    base, _, _ = server
    url = base + "missing-0123abcd.pth"
    with pytest.raises(SourceError, match="HTTP 404") as info:
        download(url, progress=False)
    assert url in str(info.value) and f"put the file at {hub / 'missing-0123abcd.pth'} by hand" in str(info.value)
    assert "\n" not in str(info.value)


def test_connection_refused_fails_fast(hub, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/detr-r50-e632da11.pth"
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"cannot download .*refused.*put the file at .*detr-r50-e632da11\.pth"):
        download(url, progress=False, timeout=5)
    assert time.monotonic() - start < 5
    assert not hub.exists() or list(hub.iterdir()) == []


def test_transfer_that_breaks_off_leaves_no_file(hub, server):
    base, _, _ = server
    with pytest.raises(SourceError, match="broke off"):
        download(base + "short.pth", progress=False)
    assert list(hub.iterdir()) == []


def test_hash_in_name_follows_torch_hub(tmp_path):
    assert hash_in_name("detr-r50-e632da11.pth") == "e632da11"
    assert hash_in_name("resnet50-0676ba61.pth") == "0676ba61"
    assert hash_in_name("rpe-2.0-product-ctx-1-k.pth") is None
    assert hash_in_name("model-abc.pth") is None
    data = b"abc" * 100
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_cache_path_is_in_the_hub_checkpoints(hub):
    assert cache_path("https://example.org/a/b/detr-r50-e632da11.pth?x=1") == hub / "detr-r50-e632da11.pth"
    with pytest.raises(SourceError, match="names no file"):
        cache_path("https://example.org/")
