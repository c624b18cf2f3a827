"""A1111 model hashes: sha256 of the file (``Model hash:`` = first 10 hex), cached by path + mtime + size."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def short_hash(sha256: str) -> str:
    return sha256[:10]


class HashCache:
    """JSON file {absolute path: {mtime, size, sha256}}; a changed file is re-hashed, an unchanged never."""

    def __init__(self, cache_path: Path | None):
        self.cache_path = Path(cache_path) if cache_path else None
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        if self.cache_path and self.cache_path.is_file():
            try:
                self._entries = json.loads(self.cache_path.read_text()).get("hashes", {})
            except (OSError, ValueError):
                self._entries = {}  # a corrupt cache only costs re-hashing

    def sha256(self, path: Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        key = str(path)
        with self._lock:
            entry = self._entries.get(key)
            if entry and entry.get("mtime") == stat.st_mtime and entry.get("size") == stat.st_size:
                return entry["sha256"]
        digest = sha256_file(path)
        with self._lock:
            self._entries[key] = {"mtime": stat.st_mtime, "size": stat.st_size, "sha256": digest}
            self._save()
        return digest

    def cached(self, path: Path) -> str | None:
        """The hash if known and still valid, without reading the file."""
        path = Path(path).resolve()
        try:
            stat = path.stat()
        except OSError:
            return None
        entry = self._entries.get(str(path))
        if entry and entry.get("mtime") == stat.st_mtime and entry.get("size") == stat.st_size:
            return entry["sha256"]
        return None

    def _save(self) -> None:
        if not self.cache_path:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"hashes": self._entries}, indent=1))
        tmp.replace(self.cache_path)
