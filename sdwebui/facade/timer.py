"""A1111's `modules.timer`: named time records (`Timer.record`, `subcategory`, `summary`, `dump`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any


class Timer:
    """Time since the last record, added per category (A1111's start-up timer API)."""

    def __init__(self, print_log: bool = False):
        self.print_log = print_log
        self.start = self.base = time.perf_counter()
        self.records: dict[str, float] = {}
        self.total = 0.0
        self.base_category = ""
        self.subcategory_level = 0

    def elapsed(self) -> float:
        now = time.perf_counter()
        passed, self.start = now - self.start, now
        return passed

    def add_time_to_record(self, category: str, amount: float) -> None:
        self.records[category] = self.records.get(category, 0.0) + amount

    def record(self, category: str, extra_time: float = 0, disable_log: bool = False) -> None:
        passed = self.elapsed()
        self.add_time_to_record(self.base_category + category, passed + extra_time)
        self.total += passed + extra_time
        if self.print_log and not disable_log:
            print(f"{'  ' * self.subcategory_level}{category}: done in {passed + extra_time:.3f}s")

    @contextlib.contextmanager
    def subcategory(self, name: str) -> Iterator[None]:
        self.elapsed()
        outer = self.base_category
        self.base_category = f"{outer}{name}/"
        self.subcategory_level += 1
        try:
            yield
        finally:
            self.base_category = outer
            self.subcategory_level -= 1
            self.record(name)

    def summary(self) -> str:
        parts = [
            f"{category}: {seconds:.1f}s" for category, seconds in self.records.items() if seconds >= 0.1
        ]
        return f"{self.total:.1f}s" + (f" ({', '.join(parts)})" if parts else "")

    def dump(self) -> dict[str, Any]:
        return {"total": self.total, "records": dict(self.records)}

    def reset(self) -> None:
        self.__init__(self.print_log)


startup_timer = Timer()
