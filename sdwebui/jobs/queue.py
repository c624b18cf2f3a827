"""One FIFO job queue shared by UI and API: task ids, progress, live previews, interrupt / skip / cancel.

Everything that touches a model (generation, model switch, option changes that load things) is a job, so
nothing races a running generation. A worker thread per device takes jobs in submission order.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from sdwebui.engine.context import JobContext, StepInfo
from sdwebui.jobs.generation import GenerationJob

log = logging.getLogger(__name__)

Work = Callable[[JobContext], Any]
PreviewFn = Callable[[StepInfo], Image.Image | None]
# entered around each job on the worker thread (the facade binds its per-job state there)
JobScope = Callable[["Job"], AbstractContextManager[object]]

FINISHED_JOBS_KEPT = 256


CANCELLED_BEFORE_START = "cancelled before it started"


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobError(RuntimeError):
    """The job's work raised; `job` holds the message in `job.error`."""

    def __init__(self, job: Job):
        super().__init__(job.error or f"job {job.id} {job.state.value}")
        self.job = job


class DuplicateTaskId(ValueError):
    def __init__(self, task_id: str):
        super().__init__(f"a task with id {task_id!r} is already queued or running")
        self.task_id = task_id


class QueueFull(RuntimeError):
    pass


@dataclass
class Progress:
    """Where a running job is: A1111's state.job_no / job_count / sampling_step / sampling_steps."""

    job_no: int = 0
    job_count: int = 0
    step: int = 0
    steps: int = 0

    @property
    def fraction(self) -> float:
        if self.job_count <= 0 or self.steps <= 0:
            return 0.0
        done = self.job_no * self.steps + self.step
        return min(1.0, done / (self.job_count * self.steps))


@dataclass
class StepTimer:
    """ETA from a job's measured sampling speed: steps done since the first step was seen, over the time
    they took. Elapsed time over the fraction done counts the model load and start-up as if they were
    steps, and jumps when the job count changes; the measured rate does neither."""

    first_time: float | None = None
    first_done: int = 0
    last_time: float = 0.0
    last_done: int = 0

    def record(self, progress: Progress, now: float) -> None:
        done = progress.job_no * progress.steps + progress.step
        if progress.job_count * progress.steps <= 0 or done <= 0:
            return
        if self.first_time is None or done < self.last_done:  # first step seen, or the count restarted
            self.first_time, self.first_done = now, done
            self.last_time, self.last_done = now, done
        elif done > self.last_done:
            self.last_time, self.last_done = now, done

    def estimate(self, progress: Progress, now: float) -> float | None:
        """Seconds left; None until two different step counts were recorded."""
        total = progress.job_count * progress.steps
        done = progress.job_no * progress.steps + progress.step
        measured = self.last_done - self.first_done
        if (
            self.first_time is None
            or total <= 0
            or done <= 0
            or measured <= 0
            or self.last_time <= self.first_time
        ):
            return None
        seconds_per_step = (self.last_time - self.first_time) / measured
        since_last = now - self.last_time
        return max(0.0, (total - done) * seconds_per_step - since_last)

    def eta(self, progress: Progress, now: float) -> float | None:
        """Record `progress` seen at `now`, then estimate."""
        self.record(progress, now)
        return self.estimate(progress, now)


