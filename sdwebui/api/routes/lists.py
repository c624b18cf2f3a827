"""The read-only lists: samplers, schedulers, upscalers, styles, embeddings, memory, scripts, extensions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sdwebui.api import models as m
from sdwebui.api.routes import controlnet
from sdwebui.api.routes.common import API, RouteContext
from sdwebui.engine import upscaling
from sdwebui.engine.memory import stats as memory_stats
from sdwebui.models.face_restorers import RESTORERS


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

    _memory_route(router, services)

    @router.get(f"{API}/scripts", response_model=m.ScriptsList)
    def scripts():
        return m.ScriptsList(
            txt2img=controlnet.script_titles(services.scripts.titles("txt2img")),
            img2img=controlnet.script_titles(services.scripts.titles("img2img")),
        )

    @router.get(f"{API}/script-info")
    def script_info() -> list[dict[str, Any]]:
        count = int(services.options.get("control_net_unit_count", 3))
        return controlnet.script_info(services.scripts.script_info(), count)

    @router.get(f"{API}/extensions")
    def extensions() -> list[dict[str, Any]]:
        return services.extension_list()

    _face_restorers_route(router, services)
    router.add_api_route(f"{API}/hypernetworks", _empty_list, methods=["GET"], name="hypernetworks")

    return router


def _face_restorers_route(router: APIRouter, services) -> None:
    @router.get(f"{API}/face-restorers")
    def face_restorers() -> list[dict[str, Any]]:
        """A1111's list: each restorer's name and the folder its file is looked for in (cmd_dir)."""
        library = services.face_restorer_library
        if library is None:
            return []
        return [{"name": name, "cmd_dir": str(library.folders.of(name)[-1])} for name in RESTORERS]


def _memory_route(router: APIRouter, services) -> None:
    # `workers` is sent only with a pool (--workers): each worker process's own memory
    @router.get(f"{API}/memory", response_model=m.MemoryResponse, response_model_exclude_unset=True)
    def memory():
        ram, cuda = memory_stats.ram(), memory_stats.cuda()
        if services.pool is None:
            return m.MemoryResponse(ram=ram, cuda=cuda)
        workers = [{"id": row.id, **row.memory} for row in services.workers(with_memory=True)]
        return m.MemoryResponse(ram=ram, cuda=cuda, workers=workers)


def _empty_list() -> list[Any]:
    return []
