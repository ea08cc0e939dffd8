"""A remote GGUF's header without its weights: prefixes fetched with ``Range`` until the header parses.

Each file (every shard of a split set) is read from byte 0 in growing pieces — `FIRST` bytes, then as many
again as are already held — into a temporary file named like the remote one, until the repository's own reader
(``hypura_placement.gguf_file``) parses it; the pieces are appended, never fetched twice. So a file costs at
most ``max(FIRST, 2 x its header)`` bytes, whatever the size of its weights. The header is then the model's:
the shards joined and checked as for local files, and each file's size set to the remote one (from
``Content-Range``), so the planner sees the whole model.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hypura_placement.gguf_file import GGUFHeader, GGUFTruncated, read_file_header, read_header

from .http import HubError, open_url

FIRST = 1 << 20             # a small model's header fits; a 262k-token vocabulary needs a few MB
MAX_HEADER = 1 << 30        # give up beyond this: no GGUF header is this long


@dataclass
class RemoteHeader:
    header: GGUFHeader
    urls: list[str]
    sizes: list[int]             # each file's size on the host
    fetched: int                 # body bytes received, every request counted
    requests: int


def _fetch_range(url: str, start: int, end: int, headers: dict[str, str]) -> tuple[bytes, int | None]:
    """Bytes ``start..end-1`` of ``url`` (fewer at its end) and the remote file's size."""
    with open_url(url, headers={**headers, "Range": f"bytes={start}-{end - 1}"}) as r:
        if r.status == 206:
            return r.body.read(end - start), r.size
        if r.status == 200:          # the host ignores Range: read what was asked for, then hang up
            r.body.read(start)
            return r.body.read(end - start), r.size
        raise HubError(f"{url}: HTTP {r.status} to a Range request")


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
            held, size = 0, None
            with open(path, "wb") as f:
                want = first
                while True:
                    data, size = _fetch_range(url, held, held + want, headers or {})
                    requests += 1
                    fetched += len(data)
                    f.write(data)
                    f.flush()
                    held += len(data)
                    try:
                        read_file_header(path)
                        break
                    except GGUFTruncated:
                        if not data or (size is not None and held >= size):
                            raise HubError(f"{url}: the file ends inside its GGUF header ({held} bytes)") from None
                        if held >= MAX_HEADER:
                            raise HubError(f"{url}: no GGUF header within the first {held} bytes") from None
                        want = held
            sizes.append(size if size is not None else held)
            paths.append(path)
        header = read_header(paths[0])
        for h, size in zip(header.files, sizes):
            h.file_size = size
        if header.shards:
            header.file_size = sizes[0]
    return RemoteHeader(header, list(urls), sizes, fetched, requests)
