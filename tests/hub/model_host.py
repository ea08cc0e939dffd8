"""A model host on loopback that answers as Hugging Face and its CDN do, written for the tests.

- ``GET /api/models/OWNER/REPO/tree/main?recursive=true``: the listing (``type``, ``path``, ``size``, ``oid``,
  ``lfs: {oid: sha256, size}``) of the files put in the repo;
- ``GET|HEAD /OWNER/REPO/resolve/main/PATH``: ``302`` to ``/cdn/<sha256>`` with ``X-Linked-Size``,
  ``X-Linked-Etag`` (the sha256, quoted) and ``X-Repo-Commit``, as the Hub does;
- ``GET|HEAD /cdn/<key>`` and ``/files/NAME`` (a plain file URL, no redirect): the bytes, ``ETag``,
  ``Accept-Ranges: bytes``, one ``Range: bytes=a-b`` / ``a-`` (``206`` + ``Content-Range``, ``416`` past the
  end), ``If-Range`` (a stale validator gets the whole file, ``200``).
Faults for the tests: ``cut_after[key] = n`` closes the next answer for ``key`` after ``n`` body bytes (once);
``corrupt.add(key)`` serves flipped bytes (the published sha256 no longer matches); ``etags[key]`` overrides a
validator; ``slow[key] = s`` sleeps ``s`` seconds after each 64 KiB; ``cdn_elsewhere`` redirects to ``localhost`` (another host). Every request is logged (``log``: method, path, Range, If-Range) and body bytes are counted per key.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class ModelHost:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Path]] = {}     # "owner/repo" -> {path in repo: file}
        self.blobs: dict[str, Path] = {}                # cdn key (sha256) or plain file name -> file
        self.sha: dict[Path, str] = {}
        self.cut_after: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.etags: dict[str, str] = {}
        self.slow: dict[str, float] = {}
        self.log: list[dict] = []
        self.sent: dict[str, int] = defaultdict(int)
        self.ranges_ignored = False
        self.cdn_elsewhere = False      # redirect to http://localhost:PORT/cdn/... (another host name)
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                host._serve(self, head=True)

            def do_GET(self) -> None:
                host._serve(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ModelHost:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- content -----------------------------------------------------------------------------
    def _digest(self, path: Path) -> str:
        if path not in self.sha:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            self.sha[path] = h.hexdigest()
        return self.sha[path]

    def add_repo_file(self, repo: str, path_in_repo: str, file: Path) -> str:
        """Put ``file`` at ``path_in_repo`` of ``repo``; returns its sha256."""
        self.repos.setdefault(repo, {})[path_in_repo] = Path(file)
        sha = self._digest(Path(file))
        self.blobs[sha] = Path(file)
        return sha

    def add_plain_file(self, name: str, file: Path) -> str:
        self.blobs[name] = Path(file)
        return f"{self.url}/files/{name}"

    def requests_for(self, key: str) -> list[dict]:
        return [r for r in self.log if r["key"] == key]

    # -- serving -----------------------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        entry = {"method": h.command, "path": path, "range": h.headers.get("Range"),
                 "if_range": h.headers.get("If-Range"), "authorization": h.headers.get("Authorization"),
                 "host": h.headers.get("Host"), "key": None}
        self.log.append(entry)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/main", path)
        if m:
            files = self.repos.get(m.group(1))
            if files is None:
                return self._send(h, 404, b'{"error":"Repository not found"}', {"Content-Type": "application/json"})
            listing = [{"type": "file", "path": "README.md", "size": 5, "oid": "0" * 40}]
            for p, f in files.items():
                sha = self._digest(f)
                size = f.stat().st_size
                listing.append({"type": "file", "path": p, "size": size, "oid": "1" * 40,
                                "lfs": {"oid": sha, "size": size, "pointerSize": 134}})
            return self._send(h, 200, json.dumps(listing).encode(), {"Content-Type": "application/json"}, head)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/main/(.+)", path)
        if m:
            f = self.repos.get(m.group(1), {}).get(m.group(2))
            if f is None:
                return self._send(h, 404, b"Entry not found", {}, head)
            sha = self._digest(f)
            cdn = f"http://localhost:{self.httpd.server_address[1]}" if self.cdn_elsewhere else ""
            return self._send(h, 302, b"", {"Location": f"{cdn}/cdn/{sha}?signed=1", "X-Linked-Size": str(f.stat().st_size),
                                            "X-Linked-Etag": f'"{sha}"', "X-Repo-Commit": "c" * 40}, head)
        m = re.fullmatch(r"/(?:cdn|files)/([^/]+)", path)
        if m and m.group(1) in self.blobs:
            return self._file(h, m.group(1), head, entry)
        return self._send(h, 404, b"not found", {}, head)

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict, head: bool = False) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _file(self, h: BaseHTTPRequestHandler, key: str, head: bool, entry: dict) -> None:
        entry["key"] = key
        f = self.blobs[key]
        size = f.stat().st_size
        etag = self.etags.get(key, f'"{self._digest(f)[:32]}"')
        start, end, status = 0, size - 1, 200
        rng, if_range = h.headers.get("Range"), h.headers.get("If-Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m and not self.ranges_ignored and (if_range is None or if_range == etag):
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            if start >= size:
                return self._send(h, 416, b"", {"Content-Range": f"bytes */{size}"}, head)
            status = 206
        h.send_response(status)
        h.send_header("Content-Length", str(end - start + 1))
        h.send_header("ETag", etag)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Type", "application/octet-stream")
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if head:
            return
        cut = self.cut_after.pop(key, None)
        left, pos = end - start + 1, start
        with open(f, "rb") as fh:
            fh.seek(start)
            while left > 0:
                n = min(1 << 16, left) if cut is None else min(1 << 16, left, cut)
                chunk = fh.read(n)
                if key in self.corrupt:
                    chunk = bytes(b ^ 0xFF for b in chunk)
                try:
                    h.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                self.sent[key] += len(chunk)
                if key in self.slow:
                    time.sleep(self.slow[key])
                left -= len(chunk)
                pos += len(chunk)
                if cut is not None:
                    cut -= len(chunk)
                    if cut <= 0:
                        h.wfile.flush()
                        h.close_connection = True
                        h.connection.shutdown(2)
                        return
