"""Waiting for a condition in tests: poll, and fail with a message naming what never happened.

The timeout only stops a test that would otherwise hang; nothing is asserted about how long it took.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0, interval: float = 0.05):
    """condition()'s first truthy value; pytest.fail naming `what` if none comes within `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {timeout} s")
        time.sleep(interval)
