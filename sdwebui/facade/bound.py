"""The app objects the facade modules read, through the one binding `shared.bind(services=...)` made.

Before `bind` (extension modules imported by tests, or an app without models) each returns None and the
facade modules show empty lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sdwebui.facade import shared

T = TypeVar("T")


def services() -> Any:
    return shared._services


def models() -> Any:
    """The app's ModelProvider (sdwebui.jobs.managed_models.ManagedModels in production), or None."""
    return getattr(services(), "models", None)


def extension_manager() -> Any:
    """The app's ExtensionManager (sdwebui.extensions.manager), or None before extensions are attached."""
    return getattr(getattr(services(), "extensions", None), "manager", None)


def on_job_worker(jobs: Any) -> bool:
    """Running inside one of the queue's jobs (a script's hook, a model-load listener)."""
    return jobs.on_worker_thread()


def in_queue(work: Callable[[], T], kind: str = "model") -> T:
    """`work()` as a job of the app's queue, as the API switches models: a model switch never runs beside a
    generation whose model it would evict. Inside a job (or with no queue bound) it runs right here."""
    jobs = getattr(services(), "jobs", None)
    if jobs is None or on_job_worker(jobs):
        return work()
    job = jobs.submit(lambda ctx: work(), kind=kind)
    try:
        return job.wait()
    except Exception:
        if job.exception is not None:  # the work's own error, not the queue's wrapper
            raise job.exception from None
        raise
