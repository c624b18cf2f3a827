"""/sdapi/v1 (A1111-compatible) and /internal/progress routes over AppServices.

Generation endpoints queue a job and wait for it, or with `?async=true` answer at once with a task id whose
status and result are at GET /sdapi/v1/tasks/{task_id} (our extension, documented in docs/api.md).
"""

from __future__ import annotations

import os
import re
from typing import Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse

from sdwebui.api import mapping
from sdwebui.api import models as m
from sdwebui.api.auth import Caller, no_auth
from sdwebui.api.errors import job_failure_response
from sdwebui.engine import upscaling
from sdwebui.engine.requests import RequestError
from sdwebui.jobs.queue import Job, JobError, JobState
from sdwebui.services import AppServices, ScriptCall

SECRET_FLAG = re.compile(r"auth|password|passwd|secret|token|key", re.IGNORECASE)

# every error body is an ErrorResponse (sdwebui.api.errors); declared so clients and fuzzers can rely on it
_ERRORS = {
    401: "missing or wrong credentials (--api-auth)",
    403: "a Host or cross-site Origin the server does not accept",
    404: "no such route",
    409: "the task was cancelled, or force_task_id is taken",
    413: "the request body is over --max-body-size",
    422: "a field is invalid or over a limit; `field` names it",
    429: "too many failed logins from this address or for this user; retry after Retry-After seconds",
    500: "a server fault while running the job",
    503: "the queue is full",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": m.ErrorResponse, "description": text} for code, text in _ERRORS.items()
}
ASYNC_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": m.TaskSubmitted, "description": "with ?async=true: queued; fetch the result at status_url"}
}


