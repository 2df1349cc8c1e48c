"""Model files fetched once into the torch hub cache (``$TORCH_HOME/hub/checkpoints``), with a
progress bar and a sha256 check; a failed or mismatching download leaves no file behind."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import torch
from tqdm import tqdm

from ..core.errors import SourceError

#: torch.hub's convention: ``name-<first 8 or more hex digits of the sha256>.ext``
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")

_CHUNK = 1 << 20


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
    start; without it, a hash prefix in the file name (``-<8+ hex digits>.``) is checked.
    ``timeout`` (seconds) bounds the connection and every read, so that offline fails fast."""
    path = cache_path(url)
    if path.is_file():
        return path
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
        if expected and not digest.startswith(expected):
            raise SourceError(f"download {url}: sha256 {digest} does not match the expected {expected}; "
                              f"the file was removed")
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
