"""Exponential back-off after failed logins, per client address and per user name (API and UI alike).

A few failures are free (typos); after that each failure locks the key for twice as long as the last, up to a
cap. While a key is locked, credentials are not even checked: a guess made during the lock learns nothing.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0


@dataclass
class LoginThrottle:
    free_failures: int = 3  # failures before the first lock
    base_delay: float = 1.0  # seconds of the first lock; doubles with each further failure
    max_delay: float = 300.0
    max_keys: int = 10_000  # bounded memory: the least recently failed keys are forgotten first
    clock: Callable[[], float] = time.monotonic
    _records: OrderedDict[str, _Record] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def retry_after(self, keys: Iterable[str]) -> float:
        """Seconds until any of `keys` may try again; 0 when none is locked."""
        now = self.clock()
        with self._lock:
            waits = [self._records[k].locked_until - now for k in keys if k in self._records]
        return max([0.0, *waits])

    def failed(self, keys: Iterable[str]) -> int:
        """Record a failure for each key; returns the highest failure count among them."""
        now = self.clock()
        worst = 0
        with self._lock:
            for key in keys:
                record = self._records.pop(key, None) or _Record()
                record.failures += 1
                beyond = record.failures - self.free_failures
                if beyond > 0:
                    delay = min(self.base_delay * 2 ** min(beyond - 1, 40), self.max_delay)
                    record.locked_until = now + delay
                self._records[key] = record  # most recent last
                worst = max(worst, record.failures)
            while len(self._records) > self.max_keys:
                self._records.popitem(last=False)
        return worst

    def succeeded(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._records.pop(key, None)


def login_keys(address: str | None, user: str) -> tuple[str, str]:
    """The two keys a login attempt counts against: the client's address and the user name tried."""
    return (f"addr:{address or '?'}", f"user:{user}")
