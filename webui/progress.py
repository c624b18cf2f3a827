"""Follow a queued job from a Gradio generator: progress bar with step count and ETA, live preview, queue place.

Only the browser session that submitted a job follows it, because the task id lives in that session's state.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from sdwebui.jobs.queue import Job, JobQueue, JobState, StepTimer

POLL_SECONDS = 0.25


@dataclass
class Snapshot:
    """What the UI shows about a job at one moment."""

    progress_html: str
    preview: Image.Image | None
    preview_id: int
    finished: bool


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"ETA {minutes}:{secs:02d}" if minutes else f"ETA {secs}s"


def progress_html(job: Job, queue: JobQueue, timer: StepTimer | None = None, now: float | None = None) -> str:
    """An HTML progress bar (A1111 class names) for the job's state; the ETA comes from `timer` when given
    (fed the progress seen at `now`), else from the job's own measured step times (Job.eta)."""
    if job.state is JobState.QUEUED:
        position = queue.position(job.id)
        ahead = len(queue.running()) + (position or 0)
        text = f"In queue: {ahead} job{'s' if ahead != 1 else ''} ahead"
        return _bar(0.0, text, state="queued")
    if job.state is JobState.RUNNING:
        progress = job.progress
        if progress.steps <= 0:
            return _bar(0.0, "Starting...", state="running")
        batch = f"Batch {progress.job_no + 1}/{progress.job_count}, " if progress.job_count > 1 else ""
        text = f"{batch}Step {progress.step}/{progress.steps}"
        if timer is not None:
            eta = format_eta(timer.eta(progress, time.time() if now is None else now))
        else:
            eta = format_eta(job.eta())
        if eta:
            text += f" — {eta}"
        return _bar(progress.fraction, text, state="running")
    return ""


def _bar(fraction: float, text: str, state: str) -> str:
    percent = max(0.0, min(1.0, fraction)) * 100
    return (
        f'<div class="progressDiv" data-state="{state}">'
        f'<div class="progress" style="width:{percent:.1f}%"></div>'
        f'<span class="progress-text">{html.escape(text)}</span></div>'
    )


def error_html(message: str) -> str:
    return f'<div class="error-message" role="alert">{html.escape(message)}</div>'


def follow(job: Job, queue: JobQueue, poll_seconds: float = POLL_SECONDS) -> Iterator[Snapshot]:
    """Yield a snapshot whenever the visible state changes, then a final one when the job finishes."""
    last: tuple[str, int] | None = None
    while not job.finished:
        html_text = progress_html(job, queue)
        key = (html_text, job.preview_id)
        if key != last:
            last = key
            yield Snapshot(html_text, job.preview, job.preview_id, finished=False)
        time.sleep(poll_seconds)
    yield Snapshot("", job.preview, job.preview_id, finished=True)


def wait_started(job: Job, timeout: float) -> bool:
    """For tests and tools: wait until the job leaves the queue."""
    deadline = time.time() + timeout
    while job.state is JobState.QUEUED and time.time() < deadline:
        time.sleep(0.02)
    return job.state is not JobState.QUEUED
