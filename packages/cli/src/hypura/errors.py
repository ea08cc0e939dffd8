"""Errors a user can cause (bad file, unknown model, impossible budget): one line on stderr, exit status 2."""
from __future__ import annotations

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, LookupError)
