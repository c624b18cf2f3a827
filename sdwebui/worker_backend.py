"""The worker side of a Ray pool: a full worker stack in the actor's own process.

`build_worker(args)` runs inside each Ray actor (sdwebui.jobs.remote.WorkerActor): it builds the same
services app.py builds (model manager, engine, queue) and loads the extensions, so scripts and the A1111
globals (`modules.shared`) are this process's own, as on one machine. Jobs come with the front's
settings; their progress goes to the front as it changes, their images back unsaved (the front saves them),
and nothing here writes config.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from sdwebui.engine.errors import RequestError
from sdwebui.jobs.queue import CANCELLED_BEFORE_START, Job, JobError, JobState
from sdwebui.jobs.remote import (
    PROGRESS_SECONDS,
    Outcome,
    RemoteFailure,
    RemoteJob,
    RemoteProgress,
    RemoteResult,
)
from sdwebui.models.errors import CheckpointLoadError
from sdwebui.services import AppServices, build_services

log = logging.getLogger(__name__)

TURN_WAIT = 60.0
CANCEL_POLL = 0.1  # seconds: how soon a job queued behind the running one sees it was cancelled


def start_pool(services: AppServices) -> bool:
    """With --workers / --ray-address: start (or join) Ray and the worker actors, and make the pool the
    app's queue. Without them: nothing (Ray is not even imported). Returns whether a pool was started."""
    from sdwebui.jobs.ray_cluster import PoolSettings

    settings = PoolSettings.from_args(services.args)
    if settings is None:
        return False
    from sdwebui.jobs.ray_pool import RayPool

    services.pool = RayPool(settings, build_worker, services.args)
    return True


def build_worker(args: argparse.Namespace) -> StackBackend:
    from sdwebui.extensions.bridge import attach_extensions

    local = argparse.Namespace(**{**vars(args), "workers": None, "ray_address": None, "skip_install": True})
    services = build_services(local)
    attach_extensions(services)
    services.load_plain_model()  # ready before the first job arrives
    return StackBackend(services)


