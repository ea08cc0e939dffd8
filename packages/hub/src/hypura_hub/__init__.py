"""Model files over HTTP (stdlib only): Hugging Face names to GGUF files, resumable downloads verified by
size and sha256, and GGUF headers read with Range requests so a model can be planned before it is fetched."""
from .download import Fetched, fetch, partial_path
from .http import HubError, Response, open_url
from .huggingface import HFName, RemoteFile, choose, parse_name, quant_of, split_urls
from .pull import Pull, PullResult, is_remote, remote_files
from .remote_header import RemoteHeader, read_remote_header

__all__ = ["Fetched", "HFName", "HubError", "Pull", "PullResult", "RemoteFile", "RemoteHeader", "Response", "choose",
           "fetch", "is_remote", "open_url", "parse_name", "partial_path", "quant_of", "read_remote_header",
           "remote_files", "split_urls"]
