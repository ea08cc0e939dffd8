"""Hugging Face model names (``hf.co/OWNER/REPO[:QUANT]``) → the GGUF file(s) to fetch.

As for ``ollama pull hf.co/...``: ``hf.co`` and ``huggingface.co`` are the same host; the tag names a
quantization, matched without regard to case against the file names of the repository (``Q4_K_M`` picks
``Model-Q4_K_M.gguf``, or every shard of ``Q4_K_M/Model-Q4_K_M-00001-of-00003.gguf``; ``UD-Q4_K_XL`` picks
``Model-UD-Q4_K_XL.gguf``; between several matches the shortest name); no tag (or
``latest``) means ``Q4_K_M``, and when the repository has no such file the first of `FALLBACK` it has.
Projector files (``mmproj-*``) are never the model. The listing is the Hub's
``GET {HF_ENDPOINT}/api/models/{repo}/tree/{rev}?recursive=true`` (each entry ``path``, ``size`` and, for LFS
files, ``lfs.oid`` = the sha256); files come from ``{HF_ENDPOINT}/{repo}/resolve/{rev}/{path}``.
``HF_ENDPOINT`` (default ``https://huggingface.co``) and ``HF_TOKEN`` are read as ``huggingface_hub`` reads them.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote

from hypura_placement.gguf_file import SPLIT_NAME

from .http import HubError, get_json

HOSTS = ("hf.co", "huggingface.co")
DEFAULT_QUANT = "Q4_K_M"
FALLBACK = ("Q4_K_M", "Q4_K_S", "Q4_0", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_XS", "BF16", "F16")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*/[A-Za-z0-9][A-Za-z0-9._\-]*$")
_QUANT = re.compile(r"(?<![A-Za-z0-9])(I?Q\d+_[A-Z0-9_]*?|BF16|F16|F32|MXFP4(?:_MOE)?)(?=[-.]|$)", re.I)


@dataclass(frozen=True)
class HFName:
    repo: str          # OWNER/REPO as the Hub spells it
    quant: str | None  # None: the default choice
    revision: str = "main"

    @property
    def model_name(self) -> str:
        """The name the model is registered under: ``hf.co/owner/repo:quant`` (lower case, as Ollama shows it)."""
        return f"hf.co/{self.repo}:{(self.quant or DEFAULT_QUANT)}".lower()


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its URL, the path in the repository, and what the host publishes about it."""
    url: str
    path: str
    size: int | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def auth_headers() -> dict[str, str]:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def parse_name(text: str) -> HFName | None:
    """``hf.co/OWNER/REPO[:QUANT]`` (also ``huggingface.co/``, ``https://hf.co/...``) → HFName; None when the text
    is not a Hugging Face name; ValueError when it is one but malformed."""
    t = text.strip()
    for scheme in ("https://", "http://"):
        if t.lower().startswith(scheme):
            t = t[len(scheme):]
    host, _, rest = t.partition("/")
    if host.lower() not in HOSTS:
        return None
    repo, _, tag = rest.partition(":")
    repo = repo.rstrip("/")
    if not _REPO.match(repo):
        raise ValueError(f"{text!r}: want hf.co/OWNER/REPO[:QUANT]")
    if tag and not re.fullmatch(r"[A-Za-z0-9_.\-]+", tag):
        raise ValueError(f"{text!r}: bad quantization tag {tag!r}")
    return HFName(repo, None if tag.lower() in ("", "latest") else tag)


def _stem(path: str) -> str:
    """The file name without ``.gguf`` and without a split set's ``-0000K-of-0000N``."""
    name = path.rsplit("/", 1)[-1]
    m = SPLIT_NAME.match(name)
    return m["prefix"] if m else name.removesuffix(".gguf")


def quant_of(path: str) -> str | None:
    """The quantization a file name carries (upper case), e.g. ``Q4_K_M`` for ``x/Model-Q4_K_M-00001-of-00002.gguf``."""
    found = _QUANT.findall(_stem(path))
    return found[-1].upper() if found else None