@dataclass
class Job:
    id: str
    kind: str  # "txt2img", "img2img", "options", "model", ... (shown in textinfo and the task list)
    work: Work = field(repr=False)
    preview_fn: PreviewFn | None = field(default=None, repr=False)
    preview_every: int = 1  # sampling steps between live previews; 0 = none
    ctx: JobContext = field(default_factory=JobContext, repr=False)
    state: JobState = JobState.QUEUED
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress = field(default_factory=Progress)
    preview: Image.Image | None = field(default=None, repr=False)
    preview_id: int = 0
    result: Any = field(default=None, repr=False)
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)  # what the work raised
    seq: int = 0  # submission order
    owner: str | None = None  # the API user who submitted it (None: the UI, or no credentials)
    generation: GenerationJob | None = field(default=None, repr=False)  # txt2img / img2img jobs
    worker: str | None = None  # the queue (worker stack) that ran it
    note: str | None = None  # shown with its progress (a Ray pool's "retrying: the worker died")
    clock: Callable[[], float] = field(default=time.time, repr=False)  # a fake one in tests
    step_timer: StepTimer = field(default_factory=StepTimer, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    # set when it starts, at each step or preview and when it ends: a watcher blocks on it (no polling)
    _changed: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def interrupted(self) -> bool:
        return self.ctx.interrupted

    def eta(self) -> float | None:
        """Seconds left, from this job's measured step times (None until two steps were reported)."""
        if self.started_at is None or self.finished:
            return None
        return self.step_timer.estimate(self.progress, self.clock())

    def wait(self, timeout: float | None = None) -> Any:
        """Block until finished; return the result or raise JobError (failed / cancelled)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.id} not finished after {timeout} s")
        if self.state is not JobState.DONE:
            raise JobError(self)
        return self.result

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Block until finished or `timeout`; whether it finished (raises nothing)."""
        return self._done.wait(timeout)

    def wait_changed(self, timeout: float | None = None) -> bool:
        """Block until it started, reported a step or preview, or finished, since the last call (or
        `timeout`); whether something changed. Read its state after this returns: a change during the read
        wakes the next call."""
        changed = self._changed.wait(timeout)
        self._changed.clear()
        return changed

    def _on_step(self, info: StepInfo) -> None:
        self.progress = Progress(info.job_no, info.job_count, info.step, info.steps)
        self.step_timer.record(self.progress, self.clock())
        self._changed.set()
        if self.preview_fn is None or self.preview_every <= 0 or info.latents is None:
            return
        if info.step % self.preview_every and info.step != info.steps:
            return
        try:
            image = self.preview_fn(info)
        except Exception:  # a broken preview must never fail the generation
            log.exception("live preview of job %s failed", self.id)
            return
        if image is not None:
            self.preview = image
            self.preview_id += 1
            self._changed.set()


class JobQueue:
    """FIFO of jobs, `workers` threads taking them in order (a worker stack has one queue of one thread).

    `job_scope(job)` is entered around each job's work on the worker thread (default: nothing)."""

    def __init__(
        self,
        workers: int = 1,
        max_queued: int = 1000,
        keep_finished: int = FINISHED_JOBS_KEPT,
        clock: Callable[[], float] = time.time,
        name: str = "job",
        job_scope: JobScope | None = None,
        start: bool = True,
    ):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._lock = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._jobs: dict[str, Job] = {}
        self._finished_order: collections.deque[str] = collections.deque()
        self._seq = itertools.count(1)
        self._max_queued = max_queued
        self._keep_finished = keep_finished
        self._stopping = False
        self._clock = clock
        self.name = name
        self.job_scope: JobScope = job_scope or (lambda job: nullcontext())
        self._threads = [
            threading.Thread(target=self._worker, args=(n,), name=f"{name}-worker-{n}", daemon=True)
            for n in range(workers)
        ]
        if start:
            self.start()

    def start(self) -> None:
        """Start the worker threads (a subclass that chooses jobs per thread starts them once it is ready)."""
        for thread in self._threads:
            thread.start()

    # --- submitting and looking up ---
    def submit(
        self,
        work: Work,
        kind: str = "job",
        task_id: str | None = None,
        preview_fn: PreviewFn | None = None,
        preview_every: int = 1,
        generation: GenerationJob | None = None,
    ) -> Job:
        with self._lock:
            if self._stopping:
                raise QueueFull("the job queue is shutting down")
            if len(self._queue) >= self._max_queued:
                raise QueueFull(f"the queue already holds {self._max_queued} jobs")
            task_id = task_id or f"task({uuid.uuid4().hex[:15]})"
            existing = self._jobs.get(task_id)
            if existing is not None and not existing.finished:
                raise DuplicateTaskId(task_id)
            job = Job(
                id=task_id,
                kind=kind,
                work=work,
                preview_fn=preview_fn,
                preview_every=preview_every,
                seq=next(self._seq),
                submitted_at=self._clock(),
                clock=self._clock,
                generation=generation,
            )
            job.ctx.on_step = job._on_step
            self._jobs[task_id] = job
            self._queue.append(job)
            self._lock.notify_all()  # a pool's threads choose their jobs: any may be the one to take it
            return job

    def run(self, work: Work, kind: str = "job", timeout: float | None = None) -> Any:
        """Submit and wait: for short control jobs (option changes, model switches)."""
        return self.submit(work, kind).wait(timeout)

    def get(self, task_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(task_id)

    def position(self, task_id: str) -> int | None:
        """0-based place among queued jobs; None when not queued."""
        with self._lock:
            for index, job in enumerate(self._queue):
                if job.id == task_id:
                    return index
            return None

    def on_worker_thread(self) -> bool:
        """Called from one of this queue's workers, i.e. from inside one of its jobs (a script's hook, a
        model-load listener): work queued from there would wait for itself."""
        return threading.current_thread() in self._threads

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running)

    def queued(self) -> list[Job]:
        with self._lock:
            return list(self._queue)

    def recent(self) -> list[Job]:
        """Running, queued, then finished jobs still remembered (newest finished first)."""
        with self._lock:
            finished = [self._jobs[i] for i in reversed(self._finished_order) if i in self._jobs]
            return list(self._running) + list(self._queue) + finished

    # --- control ---
    def interrupt(self, task_id: str | None = None) -> list[str]:
        """Interrupt the given running job, or every running job. Returns the ids interrupted."""
        return [job.ctx.interrupt() or job.id for job in self._targets(task_id)]

    def skip(self, task_id: str | None = None) -> list[str]:
        return [job.ctx.skip() or job.id for job in self._targets(task_id)]

    def cancel(self, task_id: str) -> bool:
        """Remove a queued job (it finishes as CANCELLED); a running one is interrupted instead."""
        with self._lock:
            job = self._jobs.get(task_id)
            if job is None or job.finished:
                return False
            if job in self._queue:
                self._queue.remove(job)
                self._finish(job, JobState.CANCELLED, error=CANCELLED_BEFORE_START)
                return True
        job.ctx.interrupt()
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            for job in list(self._queue):
                self._finish(job, JobState.CANCELLED, error="server shutting down")
            self._queue.clear()
            for job in self._running:
                job.ctx.interrupt()
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    # --- internals ---
    def _targets(self, task_id: str | None) -> list[Job]:
        with self._lock:
            return [job for job in self._running if task_id is None or job.id == task_id]

    def _worker(self, index: int = 0) -> None:
        while True:
            with self._lock:
                job = None
                while not self._stopping and (job := self._take(index)) is None:
                    self._lock.wait()
                if self._stopping or job is None:
                    return
                self._begin(job)
            self._execute(job, index)

    def _begin(self, job: Job) -> None:
        """A job taken from the queue starts (caller holds the lock)."""
        job.state = JobState.RUNNING
        job.started_at = self._clock()
        job.worker = self.name
        self._running.append(job)
        job._changed.set()

    def _take(self, index: int) -> Job | None:
        """The job worker thread `index` runs next, removed from the queue (caller holds the lock; None: wait).
        Here: the oldest; a pool of remote workers chooses by model affinity and fairness."""
        return self._queue.popleft() if self._queue else None

    def _execute(self, job: Job, index: int) -> None:
        """Run a job taken from the queue (on worker thread `index`) and finish it."""
        try:
            with self.job_scope(job):
                result = job.work(job.ctx)
        except Exception as exc:  # one failed job must never stop the worker
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc, exc_info=True)
            with self._lock:
                self._running.remove(job)
                self._finish(job, JobState.FAILED, error=_describe(exc), exception=exc)
            return
        with self._lock:
            self._running.remove(job)
            job.result = result
            self._finish(job, JobState.DONE)

    def _finish(
        self, job: Job, state: JobState, error: str | None = None, exception: BaseException | None = None
    ) -> None:
        """Mark finished and forget old finished jobs (caller holds the lock)."""
        job.state = state
        job.error = error
        job.exception = exception
        job.finished_at = self._clock()
        job._done.set()
        job._changed.set()
        self._finished_order.append(job.id)
        while len(self._finished_order) > self._keep_finished:
            old = self._finished_order.popleft()
            old_job = self._jobs.get(old)
            if old_job is not None and old_job.finished:
                del self._jobs[old]


def _describe(exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    if "out of memory" in message.lower():
        return f"out of memory: {message}"
    return message
