"""Ollama- and OpenAI-compatible HTTP API (Flask) over the Hypura engine.

`create_app(settings)` builds the Flask app (one blueprint per API family); `serve(cfg)` runs it
under waitress for `hypura serve`.
"""
__version__ = "0.1.0"

from .app import create_app  # noqa: E402
from .manager import FairLock, ModelManager  # noqa: E402
from .state import Settings  # noqa: E402
from .wsgi import make_server, serve  # noqa: E402

__all__ = ["FairLock", "ModelManager", "Settings", "create_app", "make_server", "serve"]
