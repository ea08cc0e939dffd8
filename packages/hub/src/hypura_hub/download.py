"""One file to disk, resumable and verified: never a partial or unverified file under the final name.

The bytes go to ``.NAME.partial`` beside the target, with ``.NAME.partial.json`` recording the URL, the size
and the validator (ETag) they came from. A later call (or an automatic retry after a dropped connection) asks
for the rest with ``Range: bytes=N-`` and ``If-Range`` (the validator): a ``206`` that starts at ``N``
appends, a ``200`` (the file changed, or the host ignores ranges) starts over. At the end the size must be the
published one and the sha256, when the host publishes one, must match; then the partial file is fsynced and
renamed onto the target (``os.replace``: a reader sees no file or the whole one). A mismatch removes the
partial file and raises `HubError` naming both digests. The sha256 is computed as the bytes arrive (a resumed
download hashes what it already holds first), so a 600 GB model is not read a second time to check it.
Two pulls of one file at once (the CLI and a server sharing a store) would write one partial file: the second
gets a `HubError` at once (``flock`` on ``.NAME.lock``, removed by its holder).
"""
from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .http import HubError, Response, open_url

CHUNK = 1 << 20
RETRIES = 3

Progress = Callable[[int, int | None], None]    # (bytes on disk, total or None)


@dataclass
class Fetched:
    path: Path
    size: int
    sha256: str
    verified: bool        # the sha256 was published and matched
    resumed_from: int     # the byte this call's download continued from (0: from the start)
    downloaded: int       # bytes this call received


def partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def _meta_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial.json")


@contextmanager
def _exclusive(target: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``target`` (fails at once if another process holds it); removed at the end.
    After locking, the path must still name the locked file: a holder may have removed it meanwhile."""
    lock = target.with_name(f".{target.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HubError(f"{target.name}: another pull is downloading this file now (lock {lock})") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(lock)
        finally:
            os.close(fd)


def _hash_file(path: Path, upto: int) -> hashlib._Hash:  # type: ignore[name-defined]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = upto
        while left > 0 and (chunk := f.read(min(CHUNK, left))):
            h.update(chunk)
            left -= len(chunk)
    return h


def _start(rng: Response, have: int) -> int:
    """Where this answer's body begins in the file."""
    if rng.status == 206:
        m = re.match(r"bytes (\d+)-\d+/(\d+|\*)$", rng.headers.get("content-range", ""))
        if not m:
            raise HubError(f"{rng.url}: a 206 answer without a usable Content-Range")
        return int(m.group(1))
    return 0


def fetch(url: str, target: str | os.PathLike, *, size: int | None = None, sha256: str | None = None,
          headers: dict[str, str] | None = None, progress: Progress | None = None, retries: int = RETRIES) -> Fetched:
    """Download ``url`` to ``target`` (see the module docstring). ``size``/``sha256``: what a listing published
    (else the answer's ``X-Linked-Size``/``X-Linked-Etag``). An existing complete ``target`` is checked, not
    fetched again, when a sha256 is known. ``retries``: dropped connections resumed within this call."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target):
        return _fetch(url, target, size, sha256, headers, progress, retries)


def _fetch(url: str, target: Path, size: int | None, sha256: str | None, headers: dict[str, str] | None,
           progress: Progress | None, retries: int) -> Fetched:
    part, meta_path = partial_path(target), _meta_path(target)
    if target.is_file() and sha256 and (size is None or target.stat().st_size == size):
        got = _hash_file(target, target.stat().st_size).hexdigest()
        if got == sha256:
            return Fetched(target, target.stat().st_size, got, True, target.stat().st_size, 0)
    try:
        meta = json.loads(meta_path.read_text()) if part.exists() else {}
    except (OSError, ValueError):
        meta = {}
    if meta.get("url") != url or (sha256 and meta.get("sha256") not in (None, sha256)):
        meta, have = {}, 0
    else:
        have = part.stat().st_size if part.exists() else 0
    resumed_from: int | None = None     # where the first answer this call got began (0: from the start)
    downloaded, attempt = 0, 0
    hasher, hashed = None, -1           # the sha256 of the partial file's first `hashed` bytes
    while True:
        send = dict(headers or {})
        if have and meta.get("etag"):
            send["Range"], send["If-Range"] = f"bytes={have}-", meta["etag"]
        elif have:
            send["Range"] = f"bytes={have}-"
        try:
            with open_url(url, headers=send, accept=(416,) if have else ()) as r:
                if r.status == 416 and have:       # nothing left to send: the partial file is whole
                    break
                start = _start(r, have)
                if start not in (0, have):
                    raise HubError(f"{url}: asked for bytes from {have}, got them from {start}")
                have = start
                resumed_from = start if resumed_from is None else resumed_from
                total = size or r.size
                sha256 = sha256 or r.sha256
                meta = {"url": url, "etag": r.etag, "size": total, "sha256": sha256}
                meta_path.write_text(json.dumps(meta))
                if hashed != have:
                    hasher = _hash_file(part, have) if have else hashlib.sha256()
                    hashed = have
                with open(part, "r+b" if have and part.exists() else "wb") as f:
                    f.seek(have)
                    f.truncate()
                    if progress:
                        progress(have, total)
                    while chunk := r.body.read(CHUNK):
                        f.write(chunk)
                        hasher.update(chunk)
                        hashed += len(chunk)
                        have += len(chunk)
                        downloaded += len(chunk)
                        if progress:
                            progress(have, total)
                    f.flush()
                    os.fsync(f.fileno())
                if total is not None and have < total:
                    raise ConnectionError(f"connection closed at byte {have} of {total}")
            break
        except (ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException, HubError) as exc:
            if isinstance(exc, HubError) and "cannot connect" not in str(exc):
                raise                       # an HTTP error or a bad answer: not a dropped connection
            attempt += 1
            if attempt > retries:
                raise HubError(f"{url}: download interrupted at byte {have} ({exc}); run the command again "
                               f"to resume from there") from None
    total = meta.get("size")
    if total is not None and have != total:
        _discard(part, meta_path)
        raise HubError(f"{url}: got {have} bytes, the host says the file has {total}; the partial download was removed")
    digest = (hasher.hexdigest() if hasher is not None and hashed == have else _hash_file(part, have).hexdigest())
    sha256 = meta.get("sha256") or sha256
    if sha256 and digest != sha256:
        _discard(part, meta_path)
        raise HubError(f"{url}: sha256 mismatch: the host publishes {sha256}, the {have} bytes received hash "
                       f"to {digest}; the download was removed (nothing was written under {target.name})")
    os.replace(part, target)
    meta_path.unlink(missing_ok=True)
    _fsync_dir(target.parent)
    return Fetched(target, have, digest, bool(sha256), resumed_from or 0, downloaded)


def _discard(part: Path, meta: Path) -> None:
    part.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
