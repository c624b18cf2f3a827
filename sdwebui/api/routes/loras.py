"""LoRA files: GET /sdapi/v1/loras (A1111's Lora extension shape) and POST /sdapi/v1/refresh-loras."""

from __future__ import annotations

from fastapi import APIRouter

from sdwebui.api import models as m
from sdwebui.api.routes.common import API, RouteContext


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services = ctx.services

    @router.get(f"{API}/loras", response_model=list[m.LoraItem])
    def loras():
        entries = services.loras.entries() if services.loras is not None else []
        return [
            m.LoraItem(name=e.name, alias=e.alias, path=str(e.path), metadata=e.parsed_metadata())
            for e in entries
        ]

    @router.post(f"{API}/refresh-loras")
    def refresh_loras():
        if services.loras is not None:
            services.loras.refresh()
        return None

    return router
