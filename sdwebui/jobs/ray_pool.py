"""Several workers on Ray behind the one queue of the front process (issue 21).

`RayPool` is the front's JobQueue: the API, the UI and /tasks see one queue of jobs as before. It has
two dispatcher threads per worker actor. An idle worker's takes the job the dispatch rules give it
(sdwebui.jobs.dispatch: per-user round robin, model affinity); while it runs, the other sends the worker
its next job ahead (only when no worker is idle, only a job for a model it holds), so the next job starts
there as the current one ends, without waiting for a round trip to the front; to the user that job is
queued until it starts. Each job goes to the actor's `run`, a Ray streaming generator:
the job's progress and previews come back as the worker sees them change, then its outcome (the images
through Ray's object store), with no progress requests from the front. Interrupt and skip reach the actor
from the thread that asks for them (the job's context forwards them), so the dispatcher only blocks on the
stream. Saving and infotext stay in front (the job's `finish` callback). Jobs that are not
generations (option changes) run in front.

Dispatch overhead (GET /sdapi/v1/workers, benchmarks/scale_out.py): per job, the time from the moment
its worker could begin it (a dispatcher took it from the queue, or, for a job sent ahead, the outcome of
the job before it on that worker arrived in front) to the moment its outcome is unpickled in front, less
the time the worker's own queue ran it (`engine_seconds`: the engine run, model lease included). Summed
over a busy worker this is the time it spent not running jobs; for one job on an idle pool it is the whole
cost of going remote: sending, the worker's checks and settings, its queue hand-offs, the progress stream
and the result's way back.

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
from sdwebui.jobs.queue import CANCELLED_BEFORE_START, Job, JobQueue, JobState, Progress, _describe
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
AHEAD = 1  # jobs sent to a busy worker ahead of its current one
BEHIND_POLL = 1.0  # seconds: how often a job sent ahead looks whether it is first on its worker now


class WorkerLost(RuntimeError):
    """The actor running a job died or hung."""

    def __init__(self, message: str, actor: Any):
        super().__init__(message)
        self.actor = actor  # the one lost (its slot may hold a new one already)


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
    held: list[str] = field(default_factory=list)  # the jobs it runs and was sent ahead, in that order
    jobs_done: int = 0
    restarts: int = 0
    overhead: float = 0.0  # seconds of dispatch overhead (see the module's doc), over `jobs_done`
    options_sent: dict[str, Any] | None = None  # the settings its actor last got (None: none yet)
    next_turn: int = 0  # RemoteJob.turn of the next job sent to its actor
    sending: threading.Lock = field(default_factory=threading.Lock, repr=False)  # turns in send order
    last_outcome: float = 0.0  # perf_counter when the last job's outcome arrived

    @property
    def current(self) -> str | None:
        """The id of the job it runs (or was sent first)."""
        return self.held[0] if self.held else None


@dataclass
class RemoteEntry:
    spec: RemoteJob
    finish: Callable[[Job, RemoteResult], None]  # the front's saving and bookkeeping of a result
    attempts: int = 0  # starts on a worker
    taken: float = 0.0  # perf_counter when a dispatcher last took it from the queue
    ahead: bool = False  # sent to a busy worker, not started there yet (queued, to the user)
    sent: bool = False  # its actor call was made


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
    next_job: str | None = None  # the job sent to it ahead, to start when its current one ends
    dispatch_overhead_ms: float | None = None  # mean per job: from when its worker could begin it to its
    # outcome back, less the worker's own run of it (see the module's doc)
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
        self._ahead: list[Job] = []  # taken and sent ahead, not started yet (RemoteEntry.ahead)
        super().__init__(workers=count * (1 + AHEAD), name="pool", start=False, **queue_options)
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

    # jobs sent ahead are still queued to the user: first in line
    def position(self, task_id: str) -> int | None:
        with self._lock:
            for index, job in enumerate([*self._ahead, *self._queue]):
                if job.id == task_id:
                    return index
            return None

    def queued(self) -> list[Job]:
        with self._lock:
            return [*self._ahead, *self._queue]

    def recent(self) -> list[Job]:
        with self._lock:
            finished = [self._jobs[i] for i in reversed(self._finished_order) if i in self._jobs]
            return [*self._running, *self._ahead, *self._queue, *finished]

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
                    next_job=slot.held[1] if len(slot.held) > 1 else None,
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

    # --- dispatch (the queue's hooks; the lock is held in _take and _begin) ---
    def _worker(self, index: int = 0) -> None:
        if index < len(self.slots):  # a slot's first dispatcher waits for its actor; the other takes
            self._wait_ready(self.slots[index])  # nothing until then (`_take` sees it not ready)
        super()._worker(index)

    def _slot(self, index: int) -> Slot:
        return self.slots[index % len(self.slots)]

    def _take(self, index: int) -> Job | None:
        slot = self._slot(index)
        if not self._queue or not slot.ready or len(slot.held) > AHEAD:
            return None
        views = [dispatch.WorkerView(s.index, s.loaded, s.ready and not s.held, s.loras) for s in self.slots]
        order = dispatch.fair_order(list(self._queue), [*self._running, *self._ahead])
        if not slot.held:
            job = dispatch.choose(order, views[slot.index], views, self._wanted)
        elif self._may_send_ahead(slot) and not any(view.idle for view in views):
            job = dispatch.choose_ahead(order, views[slot.index], self._wanted)
        else:
            return None
        entry = self._remote.get(job.id) if job is not None else None
        if job is None or (entry is None and slot.held):  # an option change is never sent ahead
            return None
        self._queue.remove(job)
        slot.held.append(job.id)
        if entry is not None:
            entry.taken, entry.ahead, entry.sent = time.perf_counter(), len(slot.held) > 1, False
        return job

    def _may_send_ahead(self, slot: Slot) -> bool:
        """Its current job is a generation already sent to its actor (after an option change, which runs
        in front, the next job waits for it: its settings are those the change wrote)."""
        entry = self._remote.get(slot.held[0])
        return entry is not None and entry.sent

    def _begin(self, job: Job) -> None:
        entry = self._remote.get(job.id)
        if entry is not None and entry.ahead:
            self._ahead.append(job)  # queued to the user until its worker starts it (`_started`)
            return
        super()._begin(job)
        if entry is not None:
            entry.attempts += 1

    def _started(self, job: Job, entry: RemoteEntry) -> None:
        """A job sent ahead has started on its worker."""
        with self._lock:
            if job in self._ahead:
                self._ahead.remove(job)
                entry.ahead, worker = False, job.worker
                super()._begin(job)
                job.worker = worker  # its slot's name, not the pool's
                entry.attempts += 1

    def _wanted(self, job: Job) -> dispatch.Wants:
        entry = self._remote.get(job.id)
        if entry is None:
            return dispatch.Wants()  # an option change: runs in front, on any dispatcher
        return dispatch.Wants(entry.spec.checkpoint, frozenset(entry.spec.loras))

    def _execute(self, job: Job, index: int) -> None:
        slot = self._slot(index)
        entry = self._remote.get(job.id)
        try:
            if entry is None:
                super()._execute(job, index)  # an option change: runs here, in front
                return
            self._run_remote(job, slot, entry)
        finally:
            with self._lock:
                self._release(slot, job)

    def _release(self, slot: Slot, job: Job) -> None:
        """The slot no longer holds `job` (caller holds the lock): jobs left to it may be taken now."""
        if job.id in slot.held:
            slot.held.remove(job.id)
        self._lock.notify_all()

    def _run_remote(self, job: Job, slot: Slot, entry: RemoteEntry) -> None:
        job.worker = slot.name
        try:
            outcome = self._on_actor(job, slot, entry)
        except WorkerLost as lost:
            self._lost(job, slot, entry, str(lost))
            self._replace(slot, lost.actor)
            return
        arrived = time.perf_counter()
        since = max(entry.taken, slot.last_outcome)  # when its worker could begin it
        # not clamped at 0: over a busy run the sum is the run's span less its engine time (a job whose
        # result came back quicker than the one before it counts below 0)
        slot.overhead += arrived - since - outcome.engine_seconds
        slot.last_outcome = arrived
        slot.jobs_done += 1
        if isinstance(outcome, RemoteFailure):
            slot.options_sent = None  # it may have failed before taking them: all of them with the next job
            if entry.ahead and job.ctx.interrupted:  # cancelled while it waited on the worker
                self._end(job, slot, JobState.CANCELLED, error=CANCELLED_BEFORE_START)
                return
            self._end(job, slot, JobState.FAILED, error=outcome.message, exception=_rebuilt(outcome))
            return
        self._started(job, entry)  # a job too quick for its start event
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
            self._release(slot, job)  # before the job's waiters hear of it: their next job sees it free
            self._forget(job)
            self._remote.pop(job.id, None)
            self._finish(job, state, error=error, exception=exception)

    def _forget(self, job: Job) -> None:
        """`job` is neither running nor waiting ahead on a worker (caller holds the lock)."""
        for held in (self._running, self._ahead):
            if job in held:
                held.remove(job)

    def _on_actor(self, job: Job, slot: Slot, entry: RemoteEntry) -> Outcome:
        """Run the job on the slot's actor, mirroring its progress events into `job` until the outcome.
        A job sent ahead waits for the one before it: while it does, only that one's silence counts."""
        ray = self.cluster.ray
        with slot.sending:  # turns in the order of the calls
            spec = dataclasses.replace(self._settings_once(slot, entry.spec), turn=slot.next_turn)
            slot.next_turn += 1
            actor, stream = slot.actor, slot.run.remote(spec)
        with self._lock:
            entry.sent = True
            self._lock.notify_all()  # the slot's other dispatcher may send the next job ahead now
        watch = _Watch(self._clock())
        ctx = job.ctx
        if isinstance(ctx, RemoteContext):
            ctx.attach(lambda action: getattr(actor, action).remote(job.id))
        try:
            while True:
                behind = slot.current != job.id
                if behind:
                    watch.changed = self._clock()
                left = self.settings.step_timeout - (self._clock() - watch.changed)
                ready, _ = ray.wait([stream], timeout=min(left, BEHIND_POLL) if behind else max(0.0, left))
                if not ready:
                    if behind:
                        continue
                    ray.kill(actor, no_restart=True)
                    message = f"{slot.name} made no progress for {self.settings.step_timeout:g} s"
                    raise WorkerLost(message, actor)
                item = self._next_item(slot, actor, stream)
                if not isinstance(item, RemoteProgress):
                    return item
                if item.running and entry.ahead:
                    self._started(job, entry)
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

    def _next_item(self, slot: Slot, actor: Any, stream: Any) -> RemoteProgress | Outcome:
        """The stream's next item (it is ready); a dead actor's stream ends with the error that says so."""
        ray = self.cluster.ray
        try:
            return ray.get(next(stream))
        except ray.exceptions.RayActorError as exc:
            raise WorkerLost(f"{slot.name} died during the job ({type(exc).__name__})", actor) from exc
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
            self._forget(job)
            if entry.ahead:  # it never started: back in its place in line, no attempt counted
                entry.ahead, job.worker = False, None
                later = [queued for queued in self._queue if queued.seq > job.seq]
                self._queue.insert(self._queue.index(later[0]) if later else len(self._queue), job)
                self._lock.notify_all()
                return
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
        slot.ready, slot.facts, slot.options_sent, slot.next_turn = False, None, None, 0

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

    def _replace(self, slot: Slot, dead: Any) -> None:
        """Start a new actor for the slot whose actor `dead` was lost (once: both of its dispatchers lose
        their jobs with it; the second finds it replaced and waits in `_take` for it to be ready)."""
        with self._lock:
            if slot.actor is not dead:
                return
            slot.ready, slot.loaded, slot.loras = False, frozenset(), {}
            slot.restarts += 1
            self._launch(slot)
        try:
            self.cluster.ray.kill(dead, no_restart=True)
        except Exception:  # already dead
            pass
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
