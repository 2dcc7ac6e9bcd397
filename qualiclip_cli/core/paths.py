"""Where qualiclip keeps its files. Resolved lazily (on each call) so tests and users can set env vars late.

- cache_dir(): weights and the results cache. QUALICLIP_HOME, else $XDG_CACHE_HOME/qualiclip, else ~/.cache/qualiclip.
- state_dir(): the journal of file operations (must survive a cache purge). QUALICLIP_HOME/state, else
  $XDG_STATE_HOME/qualiclip, else ~/.local/state/qualiclip.
"""

from __future__ import annotations

import os
from pathlib import Path


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    home = _env_path("QUALICLIP_HOME")
    if home is not None:
        return home
    xdg = _env_path("XDG_CACHE_HOME")
    return (xdg if xdg is not None else Path.home() / ".cache") / "qualiclip"


def state_dir() -> Path:
    home = _env_path("QUALICLIP_HOME")
    if home is not None:
        return home / "state"
    xdg = _env_path("XDG_STATE_HOME")
    return (xdg if xdg is not None else Path.home() / ".local" / "state") / "qualiclip"


def journal_dir() -> Path:
    return state_dir() / "journal"


def results_cache_path() -> Path:
    return cache_dir() / "results.sqlite3"
