"""Interrupt / skip a running job, and its progress: /sdapi/v1/progress and the UI's /internal/progress."""

from __future__ import annotations

import time

from fastapi import APIRouter, Body, Depends, Query

from sdwebui.api import mapping
from sdwebui.api import models as m
from sdwebui.api.auth import Caller
from sdwebui.api.routes.common import API, RouteContext, visible
from sdwebui.jobs.queue import Job, JobQueue, JobState


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    jobs, current_caller = ctx.services.jobs, ctx.current_caller

    # With several --api-auth users each one reaches only their own running jobs (the admin, all of them),
    # as with /tasks: no one interrupts, skips or watches another user's job.
    @router.post(f"{API}/interrupt")
    def interrupt(
        id_task: str | None = Query(None, description="a running task; default: all running"),
        caller: Caller = Depends(current_caller),
    ):
        return {
            "interrupted": [i for job in own_running(jobs, id_task, caller) for i in jobs.interrupt(job.id)]
        }

    @router.post(f"{API}/skip")
    def skip(id_task: str | None = Query(None), caller: Caller = Depends(current_caller)):
        return {"skipped": [i for job in own_running(jobs, id_task, caller) for i in jobs.skip(job.id)]}

    @router.get(f"{API}/progress", response_model=m.ProgressResponse)
    def progress(skip_current_image: bool = False, caller: Caller = Depends(current_caller)):
        return progress_response(jobs, skip_current_image, own_running(jobs, None, caller))

    @router.post("/internal/progress", response_model=m.InternalProgressResponse)
    def internal_progress(req: m.InternalProgressRequest = Body(default_factory=m.InternalProgressRequest)):
        return internal_progress_response(jobs, req)

    return router


def own_running(jobs: JobQueue, task_id: str | None, caller: Caller) -> list[Job]:
    """The running jobs `caller` may act on: `task_id`'s (if it is theirs), else all of theirs."""
    return [job for job in jobs.running() if (task_id is None or job.id == task_id) and visible(job, caller)]


def progress_response(jobs: JobQueue, skip_current_image: bool, running: list[Job]) -> m.ProgressResponse:
    """A1111's /progress of the first of `running` (idle when empty), with the whole queue's size."""
    queue_size = len(jobs.queued())
    if not running:
        return m.ProgressResponse(
            progress=0.0, eta_relative=0.0, state=m.ProgressState(), queue_size=queue_size
        )
    job = running[0]
    state = m.ProgressState(
        skipped=job.ctx.skipped,
        interrupted=job.ctx.interrupted,
        job=job.id,
        job_count=job.progress.job_count,
        job_timestamp=_timestamp(job),
        job_no=job.progress.job_no,
        sampling_step=job.progress.step,
        sampling_steps=job.progress.steps,
    )
    image = None
    if not skip_current_image and job.preview is not None:
        image = mapping.encode_png(job.preview)
    return m.ProgressResponse(
        progress=job.progress.fraction,
        eta_relative=job.eta() or 0.0,
        state=state,
        current_image=image,
        textinfo=_textinfo(job),
        current_task=job.id,
        queue_size=queue_size,
    )


def internal_progress_response(jobs: JobQueue, req: m.InternalProgressRequest) -> m.InternalProgressResponse:
    job = jobs.get(req.id_task) if req.id_task else None
    if job is None or job.state is not JobState.RUNNING:
        position = jobs.position(req.id_task) if req.id_task else None
        queued = position is not None
        textinfo = f"In queue: {position + 1}/{len(jobs.queued())}" if queued else "Waiting..."
        if queued and job is not None and job.note:  # a pool's job whose worker died: "retrying: ..."
            textinfo = f"{textinfo} ({job.note})"
        return m.InternalProgressResponse(
            active=False,
            queued=queued,
            completed=bool(job and job.finished),
            id_live_preview=-1,
            textinfo=textinfo,
            queue_position=position,
        )
    live_preview = None
    preview_id = req.id_live_preview if req.id_live_preview is not None else -1
    if req.live_preview is not False and job.preview is not None and job.preview_id != preview_id:
        live_preview = mapping.encode_jpeg_data_url(job.preview)
        preview_id = job.preview_id
    return m.InternalProgressResponse(
        active=True,
        queued=False,
        completed=False,
        progress=job.progress.fraction,
        eta=job.eta(),
        live_preview=live_preview,
        id_live_preview=preview_id,
        textinfo=_textinfo(job),
    )


def _timestamp(job: Job) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.localtime(job.started_at or job.submitted_at))


def _textinfo(job: Job) -> str:
    p = job.progress
    kind = f"{job.kind} ({job.note})" if job.note else job.kind  # "retrying: worker0 died ..."
    if p.steps:
        return f"{kind}: batch {p.job_no + 1}/{max(p.job_count, 1)}, step {p.step}/{p.steps}"
    return f"{kind}: starting"
