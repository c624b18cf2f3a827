"""POST /sdapi/v1/txt2img and /img2img: queue the job, then wait for it or (`?async=true`) answer 202."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse

from sdwebui.api import mapping
from sdwebui.api import models as m
from sdwebui.api.auth import Caller
from sdwebui.api.errors import job_failure_response
from sdwebui.api.routes import controlnet
from sdwebui.api.routes.common import API, ASYNC_RESPONSES, RouteContext
from sdwebui.jobs.queue import Job, JobError
from sdwebui.services import AppServices, ScriptCall


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services, current_caller = ctx.services, ctx.current_caller

    @router.post(f"{API}/txt2img", response_model=m.GenerationResponse, responses=ASYNC_RESPONSES)
    def txt2img(
        payload: m.Txt2ImgPayload = Body(default_factory=m.Txt2ImgPayload),
        run_async: bool = Query(False, alias="async", description="answer at once with a task id"),
        caller: Caller = Depends(current_caller),
    ):
        job, request = submit(services, payload, "txt2img", caller)
        return submitted(services, job) if run_async else respond(services, job, payload, request)

    @router.post(f"{API}/img2img", response_model=m.GenerationResponse, responses=ASYNC_RESPONSES)
    def img2img(
        payload: m.Img2ImgPayload = Body(default_factory=m.Img2ImgPayload),
        run_async: bool = Query(False, alias="async", description="answer at once with a task id"),
        caller: Caller = Depends(current_caller),
    ):
        job, request = submit(services, payload, "img2img", caller)
        return submitted(services, job) if run_async else respond(services, job, payload, request)

    return router


def submit(services: AppServices, payload: m.GenerationPayload, kind: str, caller: Caller) -> tuple[Job, Any]:
    request = mapping.build_request(payload, services.options, services.styles, services.max_image_pixels)
    request.controlnet_units, alwayson = controlnet.take_units(services, payload.alwayson_scripts)
    call = ScriptCall(
        kind=kind,
        script_name=payload.script_name or None,
        script_args=list(payload.script_args or []),
        alwayson_scripts={
            title: list((value.args if isinstance(value, m.ScriptArgs) else value.get("args")) or [])
            for title, value in alwayson.items()
        },
    )
    job = services.submit_generation(
        request,
        task_id=payload.force_task_id or None,
        script_call=call,
        restore_overrides=payload.override_settings_restore_afterwards is not False,
    )
    # the payload: for the deferred response of async submissions; owner: who may see the task
    job.generation.payload, job.owner = payload, caller.user
    return job, request


def respond(services: AppServices, job: Job, payload: m.GenerationPayload, request) -> Any:
    try:
        result = job.wait()
    except JobError as exc:
        return job_failure_response(exc.job, services.paths.redact)
    return mapping.build_response(payload, request, result, services.model_info(job))


def submitted(services: AppServices, job: Job) -> JSONResponse:
    body = m.TaskSubmitted(
        task_id=job.id,
        queue_position=services.jobs.position(job.id),
        status_url=f"{API}/tasks/{job.id}",
    )
    return JSONResponse(body.model_dump(), status_code=202)
