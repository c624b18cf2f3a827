"""Every error as JSON naming the field and the reason: 422 for bad input, never a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Mount

from sdwebui.config.options import OptionError
from sdwebui.engine.memory.oom import MemoryExhausted
from sdwebui.engine.requests import RequestError
from sdwebui.engine.samplers import SamplerUnavailableError, UnsupportedScheduleError
from sdwebui.engine.upscaling import UpscaleError
from sdwebui.jobs.queue import DuplicateTaskId, Job, JobError, JobState, QueueFull
from sdwebui.models.errors import CheckpointLoadError

log = logging.getLogger(__name__)

# error text -> what a client may see (DataPaths.redact: no server paths, no memory addresses)
Redact = Callable[[str], str]


def _as_is(text: str) -> str:
    return text


def error_body(error: str, detail: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail, "field": field, **extra}


def request_error_response(
    exc: RequestError | OptionError | UpscaleError, redact: Redact = _as_is
) -> JSONResponse:
    field = getattr(exc, "field", None) or getattr(exc, "key", None)
    return JSONResponse(error_body(type(exc).__name__, redact(str(exc)), field), status_code=422)


def job_failure_response(job: Job, redact: Redact = _as_is) -> JSONResponse:
    """A failed or cancelled job: 422 when the engine rejected the input, else the job's error message."""
    exc = job.exception
    if isinstance(exc, (RequestError, OptionError, UpscaleError)):
        return request_error_response(exc, redact)
    if isinstance(exc, CheckpointLoadError):  # the message names the file and what is wrong with it
        field = getattr(exc, "field", None) or "sd_model_checkpoint"  # a VAE lookup names sd_vae
        return JSONResponse(error_body("CheckpointLoadError", redact(str(exc)), field), status_code=422)
    if isinstance(exc, UnsupportedScheduleError):
        return JSONResponse(error_body(type(exc).__name__, str(exc), "scheduler"), status_code=422)
    if isinstance(exc, SamplerUnavailableError):
        return JSONResponse(error_body(type(exc).__name__, str(exc), "sampler_name"), status_code=422)
    if isinstance(exc, MemoryExhausted):  # the server is fine; this job needs a lower-memory setting
        return JSONResponse(error_body("OutOfMemory", redact(str(exc)), exc.setting), status_code=503)
    if job.state is JobState.CANCELLED:
        return JSONResponse(
            error_body("TaskCancelled", redact(job.error or "cancelled"), task_id=job.id), status_code=409
        )
    detail = redact(f"task {job.id} failed: {job.error}")
    return JSONResponse(error_body("GenerationFailed", detail, task_id=job.id), status_code=500)


def _validation_response(request: Request, exc: RequestValidationError, redact: Redact) -> JSONResponse:
    errors = [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": redact(str(err.get("msg", ""))),
            "type": err.get("type"),
        }
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    field_parts = [part for part in first["loc"] if part not in ("body", "query", "path")]
    field = ".".join(field_parts) or "body"
    return JSONResponse(
        error_body("ValidationError", f"{field}: {first['msg']}", field, errors=errors), status_code=422
    )


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """401, 404, 405...: the same body shape as every other error (the schema declares one)."""
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "Error"
    return JSONResponse(
        error_body(phrase.replace(" ", ""), str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


def install_gradio_error_handlers(app: FastAPI) -> None:
    """The mounted Gradio app answers an unknown `api_name` with a 404 naming it (Gradio raises, a 500)."""
    from gradio.route_utils import FnIndexInferError

    async def unknown_endpoint(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("UnknownEndpoint", str(exc), "api_name"), status_code=404)

    for route in app.routes:
        if isinstance(route, Mount) and hasattr(route.app, "get_blocks"):  # gradio.routes.App
            route.app.add_exception_handler(FnIndexInferError, unknown_endpoint)


def install_error_handlers(app: FastAPI, redact: Redact = _as_is) -> None:
    async def bad_input(request: Request, exc: Exception) -> JSONResponse:
        return request_error_response(exc, redact)  # type: ignore[arg-type]

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(request, exc, redact)

    async def duplicate(request: Request, exc: DuplicateTaskId) -> JSONResponse:
        return JSONResponse(error_body("DuplicateTaskId", redact(str(exc)), "force_task_id"), status_code=409)

    async def full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(error_body("QueueFull", str(exc)), status_code=503)

    async def failed_job(request: Request, exc: JobError) -> JSONResponse:
        return job_failure_response(exc.job, redact)

    async def anything(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        detail = redact(str(exc)) or "internal error"
        return JSONResponse(error_body(type(exc).__name__, detail), status_code=500)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, _http_error)
    for cls in (RequestError, OptionError, UpscaleError):
        app.add_exception_handler(cls, bad_input)
    app.add_exception_handler(DuplicateTaskId, duplicate)
    app.add_exception_handler(QueueFull, full)
    app.add_exception_handler(JobError, failed_job)
    app.add_exception_handler(Exception, anything)
