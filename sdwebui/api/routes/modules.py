"""Forge's /sdapi/v1/sd-modules: the VAE and text encoder files that `forge_additional_modules` may name."""

from __future__ import annotations

from fastapi import APIRouter

from sdwebui.api import models as m
from sdwebui.api.routes.common import API, RouteContext


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services = ctx.services

    @router.get(f"{API}/sd-modules", response_model=list[m.SDModuleItem])
    def sd_modules():
        files = getattr(services.models, "module_files", lambda: [])()
        return [m.SDModuleItem(model_name=name, filename=str(path)) for name, path in files]

    return router
