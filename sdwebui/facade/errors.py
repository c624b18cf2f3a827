"""A1111's `modules.errors` for extensions: error messages on stderr, the way A1111 prints them.

The last few exceptions are also kept in `exception_records` (A1111's `get_exceptions()`, used by its
sysinfo page).
"""

from __future__ import annotations

import sys
import textwrap
import traceback
from collections.abc import Callable
from typing import Any

RECORDS_KEPT = 5
exception_records: list[dict[str, Any]] = []
already_displayed: dict[str, int] = {}


def format_traceback(tb: Any) -> list[list[Any]]:
    return [
        [f"{frame.filename}, line {frame.lineno}, {frame.name}", frame.line]
        for frame in traceback.extract_tb(tb)
    ]


def format_exception(e: BaseException, tb: Any) -> dict[str, Any]:
    return {"exception": str(e), "traceback": format_traceback(tb)}


def get_exceptions() -> list[dict[str, Any]]:
    """The recorded exceptions, newest first."""
    return list(reversed(exception_records))


def record_exception() -> None:
    """Remember the exception being handled (if any), once."""
    _, exc, tb = sys.exc_info()
    if exc is None:
        return
    entry = format_exception(exc, tb)
    if exception_records and exception_records[-1] == entry:
        return
    exception_records.append(entry)
    del exception_records[:-RECORDS_KEPT]


def report(message: str, *, exc_info: bool = False) -> None:
    """Each line of `message` as `*** line` on stderr, then the current traceback when `exc_info`."""
    record_exception()
    for line in message.splitlines():
        print("***", line, file=sys.stderr)
    if exc_info:
        print(textwrap.indent(traceback.format_exc(), "    "), file=sys.stderr)
        print("---", file=sys.stderr)


def print_error_explanation(message: str) -> None:
    """`message` between two rules of `=` as wide as its longest line."""
    record_exception()
    lines = message.strip().split("\n")
    rule = "=" * max(len(line) for line in lines)
    print(rule, *lines, rule, sep="\n", file=sys.stderr)


def display(e: BaseException, task: str | None, *, full_traceback: bool = False) -> None:
    """`task: ExceptionType` and the exception's traceback on stderr."""
    record_exception()
    print(f"{task or 'error'}: {type(e).__name__}", file=sys.stderr)
    formatted = traceback.TracebackException.from_exception(e)
    if full_traceback:  # also the frames that led to the try block
        formatted.stack = traceback.StackSummary.from_list(
            traceback.extract_stack()[:-2] + list(formatted.stack)
        )
    print(*formatted.format(), sep="", file=sys.stderr)


def display_once(e: BaseException, task: str) -> None:
    """`display`, only the first time for a given `task`."""
    record_exception()
    if task in already_displayed:
        return
    display(e, task)
    already_displayed[task] = 1


def run(code: Callable[[], Any], task: str) -> None:
    """Call `code()`; an exception is displayed under `task` instead of raised."""
    try:
        code()
    except Exception as exc:
        display(exc, task)
