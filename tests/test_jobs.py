"""The job queue with fake work: FIFO order, progress, previews, interrupt / skip / cancel, failures."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from PIL import Image

from sdwebui.engine.context import JobContext, StepInfo
from sdwebui.jobs.queue import DuplicateTaskId, JobError, JobQueue, JobState, Progress, StepTimer
from tests.waiting import wait_until


@pytest.fixture
def queue():
    q = JobQueue()
    yield q
    q.shutdown()


def stepping_work(steps: int, delay: float = 0.0, n_iter: int = 1, record: list | None = None):
    """Fake generation: reports steps like the engine, honours interrupt and skip."""

    def work(ctx: JobContext):
        done = []
        for batch in range(n_iter):
            for step in range(1, steps + 1):
                if ctx.interrupted:
                    return {"interrupted": True, "done": done}
                if ctx.skipped:
                    ctx.clear_skip()
                    break
                time.sleep(delay)
                ctx.report(StepInfo(batch, n_iter, step, steps, latents=torch.zeros(1, 4, 8, 8)))
                done.append((batch, step))
        if record is not None:
            record.append(threading.current_thread().name)
        return {"interrupted": False, "done": done}

    return work


def wait_for(condition, timeout: float = 5.0) -> None:
    wait_until(condition, "the queue's condition", timeout, interval=0.005)


def test_fifo_order_and_results(queue):
    order: list[int] = []
    gate = threading.Event()
    first = queue.submit(lambda ctx: gate.wait(5) and order.append(0) or "first")
    wait_for(lambda: first.state is JobState.RUNNING)
    jobs = [queue.submit(lambda ctx, n=n: order.append(n) or n, kind="txt2img") for n in range(1, 11)]
    assert queue.position(jobs[0].id) == 0 and queue.position(jobs[9].id) == 9
    gate.set()
    assert first.wait(5) == "first"
    assert [job.wait(5) for job in jobs] == list(range(1, 11))
    assert order == list(range(11))
    assert [job.seq for job in jobs] == sorted(job.seq for job in jobs)
    assert all(job.state is JobState.DONE for job in jobs)
    assert queue.position(jobs[0].id) is None


def test_progress_eta_and_preview(queue):
    seen = []
    proceed = threading.Event()

    def preview(info: StepInfo):
        return Image.new("RGB", (8, 8), (info.step * 10, 0, 0))

    def work(ctx):
        ctx.report(StepInfo(0, 2, 2, 4, latents=torch.zeros(1)))
        ctx.report(StepInfo(0, 2, 3, 4, latents=torch.zeros(1)))
        seen.append("reported")
        proceed.wait(5)
        return "ok"

    job = queue.submit(work, preview_fn=preview, preview_every=1)
    wait_for(lambda: seen)
    assert job.state is JobState.RUNNING
    assert job.progress.fraction == pytest.approx(3 / 8)
    eta = job.eta()
    assert eta is not None and eta >= 0
    assert job.preview is not None and job.preview.getpixel((0, 0)) == (30, 0, 0)
    assert job.preview_id == 2
    assert queue.running() == [job]
    proceed.set()
    assert job.wait(5) == "ok"
    assert job.eta() is None


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_eta_from_this_jobs_measured_step_times():
    """2 images x 10 steps at 0.5 s after a 3 s model load: the ETA is the steps left at the measured
    0.5 s each, not elapsed / fraction (which counted the load as sampling: 3 + 2.5 s for 6 of 20 steps)."""
    clock = FakeClock()
    queue = JobQueue(clock=clock)
    reported, proceed, etas = threading.Event(), threading.Event(), []

    def work(ctx):
        etas.append(job.eta())  # nothing measured yet
        clock.now += 3.0  # model load
        for step in range(1, 7):
            clock.now += 0.5
            ctx.report(StepInfo(0, 2, step, 10))
            if step == 1:
                etas.append(job.eta())  # one step seen: no rate yet
        reported.set()
        proceed.wait(5)
        return "ok"

    try:
        job = queue.submit(work)
        assert reported.wait(5)
        assert etas == [None, None]
        assert job.eta() == pytest.approx(14 * 0.5)
        clock.now += 2.0  # time since the last step counts down the estimate
        assert job.eta() == pytest.approx(14 * 0.5 - 2.0)
        proceed.set()
        assert job.wait(5) == "ok"
        assert job.eta() is None
    finally:
        queue.shutdown()


def test_step_timer_restarts_when_the_count_goes_back():
    timer = StepTimer()
    assert timer.eta(Progress(0, 1, 0, 10), 0.0) is None  # nothing done
    timer.eta(Progress(0, 1, 5, 10), 1.0)
    assert timer.eta(Progress(0, 1, 6, 10), 2.0) == pytest.approx(4.0)
    assert timer.eta(Progress(0, 1, 1, 10), 3.0) is None  # a new count: measured afresh
    assert timer.eta(Progress(0, 1, 3, 10), 3.5) == pytest.approx(7 * 0.25)


def test_preview_every_n_steps_and_broken_preview(queue):
    calls = []
    job = queue.submit(stepping_work(6), preview_fn=lambda info: calls.append(info.step), preview_every=4)
    job.wait(5)
    assert calls == [4, 6]  # every 4th step and the last
    broken = queue.submit(stepping_work(2), preview_fn=lambda info: 1 / 0)
    assert broken.wait(5)["interrupted"] is False  # preview errors never fail the job


def test_interrupt_running_returns_partial_and_next_job_runs(queue):
    long_job = queue.submit(stepping_work(1000, delay=0.005))
    after = queue.submit(stepping_work(3))
    wait_for(lambda: long_job.progress.step >= 3)
    assert queue.interrupt() == [long_job.id]
    result = long_job.wait(5)
    assert result["interrupted"] is True and 3 <= len(result["done"]) < 1000
    assert long_job.interrupted
    assert after.wait(5) == {"interrupted": False, "done": [(0, 1), (0, 2), (0, 3)]}
    assert not after.interrupted  # interrupt targets the running job only


def test_skip_moves_to_next_batch(queue):
    job = queue.submit(stepping_work(400, delay=0.005, n_iter=2))
    wait_for(lambda: job.progress.step >= 2)
    queue.skip(job.id)
    result = job.wait(10)
    batches = {batch for batch, _ in result["done"]}
    assert batches == {0, 1}
    assert len([1 for batch, _ in result["done"] if batch == 1]) == 400


def test_cancel_queued_job(queue):
    gate = threading.Event()
    blocker = queue.submit(lambda ctx: gate.wait(5))
    ran = []
    victim = queue.submit(lambda ctx: ran.append("victim"))
    survivor = queue.submit(lambda ctx: ran.append("survivor") or "s")
    assert queue.cancel(victim.id) is True
    assert victim.state is JobState.CANCELLED
    with pytest.raises(JobError, match="cancelled"):
        victim.wait(1)
    gate.set()
    blocker.wait(5)
    assert survivor.wait(5) == "s"
    assert ran == ["survivor"]
    assert queue.cancel(victim.id) is False  # already finished
    assert queue.cancel("no-such-task") is False


def test_failed_job_fails_alone(queue):
    def boom(ctx):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    bad = queue.submit(boom)
    good = queue.submit(lambda ctx: 42)
    with pytest.raises(JobError, match="out of memory"):
        bad.wait(5)
    assert bad.state is JobState.FAILED and isinstance(bad.exception, RuntimeError)
    assert good.wait(5) == 42


def test_task_ids_forced_unique_and_fetchable_later(queue):
    gate = threading.Event()
    job = queue.submit(lambda ctx: gate.wait(5) and "x", task_id="task(abc)")
    assert job.id == "task(abc)"
    with pytest.raises(DuplicateTaskId):
        queue.submit(lambda ctx: None, task_id="task(abc)")
    gate.set()
    job.wait(5)
    assert queue.get("task(abc)") is job and job.result == "x"
    auto = queue.submit(lambda ctx: None)
    assert auto.id.startswith("task(") and auto.id != job.id
    # a finished id can be reused (A1111 front ends reuse ids across sessions)
    again = queue.submit(lambda ctx: "y", task_id="task(abc)")
    assert again.wait(5) == "y"


def test_finished_jobs_are_forgotten_beyond_limit():
    q = JobQueue(keep_finished=3)
    try:
        jobs = [q.submit(lambda ctx, n=n: n) for n in range(6)]
        for job in jobs:
            job.wait(5)
        assert [q.get(job.id) for job in jobs[:3]] == [None, None, None]
        assert all(q.get(job.id) is job for job in jobs[3:])
        assert [job.id for job in q.recent()] == [job.id for job in reversed(jobs[3:])]
    finally:
        q.shutdown()


def test_shutdown_cancels_queued():
    q = JobQueue()
    gate = threading.Event()
    q.submit(lambda ctx: gate.wait(0.5))
    queued = q.submit(lambda ctx: "never")
    q.shutdown(timeout=2)
    assert queued.state is JobState.CANCELLED


def test_the_job_scope_wraps_each_job_on_its_worker_and_a_failing_scope_fails_only_its_job():
    import contextlib

    seen = []

    @contextlib.contextmanager
    def scope(job):
        if job.kind == "bad-scope":
            raise RuntimeError("scope refused")
        seen.append(("enter", job.id, threading.current_thread().name))
        try:
            yield
        finally:
            seen.append(("exit", job.id))

    q = JobQueue(name="gpu1", job_scope=scope)
    try:
        bad = q.submit(lambda ctx: "never", kind="bad-scope")
        failing = q.submit(lambda ctx: 1 / 0, task_id="failing")
        ok = q.submit(lambda ctx: "done", task_id="ok")
        assert ok.wait(30) == "done" and ok.worker == "gpu1"
        with pytest.raises(JobError, match="scope refused"):
            bad.wait(30)
        assert failing.state is JobState.FAILED
        assert seen == [
            ("enter", "failing", "gpu1-worker-0"),
            ("exit", "failing"),
            ("enter", "ok", "gpu1-worker-0"),
            ("exit", "ok"),
        ]
    finally:
        q.shutdown()
