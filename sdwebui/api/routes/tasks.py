"""/sdapi/v1/tasks (our extension): list, fetch later, cancel. Each API user sees only their own tasks."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from sdwebui.api import mapping
from sdwebui.api import models as m
from sdwebui.api.auth import Caller
from sdwebui.api.errors import job_failure_response
from sdwebui.api.routes.common import API, RouteContext, visible
from sdwebui.engine.requests import RequestError
from sdwebui.jobs.queue import Job, JobState
from sdwebui.services import AppServices


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services, current_caller = ctx.services, ctx.current_caller
    jobs = services.jobs

    @router.get(f"{API}/tasks", response_model=list[m.TaskStatus])
    def list_tasks(caller: Caller = Depends(current_caller)):
        return [
            task_status(services, job, with_result=False) for job in jobs.recent() if visible(job, caller)
        ]

    @router.get(f"{API}/tasks/{{task_id}}", response_model=m.TaskStatus)
    def get_task(task_id: str, caller: Caller = Depends(current_caller)):
        job = find_job(services, task_id, caller)
        if job.state is JobState.FAILED and isinstance(job.exception, RequestError):
            return job_failure_response(job, services.paths.redact)
        return task_status(services, job, with_result=True)

    @router.post(f"{API}/tasks/{{task_id}}/cancel")
    def cancel_task(task_id: str, caller: Caller = Depends(current_caller)):
        find_job(services, task_id, caller)
        return {"task_id": task_id, "cancelled": jobs.cancel(task_id)}

    return router


def task_status(services: AppServices, job: Job, with_result: bool) -> m.TaskStatus:
    result = None
    gen = job.generation
    if with_result and job.state is JobState.DONE and gen is not None and gen.payload is not None:
        result = mapping.build_response(gen.payload, gen.request, job.result, services.model_info(job))
    return m.TaskStatus(
        task_id=job.id,
        kind=job.kind,
        status=job.state.value,
        queue_position=services.jobs.position(job.id),
        progress=1.0 if job.state is JobState.DONE else job.progress.fraction,
        eta_relative=job.eta(),
        error=services.paths.redact(job.error) if job.error else None,
        result=result,
    )


def find_job(services: AppServices, task_id: str, caller: Caller) -> Job:
    job = services.jobs.get(task_id)
    if job is None or not visible(job, caller):  # another user's task reads as unknown
        raise RequestError("task_id", f"no task {task_id!r} (unknown, or finished too long ago)")
    return job
