"""Live views for A1111's module-level collections (`sd_models.checkpoints_list`, `sd_vae.vae_dict`,
`extensions.extensions`).

Extensions keep references to these objects (`from modules.sd_models import checkpoints_list`), so they are
filled in place, never rebound: each read first compares a cheap version key of the app's own list and
refills when it changed (a refresh, an install), so they never go stale.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

Version = Callable[[], Hashable]


class LiveDict(dict):
    """A dict refilled from `build()` whenever `version()` changes."""

    def __init__(self, version: Version, build: Callable[[], dict[Any, Any]]):
        super().__init__()
        self._version_of, self._build, self._seen = version, build, object()

    def sync(self) -> None:
        current = self._version_of()
        if current != self._seen:
            fresh = self._build()
            super().clear()
            super().update(fresh)
            self._seen = current

    def __getitem__(self, key: Any) -> Any:
        self.sync()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.sync()
        return super().__contains__(key)

    def __iter__(self) -> Iterator[Any]:
        self.sync()
        return iter(list(super().keys()))

    def __len__(self) -> int:
        self.sync()
        return super().__len__()

    def __repr__(self) -> str:
        self.sync()
        return super().__repr__()

    def get(self, key: Any, default: Any = None) -> Any:
        self.sync()
        return super().get(key, default)

    def keys(self):  # type: ignore[override]
        self.sync()
        return super().keys()

    def values(self):  # type: ignore[override]
        self.sync()
        return super().values()

    def items(self):  # type: ignore[override]
        self.sync()
        return super().items()

    def copy(self) -> dict[Any, Any]:
        self.sync()
        return dict(super().items())


class LiveList(list):
    """A list refilled from `build()` whenever `version()` changes."""

    def __init__(self, version: Version, build: Callable[[], Iterable[Any]]):
        super().__init__()
        self._version_of, self._build, self._seen = version, build, object()

    def sync(self) -> None:
        current = self._version_of()
        if current != self._seen:
            fresh = list(self._build())
            super().clear()
            super().extend(fresh)
            self._seen = current

    def __getitem__(self, index: Any) -> Any:
        self.sync()
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[Any]:
        self.sync()
        return iter(list(super().__iter__()))

    def __len__(self) -> int:
        self.sync()
        return super().__len__()

    def __contains__(self, item: object) -> bool:
        self.sync()
        return super().__contains__(item)

    def __repr__(self) -> str:
        self.sync()
        return super().__repr__()
