"""/sdapi/v1/options (through the queue: a checkpoint change loads that model) and /cmd-flags."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Body

from sdwebui.api.routes.common import API, RouteContext

SECRET_FLAG = re.compile(r"auth|password|passwd|secret|token|key", re.IGNORECASE)


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services = ctx.services

    @router.get(f"{API}/options")
    def get_options() -> dict[str, Any]:
        return services.options.items()

    @router.post(f"{API}/options")
    def set_options(values: dict[str, Any] = Body(...)):
        known = services.options.items()
        services.set_options({key: value for key, value in values.items() if key in known})
        return None

    @router.get(f"{API}/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return {
            key: ("<hidden>" if value and SECRET_FLAG.search(key) and isinstance(value, str) else value)
            for key, value in vars(services.args).items()
        }

    return router
