"""One device's self-contained worker stack: its model manager, its job queue (one worker thread) and
the hook binding the facade's per-job state around each of its jobs.

Stacks share nothing: each has its own loaded models (a LoadedModel is never used by two stacks) and its
own queue, so stacks on several devices run jobs side by side. The app builds one by default
(sdwebui.services.build_services); the pool of several (issue 21) dispatches jobs between them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdwebui.jobs.queue import JobQueue, JobScope
from sdwebui.models.provider import ModelProvider


@dataclass
class WorkerStack:
    name: str  # "cpu", "cuda:0", ... (unique in the app; the queue and its thread are named after it)
    device: str
    models: ModelProvider
    jobs: JobQueue

    @classmethod
    def create(cls, name: str, device: str, models: ModelProvider, **queue_options) -> WorkerStack:
        return cls(name, device, models, JobQueue(workers=1, name=name, **queue_options))

    def bind_facade(self, scope: JobScope) -> None:
        """Enter `scope(job)` around each job of this stack, on its worker thread (the extension layer
        binds `shared.state` / `shared.sd_model` of the job there, through contextvars)."""
        self.jobs.job_scope = scope

    def shutdown(self, timeout: float = 5.0) -> None:
        self.jobs.shutdown(timeout)
