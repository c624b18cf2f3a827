"""Wall-clock of each start-up phase, logged as one line like A1111's "Startup time: ... (phase: s, ...)".

app.py creates one `StartupTimer` and records a phase after each step; `benchmarks/startup.py` reads the line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class StartupTimer:
    started: float = field(default_factory=time.perf_counter)
    phases: list[tuple[str, float]] = field(default_factory=list)
    _last: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._last = self.started

    def record(self, phase: str) -> float:
        """Close `phase` (the time since the previous record); returns its seconds."""
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        self.phases.append((phase, seconds))
        return seconds

    @property
    def total(self) -> float:
        return self._last - self.started

    def summary(self, title: str = "Startup time") -> str:
        parts = ", ".join(f"{name}: {seconds:.2f}s" for name, seconds in self.phases)
        return f"{title}: {self.total:.2f}s ({parts})"
