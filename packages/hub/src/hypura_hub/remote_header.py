"""A remote GGUF's header without its weights: prefixes fetched with ``Range`` until the header parses.

Each file (every shard of a split set) is read from byte 0 in growing pieces — `FIRST` bytes, then as many
again as are already held — into a temporary file named like the remote one, until the repository's own reader
(``hypura_placement.gguf_file``) parses it; the pieces are appended, never fetched twice. So a file costs at
most ``max(FIRST, 2 x its header)`` bytes, whatever the size of its weights. The header is then the model's:
the shards joined and checked as for local files, and each file's size set to the remote one (from
``Content-Range``), so the planner sees the whole model. A host that ignores ``Range`` (``200``) is read up to the end of the piece asked for and hung up
on: its one answer is read on as the pieces grow.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hypura_placement.gguf_file import GGUFHeader, GGUFTruncated, read_file_header, read_header

from .http import HubError, Response, open_url

FIRST = 256 << 10           # a small model's header fits; a 262k-token vocabulary needs a few MB (5 more requests)
MAX_HEADER = 1 << 30        # give up beyond this: no GGUF header is this long


@dataclass
class RemoteHeader:
    header: GGUFHeader
    urls: list[str]
    sizes: list[int]             # each file's size on the host
    fetched: int                 # body bytes received, every request counted
    requests: int


class _Reader:
    """Pieces of one remote file from byte 0 on: each a Range request; from a host that ignores Range (``200``),
    the one whole-file answer is kept open and read on, then hung up on."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.stream: Response | None = None
        self.size: int | None = None
        self.received = self.requests = 0

    def read(self, start: int, n: int) -> bytes:
        if self.stream is None:
            r = open_url(self.url, headers={**self.headers, "Range": f"bytes={start}-{start + n - 1}"})
            self.requests += 1
            self.size = r.size
            if r.status == 206:
                with r:
                    data = r.body.read(n)
                self.received += len(data)
                return data
            if r.status != 200:
                r.close()
                raise HubError(f"{self.url}: HTTP {r.status} to a Range request")
            self.stream = r
            self.received += len(r.body.read(start))     # (only if an earlier answer was a 206)
        data = self.stream.body.read(n)
        self.received += len(data)
        return data

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def _file_name(url: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name:
        raise HubError(f"{url}: no file name in the URL")
    return name


def read_remote_header(urls: list[str], headers: dict[str, str] | None = None, first: int = FIRST) -> RemoteHeader:
    """The header of the model whose file(s) are ``urls`` (a split set's shards in order)."""
    fetched = requests = 0
    sizes: list[int] = []
    with tempfile.TemporaryDirectory(prefix="hypura-header-") as tmp:
        paths = []
        for url in urls:
            path = Path(tmp) / _file_name(url)
            held, reader = 0, _Reader(url, headers or {})
            try:
                with open(path, "wb") as f:
                    want = first
                    while True:
                        data = reader.read(held, want)
                        f.write(data)
                        f.flush()
                        held += len(data)
                        try:
                            read_file_header(path)
                            break
                        except GGUFTruncated:
                            if not data or (reader.size is not None and held >= reader.size):
                                raise HubError(f"{url}: the file ends inside its GGUF header ({held} bytes)") from None
                            if held >= MAX_HEADER:
                                raise HubError(f"{url}: no GGUF header within the first {held} bytes") from None
                            want = held
            finally:
                reader.close()
                fetched += reader.received
                requests += reader.requests
            size = reader.size
            sizes.append(size if size is not None else held)
            paths.append(path)
        header = read_header(paths[0])
        for h, size in zip(header.files, sizes):
            h.file_size = size
        if header.shards:
            header.file_size = sizes[0]
    return RemoteHeader(header, list(urls), sizes, fetched, requests)
