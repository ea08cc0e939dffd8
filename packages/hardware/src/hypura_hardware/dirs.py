"""Per-user directories (XDG on Linux and other Unixes, ``~/Library`` on macOS)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "hypura"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    base = Path(value) if value and os.path.isabs(value) else Path.home() / fallback
    return base / APP


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hypura`` or ``~/.cache/hypura``; macOS ``~/Library/Caches/hypura``."""
    if sys.platform == "darwin" and not os.environ.get("XDG_CACHE_HOME"):
        return Path.home() / "Library/Caches" / APP
    return _xdg("XDG_CACHE_HOME", ".cache")


def user_data_dir() -> Path:
    """``$XDG_DATA_HOME/hypura`` or ``~/.local/share/hypura``."""
    return _xdg("XDG_DATA_HOME", ".local/share")


def user_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/hypura`` or ``~/.config/hypura``."""
    return _xdg("XDG_CONFIG_HOME", ".config")


def default_models_dir() -> Path:
    """Where models live unless configured: ``<user data dir>/models``."""
    return user_data_dir() / "models"
