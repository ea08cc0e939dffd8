"""A model named by URL or Hugging Face name, read without its weights (for `hypura plan` and `inspect`)."""
from __future__ import annotations

import dataclasses


def is_remote(model: str) -> bool:
    from hypura_hub import is_remote as hub_is_remote

    return hub_is_remote(model)


def remote_model_info(source: str):
    """(ModelInfo of the whole model, RemoteHeader): only the header bytes of each file are fetched."""
    from hypura_hub import read_remote_header, remote_files
    from hypura_hub.huggingface import auth_headers, parse_name
    from hypura_placement import model_info_from_header

    headers = auth_headers() if parse_name(source) else {}
    _model, _host, files, _folder = remote_files(source, headers)
    remote = read_remote_header([f.url for f in files], headers)
    return dataclasses.replace(model_info_from_header(remote.header), path=source), remote


def fetched_line(remote) -> str:
    """``fetched 4.1 MiB of 241 MiB (header only: 3 requests, 1 file)``."""
    from hypura_placement import format_size

    total = sum(remote.sizes)
    files = f"{len(remote.urls)} file{'s' if len(remote.urls) > 1 else ''}"
    return (f"fetched {format_size(remote.fetched)} of {format_size(total)} ({remote.fetched} bytes; header only: "
            f"{remote.requests} range requests, {files})")