def create_api_router(services: AppServices, auth_dependency=None) -> APIRouter:
    """`auth_dependency` checks credentials and returns the Caller; routes that need the caller depend on it
    again (FastAPI evaluates it once per request)."""
    dependencies = [Depends(auth_dependency)] if auth_dependency else []
    current_caller = auth_dependency or no_auth
    router = APIRouter(dependencies=dependencies, responses=ERROR_RESPONSES)
    api = "/sdapi/v1"
    jobs = services.jobs

    # --- generation ---
    def submit(payload: m.GenerationPayload, kind: str, caller: Caller) -> tuple[Job, Any]:
        request = mapping.build_request(payload, services.options, services.styles, services.max_image_pixels)
        call = ScriptCall(
            kind=kind,
            script_name=payload.script_name or None,
            script_args=list(payload.script_args or []),
            alwayson_scripts={
                title: list((value.args if isinstance(value, m.ScriptArgs) else value.get("args")) or [])
                for title, value in (payload.alwayson_scripts or {}).items()
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

    def respond(job: Job, payload: m.GenerationPayload, request) -> Any:
        try:
            result = job.wait()
        except JobError as exc:
            return job_failure_response(exc.job, services.paths.redact)
        return mapping.build_response(payload, request, result, services.model_info(job))

    def submitted(job: Job) -> JSONResponse:
        body = m.TaskSubmitted(
            task_id=job.id,
            queue_position=jobs.position(job.id),
            status_url=f"{api}/tasks/{job.id}",
        )
        return JSONResponse(body.model_dump(), status_code=202)

    @router.post(f"{api}/txt2img", response_model=m.GenerationResponse, responses=ASYNC_RESPONSES)
    def txt2img(
        payload: m.Txt2ImgPayload = Body(default_factory=m.Txt2ImgPayload),
        run_async: bool = Query(False, alias="async", description="answer at once with a task id"),
        caller: Caller = Depends(current_caller),
    ):
        job, request = submit(payload, "txt2img", caller)
        return submitted(job) if run_async else respond(job, payload, request)

    @router.post(f"{api}/img2img", response_model=m.GenerationResponse, responses=ASYNC_RESPONSES)
    def img2img(
        payload: m.Img2ImgPayload = Body(default_factory=m.Img2ImgPayload),
        run_async: bool = Query(False, alias="async", description="answer at once with a task id"),
        caller: Caller = Depends(current_caller),
    ):
        job, request = submit(payload, "img2img", caller)
        return submitted(job) if run_async else respond(job, payload, request)

    # --- tasks (our extension: fetch later, cancel, list) ---
    def task_status(job: Job, with_result: bool) -> m.TaskStatus:
        result = None
        gen = job.generation
        if with_result and job.state is JobState.DONE and gen is not None and gen.payload is not None:
            result = mapping.build_response(gen.payload, gen.request, job.result, services.model_info(job))
        return m.TaskStatus(
            task_id=job.id,
            kind=job.kind,
            status=job.state.value,
            queue_position=jobs.position(job.id),
            progress=1.0 if job.state is JobState.DONE else job.progress.fraction,
            eta_relative=job.eta(),
            error=services.paths.redact(job.error) if job.error else None,
            result=result,
        )

    def visible(job: Job, caller: Caller) -> bool:
        """Each API user sees their own tasks; the admin (and everyone, without credentials) sees all."""
        return caller.admin or job.owner == caller.user

    def find_job(task_id: str, caller: Caller) -> Job:
        job = jobs.get(task_id)
        if job is None or not visible(job, caller):  # another user's task reads as unknown
            raise RequestError("task_id", f"no task {task_id!r} (unknown, or finished too long ago)")
        return job

    @router.get(f"{api}/tasks", response_model=list[m.TaskStatus])
    def list_tasks(caller: Caller = Depends(current_caller)):
        return [task_status(job, with_result=False) for job in jobs.recent() if visible(job, caller)]

    @router.get(f"{api}/tasks/{{task_id}}", response_model=m.TaskStatus)
    def get_task(task_id: str, caller: Caller = Depends(current_caller)):
        job = find_job(task_id, caller)
        if job.state is JobState.FAILED and isinstance(job.exception, RequestError):
            return job_failure_response(job, services.paths.redact)
        return task_status(job, with_result=True)

    @router.post(f"{api}/tasks/{{task_id}}/cancel")
    def cancel_task(task_id: str, caller: Caller = Depends(current_caller)):
        find_job(task_id, caller)
        return {"task_id": task_id, "cancelled": jobs.cancel(task_id)}

    # --- control ---
    @router.post(f"{api}/interrupt")
    def interrupt(id_task: str | None = Query(None, description="a running task; default: all running")):
        return {"interrupted": jobs.interrupt(id_task)}

    @router.post(f"{api}/skip")
    def skip(id_task: str | None = Query(None)):
        return {"skipped": jobs.skip(id_task)}

    @router.get(f"{api}/progress", response_model=m.ProgressResponse)
    def progress(skip_current_image: bool = False):
        running = jobs.running()
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

    @router.post("/internal/progress", response_model=m.InternalProgressResponse)
    def internal_progress(req: m.InternalProgressRequest = Body(default_factory=m.InternalProgressRequest)):
        job = jobs.get(req.id_task) if req.id_task else None
        if job is None or job.state is not JobState.RUNNING:
            position = jobs.position(req.id_task) if req.id_task else None
            queued = position is not None
            textinfo = f"In queue: {position + 1}/{len(jobs.queued())}" if queued else "Waiting..."
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

    # --- options and models (through the queue) ---
    @router.get(f"{api}/options")
    def get_options() -> dict[str, Any]:
        return services.options.items()

    @router.post(f"{api}/options")
    def set_options(values: dict[str, Any] = Body(...)):
        known = services.options.items()
        services.set_options({key: value for key, value in values.items() if key in known})
        return None

    @router.get(f"{api}/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return {
            key: ("<hidden>" if value and SECRET_FLAG.search(key) and isinstance(value, str) else value)
            for key, value in vars(services.args).items()
        }

    @router.get(f"{api}/sd-models", response_model=list[m.SDModelItem])
    def sd_models():
        return [
            m.SDModelItem(
                title=info.title,
                model_name=info.name,
                hash=info.shorthash,
                sha256=info.sha256,
                filename=info.filename,
                config=str(info.config_path) if info.config_path else None,
            )
            for info in services.models.checkpoints()
        ]

    @router.get(f"{api}/sd-vae", response_model=list[m.SDVaeItem])
    def sd_vae():
        return [m.SDVaeItem(model_name=name, filename=path) for name, path in _vae_files(services)]

    @router.post(f"{api}/refresh-checkpoints")
    def refresh_checkpoints():
        services.models.refresh()
        return None

    @router.post(f"{api}/refresh-vae")
    def refresh_vae():
        services.models.refresh()
        return None

    @router.post(f"{api}/unload-checkpoint")
    def unload_checkpoint():
        jobs.run(lambda ctx: services.models.unload(), kind="model")
        return None

    @router.post(f"{api}/reload-checkpoint")
    def reload_checkpoint():
        jobs.run(lambda ctx: services.load_plain_model() and None, kind="model")  # the settings' checkpoint
        return None

    # --- lists ---
    @router.get(f"{api}/samplers", response_model=list[m.SamplerItem])
    def samplers():
        from sdwebui.engine import samplers as sampler_registry

        return sampler_registry.samplers_for_api()

    @router.get(f"{api}/schedulers", response_model=list[m.SchedulerItem])
    def schedulers():
        from sdwebui.engine import samplers as sampler_registry

        return sampler_registry.schedulers_for_api()

    @router.get(f"{api}/upscalers", response_model=list[m.UpscalerItem])
    def upscalers():
        return [m.UpscalerItem(name=name, scale=4.0) for name in upscaling.UPSCALERS]

    @router.get(f"{api}/latent-upscale-modes", response_model=list[m.LatentUpscalerModeItem])
    def latent_upscale_modes():
        return []

    @router.get(f"{api}/prompt-styles", response_model=list[m.PromptStyleItem])
    def prompt_styles():
        return [
            m.PromptStyleItem(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt)
            for s in services.styles.all()
        ]

    @router.get(f"{api}/embeddings", response_model=m.EmbeddingsResponse)
    def embeddings():
        return m.EmbeddingsResponse(loaded={}, skipped={})

    @router.get(f"{api}/memory", response_model=m.MemoryResponse)
    def memory():
        return m.MemoryResponse(ram=_ram(), cuda=_cuda())

    @router.get(f"{api}/scripts", response_model=m.ScriptsList)
    def scripts():
        return m.ScriptsList(
            txt2img=services.scripts.titles("txt2img"), img2img=services.scripts.titles("img2img")
        )

    @router.get(f"{api}/script-info")
    def script_info() -> list[dict[str, Any]]:
        return services.scripts.script_info()

    @router.get(f"{api}/extensions")
    def extensions() -> list[dict[str, Any]]:
        return services.extension_list()

    for name in ("face-restorers", "realesrgan-models", "hypernetworks", "loras"):
        router.add_api_route(f"{api}/{name}", _empty_list, methods=["GET"], name=name)

    # --- images ---
    @router.post(f"{api}/extra-single-image", response_model=m.ExtrasSingleImageResponse)
    def extra_single_image(payload: m.ExtrasSingleImagePayload = Body(...)):
        image = mapping.decode_image(payload.image, "image", services.max_image_pixels)
        if payload.upscaler_2 not in (None, "None") and (payload.extras_upscaler_2_visibility or 0) > 0:
            raise RequestError("upscaler_2", "a second upscaler is not supported yet")
        if payload.gfpgan_visibility or payload.codeformer_visibility:
            raise RequestError("gfpgan_visibility", "face restoration is not available on this server")
        if payload.resize_mode == 1:
            scale: Any = (payload.upscaling_resize_w or 512, payload.upscaling_resize_h or 512)
        elif payload.resize_mode in (None, 0):
            scale = payload.upscaling_resize if payload.upscaling_resize is not None else 2.0
        else:
            raise RequestError(
                "resize_mode", f"must be 0 (scale by) or 1 (scale to), got {payload.resize_mode}"
            )
        width, height = upscaling.target_size(image, scale)
        if width * height > services.max_image_pixels:
            raise RequestError(
                "upscaling_resize_w" if payload.resize_mode == 1 else "upscaling_resize",
                f"the result of {width}x{height} exceeds the limit of {services.max_image_pixels} pixels",
            )
        upscaled = upscaling.upscale(image, scale, payload.upscaler_1 or "None")
        return m.ExtrasSingleImageResponse(html_info="", image=mapping.encode_png(upscaled))

    @router.post(f"{api}/png-info", response_model=m.PNGInfoResponse)
    def png_info(payload: m.PNGInfoPayload = Body(...)):
        if not payload.image:
            return m.PNGInfoResponse(info="", items={}, parameters={})
        image = mapping.decode_image(payload.image, "image", services.max_image_pixels)
        items = {k: v for k, v in image.info.items() if isinstance(v, (str, int, float))}
        info = str(items.pop("parameters", ""))
        return m.PNGInfoResponse(info=info, items=items, parameters=_parse_infotext(info))

    return router


def _empty_list() -> list[Any]:
    return []


def _timestamp(job: Job) -> str:
    import time

    return time.strftime("%Y%m%d%H%M%S", time.localtime(job.started_at or job.submitted_at))


def _textinfo(job: Job) -> str:
    p = job.progress
    if p.steps:
        return f"{job.kind}: batch {p.job_no + 1}/{max(p.job_count, 1)}, step {p.step}/{p.steps}"
    return f"{job.kind}: starting"


def _vae_files(services: AppServices) -> list[tuple[str, str]]:
    files = getattr(services.models, "vae_files", None)
    if callable(files):
        return [(name, str(path)) for name, path in files()]
    return [(name, name) for name in services.models.vae_names()]


def _parse_infotext(info: str) -> dict[str, Any]:
    if not info:
        return {}
    try:
        from sdwebui.outputs.infotext import parse_infotext
    except ImportError:
        return {}
    return parse_infotext(info)


def _ram() -> dict[str, Any]:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        available = os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return {"error": "unavailable"}
    total, free = pages * page_size, available * page_size
    return {"free": free, "used": total - free, "total": total}


def _cuda() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"error": "CUDA is not available"}
    free, total = torch.cuda.mem_get_info()
    return {
        "system": {"free": free, "used": total - free, "total": total},
        "active": {"current": torch.cuda.memory_allocated(), "peak": torch.cuda.max_memory_allocated()},
        "reserved": {"current": torch.cuda.memory_reserved(), "peak": torch.cuda.max_memory_reserved()},
    }
