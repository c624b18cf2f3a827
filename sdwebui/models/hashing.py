"""A1111 model hashes: sha256 of the file (``Model hash:`` = first 10 hex), cached by path + mtime + size."""

from __future__ import annotations

import hashlib
import json
import os
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
    """JSON file {"hashes": {absolute path: {mtime, size, sha256}}}; a changed file is re-hashed, an unchanged
    never. Other kinds of digest (A1111's "hashes-addnet" for LoRAs) are sections of the same file."""

    def __init__(self, cache_path: Path | None):
        self.cache_path = Path(cache_path) if cache_path else None
        self._lock = threading.Lock()
        self._sections: dict[str, dict[str, dict]] = {}
        if self.cache_path and self.cache_path.is_file():
            try:
                loaded = json.loads(self.cache_path.read_text())
                self._sections = {
                    k: v for k, v in loaded.items() if k.startswith("hashes") and isinstance(v, dict)
                }
            except (OSError, ValueError, AttributeError):
                self._sections = {}  # a corrupt cache only costs re-hashing
        self._entries = self._sections.setdefault("hashes", {})

    def sha256(self, path: Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        key = str(path)
        with self._lock:
            entry = self._entries.get(key)
            if entry and entry.get("mtime") == stat.st_mtime and entry.get("size") == stat.st_size:
                return entry["sha256"]
        digest = sha256_file(path)
        self.store(path, digest, stat=stat)
        return digest

    def cached(self, path: Path, section: str = "hashes") -> str | None:
        """The hash if known and still valid (same size and mtime), without reading the file."""
        path = Path(path).resolve()
        try:
            stat = path.stat()
        except OSError:
            return None
        with self._lock:
            entry = self._sections.get(section, {}).get(str(path))
        if entry and entry.get("mtime") == stat.st_mtime and entry.get("size") == stat.st_size:
            return entry["sha256"]
        return None

    def store(
        self, path: Path, digest: str, section: str = "hashes", stat: os.stat_result | None = None
    ) -> None:
        """Record `digest` for the file as it is now (or as `stat` saw it when hashing began)."""
        path = Path(path).resolve()
        stat = stat or path.stat()
        with self._lock:
            entries = self._sections.setdefault(section, {})
            entries[str(path)] = {"mtime": stat.st_mtime, "size": stat.st_size, "sha256": digest}
            self._save()

    def _save(self) -> None:
        if not self.cache_path:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._sections, indent=1))
        tmp.replace(self.cache_path)
