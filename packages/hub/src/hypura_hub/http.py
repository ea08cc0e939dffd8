"""The few HTTP exchanges a model host needs, over ``urllib`` (proxies from the environment), redirects
followed by hand so that the headers of every hop are kept.

Hugging Face answers ``/{repo}/resolve/{rev}/{file}`` with a redirect to a CDN and puts what it knows of the
file on that redirect (``X-Linked-Size``, ``X-Linked-Etag`` = the LFS sha256, ``X-Repo-Commit``); the CDN's own
answer carries only its ETag. `Response.headers` merges every hop (the first hop that names a header wins for
the ``X-Linked-*`` ones). An ``Authorization`` header is dropped when a redirect leaves the first host.
"""
from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from typing import IO
from urllib.parse import urljoin, urlsplit

USER_AGENT = "hypura/0.1 (+https://github.com/hypura)"
TIMEOUT_S = 60.0
MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)
_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-f]{64})"?$')


class HubError(OSError):
    """A model host refused, the answer was not what was asked for, or a file failed its check."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None    # urllib then raises HTTPError with the 3xx answer: followed in `open_url`


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass
class Response:
    """An open answer: ``status``, the final ``url``, headers of every hop (``headers``: lower-case names,
    the final hop's value unless an earlier hop set an ``x-linked-*`` one), and the body stream ``body``."""
    status: int
    url: str
    headers: dict[str, str]
    body: IO[bytes]
    hops: list[str] = field(default_factory=list)
    final_headers: dict[str, str] = field(default_factory=dict)   # the answering server's own (lower-case)

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sha256(self) -> str | None:
        """The content's sha256 when the host publishes it (``X-Linked-Etag``, or an ETag of 64 hex digits)."""
        for key in ("x-linked-etag", "etag"):
            m = _SHA256.match(self.headers.get(key, "").strip().lower())
            if m:
                return m.group(1)
        return None

    @property
    def size(self) -> int | None:
        """The whole file's size: ``X-Linked-Size``, the total of a ``Content-Range``, or ``Content-Length``
        of a full (200) answer."""
        h = self.headers
        if h.get("x-linked-size", "").isdigit():
            return int(h["x-linked-size"])
        m = re.match(r"bytes \d+-\d+/(\d+)$", h.get("content-range", ""))
        if m:
            return int(m.group(1))
        if self.status == 200 and h.get("content-length", "").isdigit():
            return int(h["content-length"])
        return None

    @property
    def etag(self) -> str | None:
        """The answering server's validator, for ``If-Range`` (a CDN's ETag is not the Hub's X-Linked-Etag)."""
        return self.final_headers.get("etag")


def _merge(into: dict[str, str], msg: Message) -> None:
    for k, v in msg.items():
        k = k.lower()
        if k.startswith("x-linked-") and k in into:
            continue
        into[k] = v


def open_url(url: str, method: str = "GET", headers: dict[str, str] | None = None,
             timeout: float = TIMEOUT_S, accept: tuple[int, ...] = ()) -> Response:
    """Send one request and follow redirects; raise `HubError` for an HTTP error status (with the URL and
    status) other than those in ``accept``, a loop of redirects, or a host that cannot be reached."""
    first_host = urlsplit(url).netloc
    send = {"User-Agent": USER_AGENT, **(headers or {})}
    merged: dict[str, str] = {}
    hops = [url]
    for _ in range(MAX_REDIRECTS + 1):
        if urlsplit(url).scheme not in ("http", "https"):
            raise HubError(f"{url}: only http and https URLs can be fetched")
        hop = dict(send)
        if urlsplit(url).netloc != first_host:
            hop = {k: v for k, v in hop.items() if k.lower() != "authorization"}
        req = urllib.request.Request(url, method=method, headers=hop)
        try:
            resp = _opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in _REDIRECTS and exc.headers.get("Location"):
                _merge(merged, exc.headers)
                exc.close()
                url = urljoin(url, exc.headers["Location"])
                hops.append(url)
                if exc.code == 303:
                    method = "GET"
                continue
            if exc.code in accept:
                _merge(merged, exc.headers)
                return Response(exc.code, url, merged, exc, hops, {k.lower(): v for k, v in exc.headers.items()})
            detail = exc.headers.get("X-Error-Message") or exc.reason
            exc.close()
            raise HubError(f"{url}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HubError(f"{url}: cannot connect: {reason}") from None
        _merge(merged, resp.headers)
        return Response(resp.status, url, merged, resp, hops, {k.lower(): v for k, v in resp.headers.items()})
    raise HubError(f"{hops[0]}: more than {MAX_REDIRECTS} redirects")


def get_json(url: str, headers: dict[str, str] | None = None):  # noqa: ANN201 - JSON of any shape
    import json

    with open_url(url, headers={"Accept": "application/json", **(headers or {})}) as r:
        data = r.body.read(64 << 20)
    try:
        return json.loads(data)
    except ValueError:
        raise HubError(f"{url}: the answer is not JSON") from None
