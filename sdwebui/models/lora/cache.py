"""RAM cache of computed weight differences, least recently used out first, bounded in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from sdwebui.models.lora.files import FileIdentity

DEFAULT_LIMIT_BYTES = 2 << 30


@dataclass(frozen=True)
class DeltaKey:
    file: FileIdentity
    target: str
    model: str  # DoRA and IA3 differences depend on the base weight, so on the checkpoint
    part: str = "weight"  # or "bias"


class DeltaCache:
    """fp32 multiplier-1 differences on the CPU; a file changed on disk has a new identity, so a new key."""

    def __init__(self, limit_bytes: int = DEFAULT_LIMIT_BYTES):
        self.limit_bytes = limit_bytes
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
        if size > self.limit_bytes:
            return
        with self._lock:
            self._drop(key)
            self._add(key, tensor)
            while self.bytes > self.limit_bytes:
                self._drop(next(iter(self._entries)))

    def put_if_room(self, key: DeltaKey, tensor: torch.Tensor) -> None:
        """Keep `tensor` (held as it is: a CPU tensor is not copied) if it fits, making room by evicting
        other files' entries (least recently used first) but never the same file's: a scan through one
        network larger than the cache keeps its first part instead of pushing out each entry before reuse."""
        size = tensor.numel() * tensor.element_size()
        with self._lock:
            own = self._file_bytes.get(key.file, 0)
            if key in self._entries or own + size > self.limit_bytes:
                return  # evicting would not make it fit
            if self.bytes + size > self.limit_bytes:
                others = [k for k in self._entries if k.file != key.file]  # only when evicting: a scan
                for old in others:
                    if self.bytes + size <= self.limit_bytes:
                        break
                    self._drop(old)
            self._add(key, tensor.to("cpu"))

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
