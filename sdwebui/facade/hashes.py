"""A1111's `modules.hashes`: file sha256 through the app's hash cache, and the AddNet safetensors hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from sdwebui.facade import cache as _cache
from sdwebui.facade import shared
from sdwebui.models.hashing import HashCache, sha256_file

_CHUNK = 1 << 20


def _hash_cache() -> HashCache | None:
    models = getattr(shared._services, "models", None)
    return getattr(getattr(models, "manager", None), "hashes", None)


def calculate_sha256(filename: str) -> str:
    return sha256_file(Path(filename))


def sha256_from_cache(filename: str, title: str, use_addnet_hash: bool = False) -> str | None:
    """The cached hash, None when not hashed yet or the file changed since."""
    if use_addnet_hash:
        entry = _cache.cache("hashes-addnet").get(title)
        if entry and os.path.isfile(filename) and entry.get("mtime", 0) >= os.path.getmtime(filename):
            return entry.get("sha256")
        return None
    cache = _hash_cache()
    return cache.cached(Path(filename)) if cache is not None and os.path.isfile(filename) else None


def sha256(filename: str, title: str, use_addnet_hash: bool = False) -> str | None:
    """The file's sha256 (or its AddNet hash: of the tensor data only), computed once and cached."""
    if not os.path.isfile(filename):
        return None
    cached = sha256_from_cache(filename, title, use_addnet_hash)
    if cached is not None:
        return cached
    if use_addnet_hash:
        with open(filename, "rb") as handle:
            value = addnet_hash_safetensors(handle)
        _cache.cache("hashes-addnet")[title] = {"mtime": os.path.getmtime(filename), "sha256": value}
        _cache.dump_cache()
        return value
    cache = _hash_cache()
    return cache.sha256(Path(filename)) if cache is not None else calculate_sha256(filename)


def addnet_hash_safetensors(handle: Any) -> str:
    """sha256 of a safetensors file without its JSON header (kohya's AddNet hash)."""
    digest = hashlib.sha256()
    handle.seek(0)
    header = int.from_bytes(handle.read(8), "little")
    handle.seek(header + 8)
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()
