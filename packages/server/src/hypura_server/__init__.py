"""Ollama- and OpenAI-compatible HTTP API (Flask) over the Hypura engine.

`create_app(settings)` builds the Flask app (one blueprint per API family); `serve(cfg)` runs it
under waitress for `hypura serve`.
"""
from .app import create_app
from .manager import FairLock, ModelManager
from .state import Settings
from .version import __version__
from .wsgi import make_server, serve

__all__ = ["FairLock", "ModelManager", "Settings", "create_app", "make_server", "serve"]
