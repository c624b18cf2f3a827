"""A1111's `modules.extensions` for extensions: the installed extensions, as A1111's `Extension` objects.

`extensions` is a live list over the app's ExtensionManager (sdwebui.extensions.manager, which installs,
updates and enables them): built-ins first, then the user's, each alphabetically; `active()` the enabled
ones. Installing and updating are the Extensions tab's and the API's job, not this module's.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any

from sdwebui.config import paths as _paths
from sdwebui.facade import bound
from sdwebui.facade.live import LiveList
from sdwebui.facade.scripts import ScriptFile


class Extension:
    """One installed extension (A1111 attribute names); reads the app's record, so it never goes stale."""

    def __init__(self, record: Any):
        self._record = record

    name = property(lambda self: self._record.name)
    path = property(lambda self: str(self._record.path))
    enabled = property(lambda self: bool(self._record.enabled))
    is_builtin = property(lambda self: bool(self._record.is_builtin))
    canonical_name = property(lambda self: self._record.canonical_name)
    metadata = property(lambda self: self._record.metadata)
    remote = property(lambda self: self._record.remote)
    branch = property(lambda self: self._record.branch)
    commit_hash = property(lambda self: self._record.commit_hash or "")
    commit_date = property(lambda self: self._record.commit_date)
    can_update = property(lambda self: bool(self._record.can_update))
    status = property(lambda self: self._record.update_status)
    have_info_from_repo = property(lambda self: self._record.commit_hash is not None)

    @property
    def version(self) -> str:
        return self.commit_hash[:8]

    def list_files(self, subdir: str, extension: str) -> list[ScriptFile]:
        """Files `<path>/<subdir>/*<extension>`, sorted by name."""
        return [
            ScriptFile(self.path, path.name, str(path)) for path in self._record.list_files(subdir, extension)
        ]

    def read_info_from_repo(self) -> None:
        self._record.read_info_from_repo()

    def __repr__(self) -> str:
        return f"Extension({self.name!r}, enabled={self.enabled}, is_builtin={self.is_builtin})"


def _records() -> list[Any]:
    manager = bound.extension_manager()
    return list(manager.extensions) if manager is not None else []


def _version() -> Hashable:
    return id(bound.extension_manager()), tuple((r.name, str(r.path), r.enabled) for r in _records())


extensions: LiveList = LiveList(_version, lambda: [Extension(r) for r in _records()])


def active() -> list[Extension]:
    """The enabled extensions, in load order."""
    return [ext for ext in extensions if ext.enabled]


def list_extensions() -> None:
    """Re-scan the extension folders (does not load or unload scripts: that is "Apply and restart UI")."""
    manager = bound.extension_manager()
    if manager is not None:
        manager.discover()
    extensions.sync()


def find_extension(filename: str) -> Extension | None:
    """The extension whose folder holds `filename`."""
    target = os.path.abspath(filename)
    for ext in extensions:
        if os.path.commonpath([target, os.path.abspath(ext.path)]) == os.path.abspath(ext.path):
            return ext
    return None


def __getattr__(name: str) -> Any:  # the folders follow --data-dir (set at start-up)
    if name in ("extensions_dir", "extensions_builtin_dir"):
        return getattr(_paths, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
