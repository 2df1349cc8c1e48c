"""Model files fetched once into the torch hub cache (``$TORCH_HOME/hub/checkpoints``), with a
progress bar, a sha256 check and a check that what arrived loads as a model file; a download takes
its place in the cache only after these checks, so a failed, mismatching or wrong download (an
HTML sign-in page from a cloud drive) leaves no file behind and the next run downloads again."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import torch
from tqdm import tqdm

from ..core.errors import SourceError, UserError
from .checkpoint import load_checkpoint

log = logging.getLogger(__name__)

#: torch.hub's convention: ``name-<first 8 or more hex digits of the sha256>.ext``
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")

_CHUNK = 1 << 20

#: how a web page starts (after whitespace, any case): what a sign-in, share or error page sends
_HTML_STARTS = (b"<!doctype html", b"<html")


def hash_in_name(file_name: str) -> str | None:
    """The sha256 prefix a file name carries by torch.hub's convention, or None."""
    match = HASH_IN_NAME.search(file_name)
    return match.group(1) if match else None


def cache_path(url: str) -> Path:
    """Where ``url``'s file is kept: the torch hub cache's ``checkpoints`` folder."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name:
        raise SourceError(f"URL {url} names no file (expected .../<file name>)")
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, as hex digits."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def download(url: str, *, sha256: str | None = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """The local copy of ``url``: from the cache when it is there (no network), else downloaded
    next to its place, checked and renamed into place. ``sha256`` is the file's hash or its
    start; without it, a hash prefix in the file name (``-<8+ hex digits>.``) is checked. What
    arrived must load as a model file (check_model_file) before it is renamed into the cache; a
    web page left in the cache by an older version is downloaded again.
    ``timeout`` (seconds) bounds the connection and every read, so that offline fails fast."""
    path = cache_path(url)
    if path.is_file():
        if not is_html(path):
            return path
        log.warning("%s in the torch hub cache is a web page, not a model file: downloading %s again", path, url)
    expected = (sha256 or hash_in_name(path.name) or "").lower() or None
    by_hand = f"put the file at {path} by hand"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise SourceError(f"cannot write into {path.parent}: {exc.strerror or exc} (set TORCH_HOME to a "
                          f"writable folder)") from None
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, progress=progress, timeout=timeout, name=path.name)
        size = os.path.getsize(partial)
        if is_html(partial):  # before the hash: a sign-in page is the likelier story than a bad file
            raise SourceError(f"download {url}: the server sent an HTML page, {_bytes(size)}, not a model file "
                              f"(a sign-in or share page? the URL must give the file itself); the file was "
                              f"removed; {by_hand}")
        if expected and not digest.startswith(expected):
            raise SourceError(f"download {url}: sha256 {digest} does not match the expected {expected}; "
                              f"the file was removed")
        try:
            check_model_file(partial, path.name)
        except UserError as exc:
            raise SourceError(f"download {url}: the server sent {_bytes(size)} that {'is' if size == 1 else 'are'} "
                              f"not a checkpoint{_reason(exc, partial, path.name)}; the file was removed; "
                              f"{by_hand}") from None
        os.replace(partial, path)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; {by_hand}") from None
    except urllib.error.URLError as exc:
        raise SourceError(f"cannot download {url}: {exc.reason}; {by_hand}") from None
    except TimeoutError:
        raise SourceError(f"cannot download {url}: no answer within {timeout:g} s; {by_hand}") from None
    except http.client.HTTPException as exc:
        raise SourceError(f"cannot download {url}: the transfer broke off ({exc!r}); {by_hand}") from None
    except OSError as exc:  # a reset connection, a full disk
        raise SourceError(f"cannot download {url} to {path}: {exc.strerror or exc}; {by_hand}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return path


def is_html(path: str | os.PathLike) -> bool:
    """Whether a file starts (after whitespace, in any case) like a web page: ``<!DOCTYPE html``
    or ``<html``."""
    with open(path, "rb") as f:
        head = f.read(1024).lstrip().lower()
    return head.startswith(_HTML_STARTS)


def check_model_file(path: str | os.PathLike, name: str) -> None:
    """Raise a UserError unless ``path`` loads as what a file called ``name`` is read as: a
    safetensors file (its header), a detectron2 ``.pkl`` (read by detectron2 alone: not unpickled
    here), else a checkpoint or state dict as detr_irpe.hub.checkpoint.load_checkpoint reads it
    (tensors memory-mapped where possible, so the check stays cheap)."""
    suffix = Path(name).suffix.lower()
    if suffix == ".pkl":
        return
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                f.keys()
        except Exception as exc:  # safetensors raises its own error types for a bad header
            raise SourceError(f"it is not a safetensors file: {_one_line(str(exc)) or type(exc).__name__}") from None
        return
    load_checkpoint(path, mmap=True)


def _bytes(size: int) -> str:
    return "1 byte" if size == 1 else f"{size:,} bytes"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reason(exc: Exception, partial: str, name: str) -> str:
    """Why check_model_file refused the temporary file ``partial``, in parentheses, naming the file
    by ``name``; nothing where torch.load only said that the bytes are no checkpoint."""
    text = _one_line(str(exc))
    if not text or "truncated or not a checkpoint" in text:
        return ""
    return f" ({text.replace(f'checkpoint {partial} ', 'it ').replace(partial, name)})"


def _fetch(url: str, out, *, progress: bool, timeout: float, name: str) -> str:
    """Stream ``url`` into ``out``; returns the sha256 of what was written."""
    hasher = hashlib.sha256()
    # a fresh opener reads the proxy settings of the environment as they are now
    with urllib.request.build_opener().open(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)
    return hasher.hexdigest()
