"""sd-webui-controlnet's API: /controlnet/* routes, and its units in `alwayson_scripts.controlnet.args`.

The shapes are the extension's (scripts/api.py of Mikubill/sd-webui-controlnet): clients such as editor
plugins and ADetailer call these routes and test `"controlnet" in /sdapi/v1/scripts`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Query

from sdwebui.api import mapping
from sdwebui.api.routes.common import RouteContext
from sdwebui.engine.controlnet import preprocessors
from sdwebui.engine.controlnet.prepare import check_units, module_files
from sdwebui.engine.controlnet.units import ARGS_FIELD, ControlNetUnit, parse_units
from sdwebui.engine.errors import RequestError
from sdwebui.services import AppServices

API_VERSION = 3  # what the extension's get_api_version() answers
SCRIPT_NAME = "controlnet"


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter(tags=["controlnet"])
    services = ctx.services

    @router.get("/controlnet/version")
    def version() -> dict[str, int]:
        return {"version": API_VERSION}

    @router.get("/controlnet/model_list")
    def model_list(
        update: bool = Query(True, description="rescan models/ControlNet first"),
    ) -> dict[str, Any]:
        store = services.controlnets
        if store is None:
            return {"model_list": [], "broken": []}
        if update:
            store.library.refresh()
        entries = store.library.entries()
        broken = [
            {"name": e.title, "error": services.paths.redact(e.error or "")} for e in entries if not e.usable
        ]
        return {"model_list": [e.title for e in entries if e.usable], "broken": broken}

    @router.get("/controlnet/module_list")
    def module_list(alias_names: bool = Query(False)) -> dict[str, Any]:
        annotators = _annotators(services)
        names = preprocessors.module_names(annotators)
        if alias_names:
            aliases = preprocessors.module_aliases(annotators)
            names = [aliases.get(name, name) for name in names]
        return {"module_list": names, "module_detail": preprocessors.module_detail(alias_names, annotators)}

    @router.get("/controlnet/control_types")
    def control_types() -> dict[str, Any]:
        titles = services.controlnets.library.titles() if services.controlnets else []
        return {"control_types": preprocessors.control_types(["None", *titles], _annotators(services))}

    @router.get("/controlnet/settings")
    def settings() -> dict[str, int]:
        return {"control_net_unit_count": int(services.options.get("control_net_unit_count", 3))}

    @router.post("/controlnet/detect")
    def detect(
        controlnet_module: str = Body("none"),
        controlnet_input_images: list[str] = Body([]),
        controlnet_processor_res: int = Body(-1),
        controlnet_threshold_a: float = Body(-1),
        controlnet_threshold_b: float = Body(-1),
        controlnet_masks: list[str] = Body([]),
        low_vram: bool = Body(False),
    ) -> dict[str, Any]:
        annotators = _annotators(services)
        preprocessors.lookup(controlnet_module, annotators, field_name="controlnet_module")
        if not controlnet_input_images:
            raise HTTPException(status_code=422, detail="No image selected")
        params = preprocessors.resolve_params(
            controlnet_module,
            controlnet_processor_res,
            controlnet_threshold_a,
            controlnet_threshold_b,
            annotators,
        )
        images = []
        for i, data in enumerate(controlnet_input_images):
            image = mapping.decode_image(data, f"controlnet_input_images[{i}]", services.max_image_pixels)
            mask = None
            if i < len(controlnet_masks) and controlnet_masks[i]:
                mask = mapping.decode_image(
                    controlnet_masks[i], f"controlnet_masks[{i}]", services.max_image_pixels
                )
            detected = preprocessors.run_preprocessor(
                controlnet_module, image, params, mask, annotators, field_name="controlnet_module"
            )
            images.append(mapping.encode_png(detected))
        return {"images": images, "info": "Success"}

    return router


def _annotators(services: AppServices):
    return module_files(services.controlnets)


def take_units(
    services: AppServices, alwayson: dict[str, Any] | None
) -> tuple[list[ControlNetUnit], dict[str, Any]]:
    """The ControlNet units of a payload's `alwayson_scripts` (checked: RequestError naming `args[i].field`)
    and the other scripts' entries, which go to the extension scripts as before."""
    rest, units = {}, []
    max_pixels = services.max_image_pixels

    def decode(data: Any, name: str):
        return mapping.decode_image(data, name, max_pixels)

    for title, value in (alwayson or {}).items():
        if title.lower() != SCRIPT_NAME:
            rest[title] = value
            continue
        args = (
            value.args
            if hasattr(value, "args")
            else (value.get("args") if isinstance(value, dict) else value)
        )
        if args is None:
            continue
        units = parse_units(args, decode, ARGS_FIELD)
    count = int(services.options.get("control_net_unit_count", 3))
    if len(units) > max(count, 1) and any(u.enabled for u in units[count:]):
        raise RequestError(
            ARGS_FIELD, f"{len(units)} units given; the ControlNet unit number setting allows {count}"
        )
    check_units(units, services.controlnets, _annotators(services))
    if services.options.get("control_net_no_detectmap", False):  # the extension's "Do not append detectmap"
        units = [dataclasses.replace(u, save_detected_map=False) for u in units]
    return units, rest


def _default_unit() -> dict[str, Any]:
    """The extension's default unit (`ControlNetUnit()` dumped, in its field order): clients post it back."""
    unit = ControlNetUnit()
    return {
        "is_ui": False, "input_mode": "simple", "batch_images": None, "output_dir": "", "loopback": False,
        "enabled": unit.enabled, "module": unit.module, "model": unit.model, "weight": unit.weight,
        "image": None, "resize_mode": unit.resize_mode.value, "low_vram": unit.low_vram,
        "processor_res": unit.processor_res, "threshold_a": unit.threshold_a, "threshold_b": unit.threshold_b,
        "guidance_start": unit.guidance_start, "guidance_end": unit.guidance_end,
        "pixel_perfect": unit.pixel_perfect, "control_mode": unit.control_mode.value,
        "inpaint_crop_input_image": unit.inpaint_crop_input_image, "hr_option": unit.hr_option.value,
        "save_detected_map": unit.save_detected_map, "advanced_weighting": None,
        "effective_region_mask": None, "pulid_mode": unit.pulid_mode,
        "union_control_type": unit.union_control_type,
    }  # fmt: skip


def script_info(infos: list[dict[str, Any]], unit_count: int) -> list[dict[str, Any]]:
    """/sdapi/v1/script-info with the built-in ControlNet's entries, as the extension's script declares
    itself: always on, one argument per unit (a gr.State without a label, its value the default unit)."""
    ours = [
        {
            "name": SCRIPT_NAME,
            "is_img2img": is_img2img,
            "is_alwayson": True,
            "args": [{"label": None, "value": _default_unit()} for _ in range(max(1, unit_count))],
        }
        for is_img2img in (False, True)
    ]
    taken = {(info.get("name"), info.get("is_img2img")) for info in infos}
    return infos + [info for info in ours if (info["name"], info["is_img2img"]) not in taken]


def script_titles(titles: list[str]) -> list[str]:
    """/sdapi/v1/scripts lists the built-in ControlNet as the extension's script."""
    return titles if SCRIPT_NAME in titles else [*titles, SCRIPT_NAME]
