"""Atomic file writes, shared by every package that keeps files on disk (profile, registry, routing
statistics, the server's model state and blobs): a reader sees the old file or the new one, never a part."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a unique temporary file beside ``path`` (concurrent writers never share one); when the block ends
    normally it replaces ``path`` (``os.replace``), when it raises the temporary file is removed and ``path``
    is left as it was. The parent directory is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: str | os.PathLike, data: Any, **dumps: Any) -> Path:
    """Write ``data`` as JSON (``dumps`` go to ``json.dumps``) to ``path`` with :func:`atomic_write`."""
    with atomic_write(path) as f:
        f.write(json.dumps(data, **dumps) + "\n")
    return Path(path)
