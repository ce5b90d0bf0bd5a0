"""Where hl7bus keeps local state when a config leaves the place unset."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """``$XDG_CACHE_HOME/hl7bus``, or ``~/.cache/hl7bus`` when that is unset."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "hl7bus"
