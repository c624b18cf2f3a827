"""The read-only lists: samplers, schedulers, upscalers, styles, embeddings, memory, scripts, extensions."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from sdwebui.api import models as m
from sdwebui.api.routes import controlnet
from sdwebui.api.routes.common import API, RouteContext
from sdwebui.engine import upscaling


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services = ctx.services

    @router.get(f"{API}/samplers", response_model=list[m.SamplerItem])
    def samplers():
        from sdwebui.engine import samplers as sampler_registry

        return sampler_registry.samplers_for_api()

    @router.get(f"{API}/schedulers", response_model=list[m.SchedulerItem])
    def schedulers():
        from sdwebui.engine import samplers as sampler_registry

        return sampler_registry.schedulers_for_api()

    @router.get(f"{API}/upscalers", response_model=list[m.UpscalerItem])
    def upscalers():
        """None, Lanczos, Nearest, then every file of the upscaler folders (a broken one with its `error`)."""
        plain = [m.UpscalerItem(name=name, scale=4.0) for name in upscaling.UPSCALERS]
        library = services.upscaler_library
        files = library.entries() if library is not None else []
        return plain + [
            m.UpscalerItem(
                name=e.name,
                model_name=e.name,
                model_path=services.paths.redact(str(e.path)),
                scale=e.scale,
                error=services.paths.redact(e.error) if e.error else None,
            )
            for e in files
        ]

    @router.get(f"{API}/realesrgan-models", response_model=list[m.RealesrganItem])
    def realesrgan_models():
        library = services.upscaler_library
        files = library.usable() if library is not None else []
        return [
            m.RealesrganItem(name=e.name, path=services.paths.redact(str(e.path)), scale=e.scale)
            for e in files
            if e.family == "RealESRGAN"
        ]

    @router.get(f"{API}/latent-upscale-modes", response_model=list[m.LatentUpscalerModeItem])
    def latent_upscale_modes():
        return []

    @router.get(f"{API}/prompt-styles", response_model=list[m.PromptStyleItem])
    def prompt_styles():
        return [
            m.PromptStyleItem(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt)
            for s in services.styles.all()
        ]

    @router.get(f"{API}/memory", response_model=m.MemoryResponse)
    def memory():
        return m.MemoryResponse(ram=_ram(), cuda=_cuda())

    @router.get(f"{API}/scripts", response_model=m.ScriptsList)
    def scripts():
        return m.ScriptsList(
            txt2img=controlnet.script_titles(services.scripts.titles("txt2img")),
            img2img=controlnet.script_titles(services.scripts.titles("img2img")),
        )

    @router.get(f"{API}/script-info")
    def script_info() -> list[dict[str, Any]]:
        return services.scripts.script_info()

    @router.get(f"{API}/extensions")
    def extensions() -> list[dict[str, Any]]:
        return services.extension_list()

    for name in ("face-restorers", "hypernetworks"):
        router.add_api_route(f"{API}/{name}", _empty_list, methods=["GET"], name=name)

    return router


def _empty_list() -> list[Any]:
    return []


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
