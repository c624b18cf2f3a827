"""A1111's `modules.cache`: named sections of a JSON cache in the data dir, for extensions' own data.

Ours live in `<data dir>/cache-extensions.json` (the app's `cache.json` holds the model hashes, written by
its own hash cache). `cache(name)` is a dict kept in memory; `dump_cache()` writes every section.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdwebui.config import paths as _paths
from sdwebui.config.options import write_json_atomic

_lock = threading.Lock()
_sections: dict[str, dict[str, Any]] | None = None
_loaded_from: Path | None = None


def cache_filename() -> Path:
    return Path(_paths.data_path) / "cache-extensions.json"


def _data() -> dict[str, dict[str, Any]]:
    global _sections, _loaded_from
    path = cache_filename()
    if _sections is None or _loaded_from != path:
        try:
            loaded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            loaded = {}  # a corrupt cache only costs recomputing
        _sections, _loaded_from = (loaded if isinstance(loaded, dict) else {}), path
    return _sections


def cache(subsection: str) -> dict[str, Any]:
    """The section's dict (created empty); changes are kept and written by `dump_cache()`."""
    with _lock:
        return _data().setdefault(subsection, {})


def dump_cache() -> None:
    with _lock:
        write_json_atomic(cache_filename(), _data())


def cached_data_for_file(subsection: str, title: str, filename: str, func: Callable[[], Any]) -> Any:
    """`func()` for a file, cached under `title` until the file's mtime changes (A1111)."""
    section = cache(subsection)
    mtime = os.path.getmtime(filename)
    entry = section.get(title)
    if entry and entry.get("mtime", 0) >= mtime and "value" in entry:
        return entry["value"]
    value = func()
    if value is None:
        return None
    section[title] = {"mtime": mtime, "value": value}
    dump_cache()
    return value
