"""The files A1111 keeps beside a network or embedding: previews (``name.png``, ``name.preview.png``...) and
the user metadata ``name.json`` the card's edit dialog writes.

Paths are derived from a listed file's own path only (never from a name or path a client sends), and a
sidecar must sit in the same folder as the file (a symlink leading elsewhere is not followed).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
# A1111's keys in name.json -> our fields; other keys in an existing file are kept when it is rewritten
_JSON_KEYS = {
    "description": "description",
    "sd version": "sd_version",
    "activation text": "activation_text",
    "preferred weight": "preferred_weight",
    "negative text": "negative_text",
    "notes": "notes",
}


@dataclass(frozen=True)
class UserMetadata:
    """A1111's ``name.json`` beside a network, written by the card's edit dialog."""

    description: str = ""
    sd_version: str = ""
    activation_text: str = ""
    preferred_weight: float = 0.0  # 0: the "extra_networks_default_multiplier" is used
    negative_text: str = ""
    notes: str = ""

    @classmethod
    def from_json(cls, data: Any) -> UserMetadata:
        if not isinstance(data, dict):
            return cls()
        try:
            weight = float(data.get("preferred weight") or 0.0)
        except (TypeError, ValueError):
            weight = 0.0
        text = {
            field: str(data.get(key) or "")
            for key, field in _JSON_KEYS.items()
            if field != "preferred_weight"
        }
        return cls(preferred_weight=weight, **text)

    @classmethod
    def read(cls, path: Path) -> UserMetadata:
        return cls.from_json(read_json(path))

    def to_json(self) -> dict[str, Any]:
        return {key: getattr(self, field) for key, field in _JSON_KEYS.items()}


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("%s: unreadable user metadata (%s)", path, error)
        return {}


def sidecar(path: Path, suffixes: Sequence[str], extra: Sequence[str] = ()) -> Path | None:
    """The first existing ``stem[extra]suffix`` file in `path`'s own folder."""
    base = path.with_suffix("")
    for stem in (base.name, *(base.name + e for e in extra)):
        for suffix in suffixes:
            candidate = path.parent / (stem + suffix)
            try:
                if candidate.is_file() and candidate.resolve().parent == path.parent.resolve():
                    return candidate
            except OSError:
                continue
    return None


def preview_of(path: Path) -> Path | None:
    """A1111's preview lookup: ``name.png`` (and other image types), then ``name.preview.png``."""
    return sidecar(path, PREVIEW_SUFFIXES, (".preview",))


def user_metadata_path(path: Path) -> Path:
    return path.with_suffix(".json")


def read_user_metadata(path: Path) -> UserMetadata:
    found = sidecar(path, (".json",))
    return UserMetadata.read(found) if found else UserMetadata()


def write_user_metadata(path: Path, metadata: UserMetadata) -> Path:
    """Write ``name.json`` beside `path` (atomically; keys other tools wrote are kept). A json that is a
    symlink or not a regular file is refused, so the write cannot land outside the folder."""
    target = user_metadata_path(path)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise OSError(f"{target}: not a regular file, not overwritten")
    existing = read_json(target)
    data = {**(existing if isinstance(existing, dict) else {}), **metadata.to_json()}
    fd, tmp = tempfile.mkstemp(prefix=".meta-", suffix=".json", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=4, ensure_ascii=False)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
