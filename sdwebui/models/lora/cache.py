"""RAM cache of computed weight differences, least recently used out first, bounded in bytes: the LoRA RAM
budget, which also covers the copies that weights patched in RAM hold for their undo (those come first)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from sdwebui.models.lora.files import FileIdentity

DEFAULT_LIMIT_BYTES = 2 << 30  # where the machine's RAM size is unknown


def default_limit_bytes() -> int:
    """A quarter of the machine's RAM, at least 1 GiB."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return DEFAULT_LIMIT_BYTES
    return max(1 << 30, total // 4)


@dataclass(frozen=True)
class DeltaKey:
    file: FileIdentity
    target: str
    model: str  # DoRA and IA3 differences depend on the base weight, so on the checkpoint
    part: str = "weight"  # or "bias"


class DeltaCache:
    """fp32 multiplier-1 differences on the CPU; a file changed on disk has a new identity, so a new key.
    `reserve` takes room for an undo's copies, evicting differences: the cache holds what is left."""

    def __init__(self, limit_bytes: int | None = None):
        self.limit_bytes = default_limit_bytes() if limit_bytes is None else limit_bytes
        self.reserved = 0  # bytes of undo copies now held
        self._entries: OrderedDict[DeltaKey, torch.Tensor] = OrderedDict()
        self._file_bytes: dict[FileIdentity, int] = {}  # per network file: put_if_room's own share
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: DeltaKey) -> torch.Tensor | None:
        with self._lock:
            tensor = self._entries.get(key)
            if tensor is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return tensor

    def put(self, key: DeltaKey, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        with self._lock:
            if size + self.reserved > self.limit_bytes:
                return
            self._drop(key)
            self._add(key, tensor)
            self._evict_until(0)

    def put_if_room(self, key: DeltaKey, tensor: torch.Tensor) -> None:
        """Keep `tensor` (held as it is: a CPU tensor is not copied) if it fits, making room by evicting
        other files' entries (least recently used first) but never the same file's: a scan through one
        network larger than the cache keeps its first part instead of pushing out each entry before reuse."""
        size = tensor.numel() * tensor.element_size()
        with self._lock:
            own = self._file_bytes.get(key.file, 0)
            if key in self._entries or own + size + self.reserved > self.limit_bytes:
                return  # evicting would not make it fit
            if self.bytes + size + self.reserved > self.limit_bytes:
                others = [k for k in self._entries if k.file != key.file]  # only when evicting: a scan
                for old in others:
                    if self.bytes + size + self.reserved <= self.limit_bytes:
                        break
                    self._drop(old)
            self._add(key, tensor.to("cpu"))

    def reserve(self, size: int) -> bool:
        """Room for `size` bytes of undo copies, evicting differences (least recently used first) to make
        it; False (nothing evicted) when the copies already held leave too little."""
        with self._lock:
            if self.reserved + size > self.limit_bytes:
                return False
            self.reserved += size
            self._evict_until(0)
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.reserved = max(0, self.reserved - size)

    def _evict_until(self, size: int) -> None:
        while self._entries and self.bytes + self.reserved + size > self.limit_bytes:
            self._drop(next(iter(self._entries)))

    def _add(self, key: DeltaKey, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        self._entries[key] = tensor
        self.bytes += size
        self._file_bytes[key.file] = self._file_bytes.get(key.file, 0) + size

    def _drop(self, key: DeltaKey) -> None:
        tensor = self._entries.pop(key, None)
        if tensor is None:
            return
        size = tensor.numel() * tensor.element_size()
        self.bytes -= size
        left = self._file_bytes[key.file] - size
        if left:
            self._file_bytes[key.file] = left
        else:
            del self._file_bytes[key.file]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._file_bytes.clear()
            self.bytes = 0
