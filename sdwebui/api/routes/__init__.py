"""/sdapi/v1 (A1111-compatible) and /internal/progress routes over AppServices, one router per resource.

Generation endpoints queue a job and wait for it, or with `?async=true` answer at once with a task id whose
status and result are at GET /sdapi/v1/tasks/{task_id} (our extension, documented in docs/api.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from sdwebui.api.auth import no_auth
from sdwebui.api.routes import (
    checkpoints,
    control,
    controlnet,
    embeddings,
    extras,
    generation,
    lists,
    loras,
    modules,
    options,
    tasks,
    workers,
)
from sdwebui.api.routes.common import ERROR_RESPONSES, RouteContext
from sdwebui.services import AppServices

__all__ = ["ERROR_RESPONSES", "create_api_router"]

# in the order of the OpenAPI document
_ROUTERS = (
    generation,
    tasks,
    control,
    options,
    checkpoints,
    modules,
    loras,
    lists,
    embeddings,
    extras,
    workers,
    controlnet,
)


def create_api_router(services: AppServices, auth_dependency=None) -> APIRouter:
    """`auth_dependency` checks credentials and returns the Caller; routes that need the caller depend on it
    again (FastAPI evaluates it once per request)."""
    dependencies = [Depends(auth_dependency)] if auth_dependency else []
    router = APIRouter(dependencies=dependencies, responses=ERROR_RESPONSES)
    ctx = RouteContext(services, auth_dependency or no_auth)
    for module in _ROUTERS:
        router.include_router(module.router(ctx))
    return router