def list_files(name: HFName) -> list[dict]:
    """The repository's file entries (every folder level)."""
    url = f"{endpoint()}/api/models/{name.repo}/tree/{quote(name.revision, safe='')}?recursive=true"
    data = get_json(url, auth_headers())
    if not isinstance(data, list):
        raise HubError(f"{url}: unexpected listing")
    return [e for e in data if isinstance(e, dict) and e.get("type", "file") == "file" and isinstance(e.get("path"), str)]


def choose(paths: list[str], quant: str | None) -> tuple[str, list[str]]:
    """(quant, the file paths to fetch in order) for ``quant`` (None: the default) among ``paths``.
    A split set gives every shard; between separate files of one quant the shortest name wins."""
    ggufs = [p for p in paths if p.lower().endswith(".gguf") and not p.rsplit("/", 1)[-1].lower().startswith("mmproj")]
    by_quant: dict[str, list[str]] = {}
    for p in ggufs:
        q = quant_of(p)
        if q:
            by_quant.setdefault(q, []).append(p)
    if quant is None:
        want = next((q for q in FALLBACK if q in by_quant), None) or (sorted(by_quant)[0] if by_quant else None)
        if want is None:
            if len(ggufs) == 1:
                return DEFAULT_QUANT, ggufs
            raise HubError(f"no GGUF file with a quantization in its name (files: {', '.join(ggufs) or 'none'})")
    else:
        want = quant.upper()
    token = re.compile(r"(?<![A-Z0-9])" + re.escape(want) + r"(?=[-.]|$)")   # UD-Q4_K_XL too; Q4_K is not Q4_K_M
    files = [p for p in ggufs if token.search(_stem(p).upper())]
    if not files:
        have = ", ".join(sorted(by_quant)) or "none"
        raise HubError(f"no {want} file in the repository (quantizations there: {have})")
    sets: dict[str, list[str]] = {}
    for p in files:
        m = SPLIT_NAME.match(p.rsplit("/", 1)[-1])
        key = p.rsplit("/", 1)[0] + "/" + m["prefix"] if m and "/" in p else (m["prefix"] if m else p)
        sets.setdefault(key, []).append(p)
    best = min(sets.values(), key=lambda group: (len(group[0]), group[0]))
    return want, sorted(best)


def resolve(name: HFName) -> tuple[str, list[RemoteFile]]:
    """(quant, the files to fetch, with the sizes and sha256s the listing publishes)."""
    entries = {e["path"]: e for e in list_files(name)}
    quant, paths = choose(list(entries), name.quant)
    out = []
    for p in paths:
        e = entries[p]
        lfs = e.get("lfs") if isinstance(e.get("lfs"), dict) else {}
        sha = lfs.get("oid") or lfs.get("sha256")
        size = lfs.get("size", e.get("size"))
        url = f"{endpoint()}/{name.repo}/resolve/{quote(name.revision, safe='')}/{quote(p)}"
        out.append(RemoteFile(url, p, int(size) if isinstance(size, int) else None,
                              sha if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) else None))
    check_split(out)
    return quant, out


def check_split(files: list[RemoteFile]) -> None:
    """A split set must be complete: shards 1..N of N, each once."""
    m = SPLIT_NAME.match(files[0].name)
    if not m:
        if len(files) > 1:
            raise HubError(f"{len(files)} files but not a split set: {', '.join(f.path for f in files)}")
        return
    count = int(m["count"])
    nos = [int(SPLIT_NAME.match(f.name)["no"]) for f in files if SPLIT_NAME.match(f.name)]
    if nos != list(range(1, count + 1)):
        raise HubError(f"incomplete split set {m['prefix']}: shards {nos} of {count}")


def split_urls(url: str) -> list[str]:
    """A plain URL of a split set's first shard → every shard's URL (one URL when it is not a split name)."""
    head, _, tail = url.rpartition("/")
    name, sep, query = tail.partition("?")
    m = SPLIT_NAME.match(name)
    if not m or int(m["no"]) != 1:
        return [url]
    count = int(m["count"])
    return [f"{head}/{m['prefix']}-{i:05d}-of-{count:05d}.gguf{sep}{query}" for i in range(1, count + 1)]
