"""Checkpoints and VAEs: /sdapi/v1/sd-models, /sd-vae, refresh, unload and reload (loads go through the queue)."""

from __future__ import annotations

from fastapi import APIRouter

from sdwebui.api import models as m
from sdwebui.api.routes.common import API, RouteContext
from sdwebui.models.dit.checkpoints import checkpoint_family
from sdwebui.services import AppServices


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services = ctx.services
    jobs = services.jobs

    @router.get(f"{API}/sd-models", response_model=list[m.SDModelItem])
    def sd_models():
        return [
            m.SDModelItem(
                title=info.title,
                model_name=info.name,
                hash=info.shorthash,
                sha256=info.sha256,
                filename=info.filename,
                config=str(info.config_path) if info.config_path else None,
                family=checkpoint_family(info),
            )
            for info in services.models.checkpoints()
        ]

    @router.get(f"{API}/sd-vae", response_model=list[m.SDVaeItem])
    def sd_vae():
        return [m.SDVaeItem(model_name=name, filename=path) for name, path in _vae_files(services)]

    @router.post(f"{API}/refresh-checkpoints")
    def refresh_checkpoints():
        services.models.refresh()
        return None

    @router.post(f"{API}/refresh-vae")
    def refresh_vae():
        services.models.refresh()
        return None

    @router.post(f"{API}/unload-checkpoint")
    def unload_checkpoint():
        jobs.run(lambda ctx: services.models.unload(), kind="model")
        return None

    @router.post(f"{API}/reload-checkpoint")
    def reload_checkpoint():
        jobs.run(lambda ctx: services.load_plain_model() and None, kind="model")  # the settings' checkpoint
        return None

    return router


def _vae_files(services: AppServices) -> list[tuple[str, str]]:
    files = getattr(services.models, "vae_files", None)
    if callable(files):
        return [(name, str(path)) for name, path in files()]
    return [(name, name) for name in services.models.vae_names()]
