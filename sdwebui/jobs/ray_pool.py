"""Several workers on Ray behind the one queue of the front process (issue 21).

`RayPool` is the front's JobQueue: the API, the UI and /tasks see one queue of jobs as before. It has a
dispatcher thread per worker actor; each takes the job the dispatch rules give it (sdwebui.jobs.dispatch:
per-user round robin, model affinity) and sends it to its actor, whose `run` is a Ray streaming generator:
the job's progress and previews come back as the worker sees them change, then its outcome (the images
through Ray's object store), with no progress requests from the front. Interrupt and skip reach the actor
from the thread that asks for them (the job's context forwards them), so the dispatcher only blocks on the
stream. Saving and infotext stay in front (the job's `finish` callback). Jobs that are not
generations (option changes) run in front.

Dispatch overhead (GET /sdapi/v1/workers, benchmarks/scale_out.py): per job, the time from the moment a
dispatcher takes it from the queue to the moment its outcome is unpickled in front, less the time the
worker's own queue ran it (`engine_seconds`: the engine run, model lease included). Sending, the worker's
checks and settings, its queue hand-offs, the progress stream and the result's way back all count.

Faults: an actor that dies during a job (killed, node lost), or that reports no progress for the step
timeout (then killed), loses the job: it goes back to the head of the queue once, marked "retrying",
and the dispatcher starts a replacement actor; a second loss fails the job with a message.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdwebui.engine.context import JobContext
from sdwebui.jobs import dispatch
from sdwebui.jobs.generation import GenerationJob
from sdwebui.jobs.queue import Job, JobQueue, JobState, Progress, _describe
from sdwebui.jobs.ray_cluster import Cluster, PoolSettings, connect, worker_count
from sdwebui.jobs.remote import (
    Outcome,
    RemoteFailure,
    RemoteJob,
    RemoteProgress,
    RemoteResult,
    WorkerActor,
    WorkerFacts,
)

log = logging.getLogger(__name__)

READY_TIMEOUT = 900.0  # a new actor builds its stack and loads its first model
MAX_ATTEMPTS = 2  # a job is run at most twice: once, and once more after its worker died


class WorkerLost(RuntimeError):
    """The actor running a job died or hung."""


@dataclass
class RemoteContext(JobContext):
    """A remote job's context in front: while an actor runs the job, interrupt and skip are sent to it by
    the thread that asks (an HTTP handler), the flags kept here too; before that they wait in the flags."""

    _send: Callable[[str], None] | None = field(default=None, repr=False)  # "interrupt" / "skip" -> actor
    _sending: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def interrupt(self) -> None:
        super().interrupt()
        with self._sending:
            if self._send is not None:
                self._send("interrupt")

    def skip(self) -> None:
        super().skip()
        with self._sending:
            if self._send is not None:
                self._send_skip()

    def attach(self, send: Callable[[str], None]) -> None:
        """An actor runs the job now: what was asked before goes to it first."""
        with self._sending:
            self._send = send
            if self.interrupted:
                send("interrupt")
            if self.skipped:
                self._send_skip()

    def detach(self) -> None:
        with self._sending:
            self._send = None

    def _send_skip(self) -> None:
        self.clear_skip()  # the worker clears its flag per batch; here each skip is sent once
        self._send("skip")


@dataclass
class Slot:
    """One worker actor (replaced by a new one when it dies)."""

    index: int
    name: str
    actor: Any = None
    run: Any = None  # the actor's `run` as a streaming generator (one method handle per actor)
    facts: WorkerFacts | None = None
    ready: bool = False
    loaded: frozenset[str] = frozenset()
    loras: dict[str, frozenset[str]] = field(
        default_factory=dict
    )  # checkpoint file -> LoRA files read for it
    current: str | None = None  # the id of the job it runs
    jobs_done: int = 0
    restarts: int = 0
    overhead: float = 0.0  # seconds of dispatch overhead (see the module's doc), over `jobs_done`
    options_sent: dict[str, Any] | None = None  # the settings its actor last got (None: none yet)


@dataclass
class RemoteEntry:
    spec: RemoteJob
    finish: Callable[[Job, RemoteResult], None]  # the front's saving and bookkeeping of a result
    attempts: int = 0
    taken: float = 0.0  # perf_counter when a dispatcher last took it from the queue


@dataclass
class WorkerStatus:
    id: str
    node: str | None
    pid: int | None
    device: str | None
    loaded_models: list[str]
    current_job: str | None
    jobs_done: int
    ready: bool
    restarts: int = 0
    loaded_loras: list[str] = field(default_factory=list)  # LoRA files it holds read (for any checkpoint)
    dispatch_overhead_ms: float | None = None  # mean per job: taken from the queue -> outcome back, less
    # the worker's own run of it
    memory: dict[str, Any] = field(default_factory=dict)


class RayPool(JobQueue):
    def __init__(
        self,
        settings: PoolSettings,
        factory: Callable[[argparse.Namespace], Any],
        worker_args: argparse.Namespace,
        **queue_options,
    ):
        self.settings = settings
        self.cluster: Cluster = connect(settings)
        count, self.on_gpus = worker_count(self.cluster, settings)
        self._factory, self._worker_args = factory, worker_args
        ray = self.cluster.ray
        resources = {"num_gpus": 1} if self.on_gpus else {"num_cpus": 1}
        self._actor_class = ray.remote(max_concurrency=8, **resources)(WorkerActor)
        self.slots = [Slot(n, f"worker{n}") for n in range(count)]
        self._remote: dict[str, RemoteEntry] = {}
        super().__init__(workers=count, name="pool", start=False, **queue_options)
        for slot in self.slots:
            self._launch(slot)
        self.start()

    # --- submitting ---
    def submit_remote(
        self,
        spec: RemoteJob,
        finish: Callable[[Job, RemoteResult], None],
        kind: str,
        generation: GenerationJob,
        **submit_options,
    ) -> Job:
        with self._lock:  # registered before a dispatcher can see the job
            job = self.submit(
                lambda ctx: None, kind=kind, task_id=spec.job_id, generation=generation, **submit_options
            )
            job.ctx = RemoteContext(on_step=job._on_step)
            self._remote[job.id] = RemoteEntry(spec, finish)
        return job

    def cancel(self, task_id: str) -> bool:
        cancelled = super().cancel(task_id)
        with self._lock:
            job = self._jobs.get(task_id)
            if job is not None and job.state is JobState.CANCELLED:  # removed before any worker saw it
                self._remote.pop(task_id, None)
        return cancelled

    @staticmethod
    def new_task_id() -> str:
        return f"task({uuid.uuid4().hex[:15]})"

    # --- status ---
    def status(self, with_memory: bool = False) -> list[WorkerStatus]:
        rows = []
        for slot in list(self.slots):
            facts = slot.facts
            memory: dict[str, Any] = {}
            if with_memory and slot.ready:
                try:
                    memory = self.cluster.ray.get(slot.actor.memory.remote(), timeout=10)
                except Exception as exc:  # a dying worker answers nothing; the row still shows it
                    memory = {"error": str(exc)}
            rows.append(
                WorkerStatus(
                    id=slot.name,
                    node=facts.node if facts else None,
                    pid=facts.pid if facts else None,
                    device=facts.device if facts else None,
                    loaded_models=sorted(slot.loaded),
                    current_job=slot.current,
                    jobs_done=slot.jobs_done,
                    ready=slot.ready,
                    restarts=slot.restarts,
                    loaded_loras=sorted(set().union(*slot.loras.values())),
                    dispatch_overhead_ms=1000 * slot.overhead / slot.jobs_done if slot.jobs_done else None,
                    memory=memory,
                )
            )
        return rows

    def shutdown(self, timeout: float = 5.0) -> None:
        super().shutdown(timeout)
        ray = self.cluster.ray
        for slot in self.slots:
            if slot.actor is not None:
                try:
                    ray.kill(slot.actor, no_restart=True)
                except Exception:  # already gone
                    pass
        if self.cluster.started and ray.is_initialized():
            ray.shutdown()

    # --- dispatch (the queue's hooks; the lock is held in _take) ---
    def _worker(self, index: int = 0) -> None:
        self._wait_ready(self.slots[index])
        super()._worker(index)

    def _take(self, index: int) -> Job | None:
        if not self._queue or not self.slots[index].ready:
            return None
        views = [
            dispatch.WorkerView(s.index, s.loaded, s.ready and s.current is None, s.loras) for s in self.slots
        ]
        order = dispatch.fair_order(list(self._queue), self._running)
        job = dispatch.choose(order, views[index], views, self._wanted)
        if job is not None:
            self._queue.remove(job)
            self.slots[index].current = job.id
            entry = self._remote.get(job.id)
            if entry is not None:
                entry.taken = time.perf_counter()
        return job

    def _wanted(self, job: Job) -> dispatch.Wants:
        entry = self._remote.get(job.id)
        if entry is None:
            return dispatch.Wants()  # an option change: runs in front, on any dispatcher
        return dispatch.Wants(entry.spec.checkpoint, frozenset(entry.spec.loras))

    def _execute(self, job: Job, index: int) -> None:
        slot = self.slots[index]
        entry = self._remote.get(job.id)
        try:
            if entry is None:
                super()._execute(job, index)  # an option change: runs here, in front
                return
            self._run_remote(job, slot, entry)
        finally:
            slot.current = None
            with self._lock:
                self._lock.notify_all()  # this worker is idle again: jobs left to it may be taken now

    def _run_remote(self, job: Job, slot: Slot, entry: RemoteEntry) -> None:
        job.worker = slot.name
        entry.attempts += 1
        try:
            outcome = self._on_actor(job, slot, entry.spec)
        except WorkerLost as lost:
            self._lost(job, slot, entry, str(lost))
            self._replace(slot)
            return
        slot.overhead += max(0.0, time.perf_counter() - entry.taken - outcome.engine_seconds)
        slot.jobs_done += 1
        if isinstance(outcome, RemoteFailure):
            slot.options_sent = None  # it may have failed before taking them: all of them with the next job
            self._end(job, slot, JobState.FAILED, error=outcome.message, exception=_rebuilt(outcome))
            return
        slot.loaded, slot.loras = frozenset(outcome.loaded), _held(outcome.loras)
        try:
            entry.finish(job, outcome)  # saving, infotext, outputs: in front
        except Exception as exc:
            log.warning("job %s: saving its result failed: %s", job.id, exc, exc_info=True)
            self._end(job, slot, JobState.FAILED, error=_describe(exc), exception=exc)
            return
        job.result = outcome.result
        self._end(job, slot, JobState.DONE)

    def _end(self, job: Job, slot: Slot, state: JobState, error: str | None = None, exception=None) -> None:
        with self._lock:
            slot.current = None  # idle before the job's waiters hear of it: their next job sees it free
            if job in self._running:
                self._running.remove(job)
            self._remote.pop(job.id, None)
            self._finish(job, state, error=error, exception=exception)

    def _on_actor(self, job: Job, slot: Slot, spec: RemoteJob) -> Outcome:
        """Run `spec` on the slot's actor, mirroring its progress events into `job` until the outcome."""
        ray = self.cluster.ray
        stream = slot.run.remote(self._settings_once(slot, spec))
        watch = _Watch(self._clock())
        actor, ctx = slot.actor, job.ctx
        if isinstance(ctx, RemoteContext):
            ctx.attach(lambda action: getattr(actor, action).remote(job.id))
        try:
            while True:
                left = self.settings.step_timeout - (self._clock() - watch.changed)
                ready, _ = ray.wait([stream], timeout=max(0.0, left))
                if not ready:
                    ray.kill(actor, no_restart=True)
                    raise WorkerLost(f"{slot.name} made no progress for {self.settings.step_timeout:g} s")
                item = self._next_item(slot, stream)
                if not isinstance(item, RemoteProgress):
                    return item
                self._mirror_progress(job, watch, item)
        finally:
            if isinstance(ctx, RemoteContext):
                ctx.detach()

    @staticmethod
    def _settings_once(slot: Slot, spec: RemoteJob) -> RemoteJob:
        """`spec` without its settings when the slot's actor has them already from its last job."""
        if spec.options == slot.options_sent:
            return dataclasses.replace(spec, options=None)
        slot.options_sent = spec.options
        return spec

    def _next_item(self, slot: Slot, stream: Any) -> RemoteProgress | Outcome:
        """The stream's next item (it is ready); a dead actor's stream ends with the error that says so."""
        ray = self.cluster.ray
        try:
            return ray.get(next(stream))
        except ray.exceptions.RayActorError as exc:
            raise WorkerLost(f"{slot.name} died during the job ({type(exc).__name__})") from exc
        except StopIteration:  # the worker's run always ends with an outcome: only a bug gets here
            return RemoteFailure(f"{slot.name} ended the job without a result")
        except ray.exceptions.RayTaskError as exc:  # the worker's run raised (its stack is in the message)
            return RemoteFailure(f"{slot.name} failed: {exc}")

    def _mirror_progress(self, job: Job, watch: _Watch, seen: RemoteProgress) -> None:
        key = (seen.job_no, seen.job_count, seen.step, seen.steps, seen.running)
        if key != watch.key:
            watch.key, watch.changed = key, self._clock()
            job.progress = Progress(seen.job_no, seen.job_count, seen.step, seen.steps)
            job.step_timer.record(job.progress, self._clock())
        if seen.preview is not None:  # the worker sends each preview once
            job.preview = seen.preview
            job.preview_id += 1

    def _lost(self, job: Job, slot: Slot, entry: RemoteEntry, reason: str) -> None:
        log.warning("job %s: %s", job.id, reason)
        with self._lock:
            self._running.remove(job)
            if entry.attempts >= MAX_ATTEMPTS or self._stopping or job.ctx.interrupted:
                # twice lost, or the user had stopped it already: no other worker runs it again
                self._remote.pop(job.id, None)
                message = f"the job failed twice: {reason}" if entry.attempts >= MAX_ATTEMPTS else reason
                self._finish(job, JobState.FAILED, error=message, exception=RuntimeError(message))
                return
            job.state, job.started_at, job.worker = JobState.QUEUED, None, None
            job.progress, job.preview = Progress(), None
            job.note = f"retrying: {reason}"
            self._queue.appendleft(job)  # first in line again: it has waited already
            self._lock.notify_all()

    # --- actors ---
    def _launch(self, slot: Slot) -> None:
        threads = None if self.on_gpus else 1
        slot.actor = self._actor_class.remote(self._factory, self._worker_args, threads)
        # no task events: nothing here reads them (the dashboard is off), and each job pays for them
        slot.run = slot.actor.run.options(num_returns="streaming", enable_task_events=False)
        slot.ready, slot.facts, slot.options_sent = False, None, None

    def _wait_ready(self, slot: Slot) -> None:
        """Block this slot's dispatcher until its actor has built its stack (retrying failed starts)."""
        ray = self.cluster.ray
        while not self._stopping:
            try:
                facts = ray.get(slot.actor.facts.remote(), timeout=READY_TIMEOUT)
            except Exception as exc:
                log.error("%s did not start (%s); starting another", slot.name, exc)
                time.sleep(5)
                self._launch(slot)
                continue
            slot.facts, slot.loaded, slot.loras = facts, frozenset(facts.loaded), _held(facts.loras)
            slot.ready = True
            log.info("%s ready: pid %d on %s (%s)", slot.name, facts.pid, facts.node, facts.device)
            with self._lock:
                self._lock.notify_all()
            return

    def _replace(self, slot: Slot) -> None:
        slot.ready, slot.loaded, slot.loras = False, frozenset(), {}
        try:
            self.cluster.ray.kill(slot.actor, no_restart=True)
        except Exception:  # already dead
            pass
        slot.restarts += 1
        self._launch(slot)
        self._wait_ready(slot)


@dataclass
class _Watch:
    """What the front last saw of a running job: its progress, when that last changed."""

    changed: float
    key: tuple = ()


def _held(loras: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    return {checkpoint: frozenset(files) for checkpoint, files in loras.items()}


def _rebuilt(failure: RemoteFailure) -> Exception:
    if failure.field is not None:
        from sdwebui.engine.errors import RequestError

        return RequestError(failure.field, failure.reason or failure.message)
    return RuntimeError(failure.message)