class StackBackend:
    """sdwebui.jobs.remote.WorkerBackend over this process's AppServices."""

    def __init__(self, services: AppServices):
        self.services = services
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._early: dict[str, list[str]] = {}  # interrupt / skip that came before the job was queued
        self._front_options: dict[str, Any] = {}  # the settings the front sent last
        self._applied: dict[str, Any] | None = None  # the values set in this process, right after applying
        self._turns = Turns()

    def device(self) -> str:
        return self.services.stack.device

    def loaded(self) -> list[str]:
        return [model.info.filename for model in self._loaded_models()]

    def loras(self) -> dict[str, list[str]]:
        library = self.services.loras
        if library is None:
            return {}
        return {model.info.filename: library.held(model) for model in self._loaded_models()}

    def _loaded_models(self) -> list[Any]:
        manager = getattr(self.services.models, "manager", None)
        return manager.loaded() if manager is not None else []

    def run(self, job: RemoteJob) -> Iterator[RemoteProgress | Outcome]:
        """Run `job` on this process's queue: its progress while it changes, then its outcome. A job sent
        ahead is queued here at once, in its turn, behind the running one; its settings are applied, and
        its request checked against them, on the queue's thread when the job before it has ended (a
        running job's settings never change under it), and it starts there without a thread hand-off."""

        def cancelled() -> bool:
            return "interrupt" in self._early.get(job.job_id, ())

        with self._turns.taking(job.turn):
            starter = self.services.jobs.submit(lambda ctx: self._start(job, cancelled), kind="start")
        local = self._generation_of(starter, job.job_id, cancelled)
        if isinstance(local, RemoteFailure):
            yield local
            return
        try:
            yield from _changes(local)
            result = local.wait()
        except JobError as exc:
            yield dataclasses.replace(_failure(exc.job), engine_seconds=_engine_seconds(local))
            return
        finally:
            with self._lock:
                self._jobs.pop(job.job_id, None)
        ran_on = local.generation.ran_on
        yield RemoteResult(result, ran_on, self.loaded(), self.loras(), _engine_seconds(local))

    def _start(self, job: RemoteJob, cancelled: Callable[[], bool]) -> Job | RemoteFailure:
        """On the queue's thread, right after the job before it: its settings, then its generation job
        (queued next: this thread takes it now)."""
        if cancelled():  # while it waited behind the job before it
            with self._lock:
                self._early.pop(job.job_id, None)
            return RemoteFailure(CANCELLED_BEFORE_START)
        self._apply_options(job.options)
        request = dataclasses.replace(job.request, do_not_save_samples=True)  # the front saves
        try:
            # checked in front; what this process holds (its files) is checked here again
            local = self.services.submit_generation(
                request, task_id=job.job_id, script_call=job.script_call, checked=True
            )
        except RequestError as exc:
            return RemoteFailure(str(exc), exc.field, exc.reason)
        with self._lock:
            self._jobs[job.job_id] = local
            for action in self._early.pop(job.job_id, []):
                getattr(local.ctx, action)()
        return local

    def _generation_of(self, starter: Job, job_id: str, cancelled: Callable[[], bool]) -> Job | RemoteFailure:
        """The generation job `starter` queued, or why there is none; a job cancelled while its starter
        waits behind the running job leaves at once (within CANCEL_POLL)."""
        while not starter.wait_finished(CANCEL_POLL):
            if cancelled() and self.services.jobs.cancel(starter.id) and starter.wait_finished(CANCEL_POLL):
                break
        try:
            return starter.wait()
        except JobError as exc:  # cancelled while queued, or its start failed
            if exc.job.state is JobState.CANCELLED:
                with self._lock:
                    self._early.pop(job_id, None)
                return RemoteFailure(CANCELLED_BEFORE_START)
            return RemoteFailure(exc.job.error or f"job {exc.job.id} did not start")

    def interrupt(self, job_id: str) -> None:
        self._control(job_id, "interrupt")

    def skip(self, job_id: str) -> None:
        self._control(job_id, "skip")

    def memory(self) -> dict[str, Any]:
        """This worker process's RAM and CUDA numbers, in /sdapi/v1/memory's shape."""
        from sdwebui.engine.memory import stats

        ram = stats.ram()
        rss = stats.process_rss()
        if rss is not None:
            ram["rss"] = rss  # the worker process's own share of the machine's RAM
        return {"ram": ram, "cuda": stats.cuda()}

    def _control(self, job_id: str, action: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                self._early.setdefault(job_id, []).append(action)
                return
        if action == "interrupt":  # the front's cancel or interrupt: a job still queued here is removed
            self.services.jobs.cancel(job_id)
        else:
            self.services.jobs.skip(job_id)

    def _apply_options(self, values: dict[str, Any] | None) -> None:
        """The front's settings, in memory only (the front owns config.json). None: the same as with the
        last job; set again only where something in this process (a script) changed them since."""
        options = self.services.options
        if values is not None:
            self._front_options = values
        elif options.data == self._applied:  # what `set` writes: nothing changed them since
            return
        for key, value in self._front_options.items():
            if options.get(key) != value:
                try:
                    options.set(key, value, run_callbacks=False)
                except Exception as exc:  # an option this worker's extensions do not know
                    log.debug("setting %s not applied on this worker: %s", key, exc)
        self._applied = dict(options.data)


class Turns:
    """The jobs sent to this worker are queued here in the order the front sent them (`RemoteJob.turn`;
    Ray keeps no order between the calls of a threaded actor). A turn that never comes (its call was lost
    with the front's send) is waited for TURN_WAIT seconds at most."""

    def __init__(self) -> None:
        self._next = 0  # the turn that may be queued
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def taking(self, turn: int) -> Iterator[None]:
        with self._changed:
            if not self._changed.wait_for(lambda: self._next >= turn, timeout=TURN_WAIT):
                log.warning("turn %d of this worker's jobs was never sent; going on without it", turn - 1)
        try:
            yield
        finally:
            with self._changed:
                self._next = max(self._next, turn + 1)
                self._changed.notify_all()


def _changes(local: Job) -> Iterator[RemoteProgress]:
    """`local`'s progress each time it changed, until it finishes (a preview only when it is new). Woken
    by the job itself (no polling): its start and its first step go out at once (the front shows them
    without delay), later steps at most every PROGRESS_SECONDS (each item is a message to the front)."""
    sent: tuple = (0, 0, 0, 0, False)  # nothing to tell before it starts
    preview_sent = 0  # the queue numbers previews from 1
    while not local.finished:
        local.wait_changed()
        p, preview_id = local.progress, local.preview_id
        key = (p.job_no, p.job_count, p.step, p.steps, local.started_at is not None)
        if local.finished or (key == sent and preview_id == preview_sent):
            continue
        preview = local.preview if preview_id != preview_sent else None
        sent, preview_sent = key, preview_id
        yield RemoteProgress(p.job_no, p.job_count, p.step, p.steps, preview_id, preview, key[-1])
        if (p.step or p.job_no) and local.wait_finished(PROGRESS_SECONDS):
            return  # after a step: the next look in PROGRESS_SECONDS, or now when it ends


def _engine_seconds(local: Job) -> float:
    if local.started_at is None or local.finished_at is None:
        return 0.0
    return local.finished_at - local.started_at


def _failure(job: Job) -> RemoteFailure:
    exc = job.exception
    if isinstance(exc, RequestError):
        return RemoteFailure(job.error or str(exc), exc.field, exc.reason)
    if isinstance(exc, CheckpointLoadError):
        field = getattr(exc, "field", None) or "sd_model_checkpoint"
        return RemoteFailure(job.error or str(exc), field, str(exc))
    return RemoteFailure(job.error or f"job {job.id} {job.state.value}")
