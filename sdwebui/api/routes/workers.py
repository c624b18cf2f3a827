"""GET /sdapi/v1/workers (our addition): the workers that run jobs, what each holds and is doing.

With --workers / --ray-address these are the pool's Ray actors (sdwebui.jobs.ray_pool); by default the
one in-process worker stack. Documented in the README ("Several GPUs and machines").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from sdwebui.api.routes.common import API, RouteContext


class WorkerItem(BaseModel):
    id: str = Field(description="worker0, worker1, ... (stack0 without a pool)")
    node: str | None = Field(None, description="host name of the machine it runs on")
    pid: int | None = None
    device: str | None = None
    loaded_models: list[str] = Field(default_factory=list, description="checkpoint files it holds")
    loaded_loras: list[str] = Field(
        default_factory=list, description="LoRA files it holds read (jobs naming them prefer this worker)"
    )
    current_job: str | None = Field(None, description="the task id it runs now")
    next_job: str | None = Field(
        None, description="the task id sent to it ahead, to start when the current one ends (still queued)"
    )
    jobs_done: int = 0
    ready: bool = Field(True, description="false while it starts (or is being replaced after a crash)")
    restarts: int = Field(0, description="replacements started after it died")
    dispatch_overhead_ms: float | None = Field(
        None,
        description="mean time per job from when the worker could begin it to its result in front, less its run",
    )
    memory: dict[str, Any] = Field(default_factory=dict)


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services = ctx.services

    @router.get(f"{API}/workers", response_model=list[WorkerItem])
    def workers():
        return [WorkerItem(**dataclasses.asdict(row)) for row in services.workers()]

    return router
