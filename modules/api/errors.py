"""Every error as JSON naming the field and the reason: 422 for bad input, never a bare 500."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Mount

from modules.engine.requests import RequestError
from modules.jobs import DuplicateTaskId, Job, JobError, JobState, QueueFull
from modules.options import OptionError
from modules.samplers import SamplerUnavailableError, UnsupportedScheduleError
from modules.sd_models.errors import CheckpointLoadError
from modules.upscaling import UpscaleError

log = logging.getLogger(__name__)


def error_body(error: str, detail: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail, "field": field, **extra}


def request_error_response(exc: RequestError | OptionError | UpscaleError) -> JSONResponse:
    field = getattr(exc, "field", None) or getattr(exc, "key", None)
    return JSONResponse(error_body(type(exc).__name__, str(exc), field), status_code=422)


def job_failure_response(job: Job) -> JSONResponse:
    """A failed or cancelled job: 422 when the engine rejected the input, else the job's error message."""
    exc = job.exception
    if isinstance(exc, (RequestError, OptionError, UpscaleError)):
        return request_error_response(exc)
    if isinstance(exc, CheckpointLoadError):  # the message names the file and what is wrong with it
        return JSONResponse(
            error_body("CheckpointLoadError", str(exc), "sd_model_checkpoint"), status_code=422
        )
    if isinstance(exc, UnsupportedScheduleError):
        return JSONResponse(error_body(type(exc).__name__, str(exc), "scheduler"), status_code=422)
    if isinstance(exc, SamplerUnavailableError):
        return JSONResponse(error_body(type(exc).__name__, str(exc), "sampler_name"), status_code=422)
    if job.state is JobState.CANCELLED:
        return JSONResponse(
            error_body("TaskCancelled", job.error or "cancelled", task_id=job.id), status_code=409
        )
    return JSONResponse(
        error_body("GenerationFailed", f"task {job.id} failed: {job.error}", task_id=job.id), status_code=500
    )


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
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


def install_error_handlers(app: FastAPI) -> None:
    async def bad_input(request: Request, exc: Exception) -> JSONResponse:
        return request_error_response(exc)  # type: ignore[arg-type]

    async def duplicate(request: Request, exc: DuplicateTaskId) -> JSONResponse:
        return JSONResponse(error_body("DuplicateTaskId", str(exc), "force_task_id"), status_code=409)

    async def full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(error_body("QueueFull", str(exc)), status_code=503)

    async def failed_job(request: Request, exc: JobError) -> JSONResponse:
        return job_failure_response(exc.job)

    async def anything(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(type(exc).__name__, str(exc) or "internal error"), status_code=500)

    app.add_exception_handler(RequestValidationError, _validation_response)
    app.add_exception_handler(HTTPException, _http_error)
    for cls in (RequestError, OptionError, UpscaleError):
        app.add_exception_handler(cls, bad_input)
    app.add_exception_handler(DuplicateTaskId, duplicate)
    app.add_exception_handler(QueueFull, full)
    app.add_exception_handler(JobError, failed_job)
    app.add_exception_handler(Exception, anything)
