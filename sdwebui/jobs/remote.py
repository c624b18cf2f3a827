"""What travels between the front process and a remote worker (a Ray actor): typed records, and the actor.

The actor holds a full worker stack of its own process (models, engine, extension scripts, facade state),
built there by a factory the front hands over (sdwebui.worker_backend.build_worker); this module knows
only the `WorkerBackend` protocol, so the jobs layer never imports the layers above it. Ray is not
imported here: the pool (sdwebui.jobs.ray_pool) wraps `WorkerActor` with `ray.remote` when it starts.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image


@dataclass
class RemoteJob:
    """One generation as the worker runs it: the front's request, script selection and settings."""

    job_id: str
    request: Any  # a Txt2ImgRequest / Img2ImgRequest (sdwebui.engine.requests)
    script_call: Any  # sdwebui.services.ScriptCall
    # the front's settings when it was queued (workers keep no settings of their own); the pool sends None
    # to a worker that got these same settings with its last job
    options: dict[str, Any] | None
    checkpoint: str | None = None  # the checkpoint file it runs on (None: the default), for model affinity
    loras: tuple[str, ...] = ()  # the LoRA files its prompt names (resolved paths), for model affinity
    # its place among the jobs sent to this actor (0, 1, ...): the front sends one ahead of the running one,
    # and the worker queues them in this order
    turn: int = 0


PROGRESS_SECONDS = (
    0.25  # a worker sends a running job's steps at most this often (its start, first step at once)
)


@dataclass
class RemoteProgress:
    """A running job's progress on its worker, sent when it changed; `preview` only when it is new."""

    job_no: int = 0
    job_count: int = 0
    step: int = 0
    steps: int = 0
    preview_id: int = 0
    preview: Image.Image | None = None
    running: bool = False


@dataclass
class RemoteResult:
    result: Any  # the engine's GenerationResult (images unsaved: the front saves them)
    ran_on: Any  # sdwebui.models.lease.ModelUsed
    loaded: list[str] = field(default_factory=list)  # checkpoint files the worker holds now
    loras: dict[str, list[str]] = field(default_factory=dict)  # checkpoint file -> LoRA files read for it
    # how long the worker's own queue ran the job (its engine run, model lease included); the rest of the
    # time from the front's pickup to this record's arrival there is dispatch overhead
    engine_seconds: float = 0.0


@dataclass
class RemoteFailure:
    """A job that failed on its worker: exceptions are rebuilt from this in the front (a RequestError's
    field and reason keep the 422 answer)."""

    message: str
    field: str | None = None
    reason: str | None = None
    engine_seconds: float = 0.0  # as RemoteResult's (0 when refused before it ran)


Outcome = RemoteResult | RemoteFailure


@dataclass
class WorkerFacts:
    node: str
    pid: int
    device: str
    loaded: list[str]
    loras: dict[str, list[str]] = field(default_factory=dict)


class WorkerBackend(Protocol):
    """One process's worker stack as a remote worker serves it (sdwebui.worker_backend.StackBackend)."""

    def device(self) -> str: ...
    def loaded(self) -> list[str]: ...
    def loras(self) -> dict[str, list[str]]: ...
    def run(self, job: RemoteJob) -> Iterator[RemoteProgress | Outcome]: ...
    def interrupt(self, job_id: str) -> None: ...
    def skip(self, job_id: str) -> None: ...
    def memory(self) -> dict[str, Any]: ...


class WorkerActor:
    """The body of a Ray actor (threaded: `interrupt` and `skip` answer while `run` is busy)."""

    def __init__(self, factory: Callable[[Any], WorkerBackend], args: Any, torch_threads: int | None):
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)  # N CPU workers on N cores: one thread each
        self.backend = factory(args)

    def facts(self) -> WorkerFacts:
        backend = self.backend
        return WorkerFacts(
            socket.gethostname(), os.getpid(), backend.device(), backend.loaded(), backend.loras()
        )

    def run(self, job: RemoteJob) -> Iterator[RemoteProgress | Outcome]:
        """A Ray streaming generator (the pool calls it with num_returns="streaming"): the job's progress
        events as they happen, then its outcome, each on its way to the front as soon as it is yielded
        (no progress requests from the front, no thread of this actor per request)."""
        yield from self.backend.run(job)

    def interrupt(self, job_id: str) -> None:
        self.backend.interrupt(job_id)

    def skip(self, job_id: str) -> None:
        self.backend.skip(job_id)

    def memory(self) -> dict[str, Any]:
        return self.backend.memory()
