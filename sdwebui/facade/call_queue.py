"""A1111's `modules.call_queue` for extensions: wrappers for Gradio callbacks.

In A1111 `queue_lock` is the lock every generation holds. Here generations run one at a time in the app's
job queue (sdwebui.jobs), so `wrap_queued_call` / `wrap_gradio_gpu_call` run their function as a job of that
queue (right there when already inside one) and also hold `queue_lock`, which extensions may take themselves.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

from sdwebui.facade import bound, errors, shared

queue_lock = threading.Lock()
MAX_LOGGED_ARGS = 131072  # characters of the arguments printed with an error


def _queued(func: Callable[[], Any]) -> Any:
    def work() -> Any:
        with queue_lock:
            return func()

    return bound.in_queue(work, kind="extension")


def wrap_queued_call(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` run as a job of the app's queue, under `queue_lock`."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return _queued(lambda: func(*args, **kwargs))

    return call


def wrap_gradio_gpu_call(
    func: Callable[..., Any], extra_outputs: list[Any] | None = None
) -> Callable[..., Any]:
    """`func` as `wrap_queued_call` runs it, with `shared.state` begun and ended around it; errors as
    `wrap_gradio_call`."""

    def run(*args: Any, **kwargs: Any) -> Any:
        shared.state.begin(job=getattr(func, "__name__", "gpu call"))
        try:
            return func(*args, **kwargs)
        finally:
            shared.state.end()

    def call(*args: Any, **kwargs: Any) -> Any:
        return _queued(lambda: run(*args, **kwargs))

    return wrap_gradio_call(call, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(
    func: Callable[..., Any], extra_outputs: list[Any] | None = None, add_stats: bool = False
) -> Callable[..., Any]:
    """`func`'s outputs as a tuple; an exception becomes `extra_outputs` (default [None, ""]) + an HTML error
    (A1111's convention: the last output is HTML); `add_stats` appends the time taken to that HTML."""

    def call(*args: Any, extra_outputs_array: list[Any] | None = extra_outputs, **kwargs: Any) -> tuple:
        started = time.perf_counter()
        try:
            outputs = list(func(*args, **kwargs))
        except Exception as exc:
            arguments = f"Arguments: {args} {kwargs}"
            errors.report(f"Error completing request\n{arguments[:MAX_LOGGED_ARGS]}", exc_info=True)
            shared.state.job, shared.state.job_count = "", 0
            message = html.escape(f"{type(exc).__name__}: {exc}")
            outputs = list(extra_outputs_array if extra_outputs_array is not None else [None, ""])
            outputs.append(f"<div class='error'>{message}</div>")
        shared.state.skipped = shared.state.interrupted = False
        shared.state.job_count = 0
        if add_stats and outputs and isinstance(outputs[-1], str):
            outputs[-1] += (
                f"<div class='performance'><p class='time'>Time taken: <wbr>{_elapsed(started)}</p></div>"
            )
        return tuple(outputs)

    return call


def _elapsed(started: float) -> str:
    seconds = time.perf_counter() - started
    minutes, rest = int(seconds // 60), seconds % 60
    return f"{minutes}m {rest:.2f}s" if minutes else f"{rest:.2f}s"
