"""``pull`` a model by Hugging Face name or URL into a store folder, as a stream of Ollama's progress events.

`Pull(source, store).events()` yields Ollama's ``/api/pull`` lines: ``{"status": "pulling manifest"}``, per file
``{"status": "downloading <digest>", "digest", "total", "completed"}`` (the digest is ``sha256:<hex>`` when the
host publishes it, else the file name), ``{"status": "verifying sha256 digest"}``; then `result` names the model
and its first file. Registering the name (``writing manifest``, ``success``) is the caller's step: the registry
lives above this package. Files land in ``STORE/hub/<host>/<owner>/<repo>/`` (URLs: ``STORE/hub/<host>/<path>``)
under their own names, so a split set's shards stay together as llama.cpp wants them.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import huggingface as hf
from .download import RETRIES, Fetched, fetch
from .http import HubError, open_url

EVENT_EVERY_S = 0.2
_SAFE = re.compile(r"[^A-Za-z0-9._\-]")


@dataclass
class PullResult:
    name: str                 # the name to register (hf.co/owner/repo:quant, or the file's stem)
    path: Path                # the model's first file
    files: list[Fetched]


def _segment(s: str) -> str:
    s = _SAFE.sub("_", unquote(s))
    if s in ("", ".", ".."):
        raise HubError(f"unusable path segment {s!r}")
    return s


def is_remote(source: str) -> bool:
    """A name this package pulls: ``hf.co/...``/``huggingface.co/...`` or an http(s) URL."""
    s = source.strip().lower()
    return s.startswith(("http://", "https://")) or s.split("/", 1)[0] in hf.HOSTS


def url_model_name(url: str) -> str:
    """The registry name for a plain URL: the file's stem (a split set's prefix), lower case."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    m = hf.SPLIT_NAME.match(name)
    stem = m["prefix"] if m else name.removesuffix(".gguf")
    stem = re.sub(r"\.{2,}", ".", re.sub(r"[^a-z0-9._\-]", "-", stem.lower())).strip("-._") or "model"
    return stem


def remote_files(source: str, headers: dict[str, str] | None = None) -> tuple[str, str, list[hf.RemoteFile], Path]:
    """(model name, host, files to fetch, store sub-folder) for a Hugging Face name or a URL."""
    name = hf.parse_name(source)
    if name is not None:
        quant, files = hf.resolve(name)
        model = f"hf.co/{name.repo}:{quant}".lower() if name.quant is None else name.model_name
        owner, repo = name.repo.split("/")
        return model, "hf.co", files, Path("hf.co") / _segment(owner) / _segment(repo)
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{source!r}: not a Hugging Face name (hf.co/OWNER/REPO[:QUANT]) or an http(s) URL of a .gguf "
                         "file (Hypura reaches no Ollama registry; models pulled with `ollama` are served as they are)")
    urls = hf.split_urls(source)
    files = [hf.RemoteFile(u, unquote(urlsplit(u).path.rsplit("/", 1)[-1])) for u in urls]
    folder = Path(_segment(parts.netloc)).joinpath(*[_segment(s) for s in parts.path.split("/")[:-1] if s])
    return url_model_name(source), parts.netloc, files, folder


class Pull:
    """One pull; iterate `events()` to run it. `result` is set when the last file is in place. Setting `cancel`
    (a ``threading.Event``: a server sets it when the client leaves) stops the download at its next chunk; the
    partial file stays for the next pull to resume."""

    def __init__(self, source: str, store: str | Path, retries: int = RETRIES) -> None:
        self.source, self.store, self.retries = source, Path(store), retries
        self.result: PullResult | None = None
        self.cancel = threading.Event()

    def events(self) -> Iterator[dict]:
        yield {"status": "pulling manifest"}
        headers = hf.auth_headers() if hf.parse_name(self.source) else {}
        model, _host, files, folder = remote_files(self.source, headers)
        if not all(f.name.lower().endswith(".gguf") for f in files):
            raise HubError(f"{self.source}: not a .gguf file")
        fetched = []
        for f in files:
            fetched.append((yield from self._one(f, self.store / "hub" / folder / _segment(f.name), headers)))
            yield {"status": "verifying sha256 digest"}
        self.result = PullResult(model, fetched[0].path, fetched)

    def _one(self, f: hf.RemoteFile, target: Path, headers: dict[str, str]):  # noqa: ANN202 - a sub-generator
        size, sha = f.size, f.sha256
        if size is None or sha is None:        # what the host says about this file, on its redirect
            try:
                with open_url(f.url, method="HEAD", headers=headers) as r:
                    size, sha = size or r.size, sha or r.sha256
            except HubError:                   # a host without HEAD: the GET's answer says as much
                pass
        digest = f"sha256:{sha}" if sha else f.name
        events: queue.Queue = queue.Queue()
        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            if self.cancel.is_set():
                raise HubError("pull cancelled")
            now = time.monotonic()
            if now - last[0] >= EVENT_EVERY_S or (total is not None and done >= total):
                last[0] = now
                events.put(("progress", done, total))

        def work() -> None:
            try:
                events.put(("done", fetch(f.url, target, size=size, sha256=sha, headers=headers,
                                          progress=progress, retries=self.retries)))
            except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
                events.put(("error", exc))

        thread = threading.Thread(target=work, name=f"hypura-pull-{f.name}", daemon=True)
        thread.start()
        try:
            while True:
                kind, *rest = events.get()
                if kind == "progress":
                    done, total = rest
                    yield {"status": f"downloading {digest}", "digest": digest, "total": total or size or 0,
                           "completed": done}
                elif kind == "error":
                    raise rest[0]
                else:
                    return rest[0]
        finally:
            if thread.is_alive():     # the consumer left (a closed HTTP stream): stop the download
                self.cancel.set()
            thread.join()
