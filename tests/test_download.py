"""Downloads into the torch hub cache, against a local HTTP server started by the test."""

import functools
import hashlib
import http.server
import io
import socket
import threading
import time

import pytest
import torch

from detr_irpe.core.errors import SourceError
from detr_irpe.hub.checkpoint import load_checkpoint
from detr_irpe.hub.download import cache_path, download, file_sha256, hash_in_name, is_html
from detr_irpe.hub.loader import open_source

#: what a cloud drive answers (HTTP 200) for a share link that wants a sign-in
SIGN_IN_PAGE = b"\n  <!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>" + b"x" * 1200 + b"</body></html>\n"


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


def _checkpoint(seed: int = 0) -> bytes:
    """The bytes of a small checkpoint of this project's layout (a dict with a ``model`` state dict)."""
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.arange(1000, dtype=torch.float32) + seed}, "epoch": seed}, buffer)
    return buffer.getvalue()


def _serve(folder, payload: bytes, name: str | None = None) -> str:
    """Write ``payload`` into the served folder under ``name`` (default: with its hash prefix)."""
    name = name or f"weights-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (folder / name).write_bytes(payload)
    return name


def test_download_then_cache_hit_without_the_server(hub, server):
    base, folder, stop = server
    payload = _checkpoint()
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
    payload = _checkpoint()
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


def _files(hub) -> list[str]:
    """The names in the hub cache, temporary files included."""
    return sorted(p.name for p in hub.iterdir()) if hub.exists() else []


def test_an_html_page_is_refused_in_one_line_and_not_cached(hub, server):
    base, folder, _ = server
    _serve(folder, SIGN_IN_PAGE, "detr-irpe.pth")
    url = base + "detr-irpe.pth"
    with pytest.raises(SourceError) as info:
        download(url, progress=False)
    line = str(info.value)
    assert f"an HTML page, {len(SIGN_IN_PAGE):,} bytes" in line and len(SIGN_IN_PAGE) > 1000
    assert url in line and f"put the file at {hub / 'detr-irpe.pth'} by hand" in line and "\n" not in line
    assert _files(hub) == []  # neither under the checkpoint's name nor as a temporary file


def test_a_page_with_a_hash_in_the_url_is_named_a_page_not_a_hash_mismatch(hub, server):
    base, folder, _ = server
    _serve(folder, b"<HTML><body>Not found</body></HTML>", "detr-r50-e632da11.pth")
    with pytest.raises(SourceError, match=r"an HTML page, 35 bytes") as info:
        download(base + "detr-r50-e632da11.pth", progress=False)
    assert "sha256" not in str(info.value) and _files(hub) == []


def test_after_a_refused_page_the_same_url_downloads_again(hub, server):
    base, folder, stop = server
    _serve(folder, SIGN_IN_PAGE, "model.pth")
    with pytest.raises(SourceError, match="HTML page"):
        download(base + "model.pth", progress=False)
    payload = _checkpoint(seed=3)
    _serve(folder, payload, "model.pth")  # the link now gives the file itself
    path = download(base + "model.pth", progress=False)
    assert path == hub / "model.pth" and path.read_bytes() == payload and _files(hub) == ["model.pth"]
    stop()
    assert load_checkpoint(download(base + "model.pth", progress=False))["epoch"] == 3  # from the cache


def test_a_page_cached_by_an_older_version_is_downloaded_again(hub, server):
    base, folder, _ = server
    hub.mkdir(parents=True)
    (hub / "model.pth").write_bytes(SIGN_IN_PAGE)  # what the cache held before pages were refused
    payload = _checkpoint(seed=5)
    _serve(folder, payload, "model.pth")
    assert download(base + "model.pth", progress=False).read_bytes() == payload
    assert _files(hub) == ["model.pth"]


def test_bytes_that_are_no_checkpoint_are_refused_and_not_cached(hub, server):
    base, folder, _ = server
    payload = bytes(range(256)) * 10
    _serve(folder, payload, "weights.pth")
    with pytest.raises(SourceError, match=r"2,560 bytes that are not a checkpoint; the file was removed; put the "
                                          r"file at .*weights\.pth by hand") as info:
        download(base + "weights.pth", progress=False)
    assert "\n" not in str(info.value) and _files(hub) == []
    buffer = io.BytesIO()
    torch.save([1, 2, 3], buffer)  # a torch file, but no state dict
    _serve(folder, buffer.getvalue(), "list.pth")
    with pytest.raises(SourceError, match=r"bytes that are not a checkpoint \(it is not a checkpoint: expected a "
                                          r"dict with a 'model' state dict\)"):
        download(base + "list.pth", progress=False)
    assert _files(hub) == []


def test_a_valid_cached_file_is_served_even_when_the_url_now_gives_a_page(hub, server):
    base, folder, _ = server
    payload = _checkpoint()
    _serve(folder, payload, "model.pth")
    path = download(base + "model.pth", progress=False)
    _serve(folder, SIGN_IN_PAGE, "model.pth")
    assert download(base + "model.pth", progress=False) == path and path.read_bytes() == payload


def test_safetensors_files_are_checked_as_safetensors(hub, server):
    from safetensors.torch import save

    base, folder, _ = server
    payload = save({"w": torch.ones(4)})
    _serve(folder, payload, "model.safetensors")
    assert download(base + "model.safetensors", progress=False).read_bytes() == payload
    _serve(folder, b"\x00" * 64, "broken.safetensors")
    with pytest.raises(SourceError, match=r"64 bytes that are not a checkpoint \(it is not a safetensors file"):
        download(base + "broken.safetensors", progress=False)
    assert _files(hub) == ["model.safetensors"]


def test_a_url_source_that_gives_a_page_fails_with_one_line(hub, server):
    base, folder, _ = server
    _serve(folder, SIGN_IN_PAGE, "shared.pth")
    with pytest.raises(SourceError, match=f"an HTML page, {len(SIGN_IN_PAGE):,} bytes"):
        open_source(base + "shared.pth")
    assert _files(hub) == []


@pytest.mark.parametrize("head, page", [(b"<!DOCTYPE html>", True), (b" \r\n\t<!doctype HTML>", True),
                                        (b"<html lang=en>", True), (b"\n<HTML>", True), (b"<?xml", False),
                                        (b"PK\x03\x04", False), (b"", False), (b"<htm", False)])
def test_is_html_reads_the_first_bytes(tmp_path, head, page):
    (tmp_path / "f").write_bytes(head + b"rest")
    assert is_html(tmp_path / "f") is page
