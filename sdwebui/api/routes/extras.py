"""Single-image operations: /sdapi/v1/extra-single-image (upscale) and /png-info (read the parameters)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from sdwebui.api import mapping
from sdwebui.api import models as m
from sdwebui.api.routes.common import API, RouteContext
from sdwebui.engine import upscaling
from sdwebui.engine.requests import RequestError


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services = ctx.services

    @router.post(f"{API}/extra-single-image", response_model=m.ExtrasSingleImageResponse)
    def extra_single_image(payload: m.ExtrasSingleImagePayload = Body(...)):
        return upscale_single_image(payload, services.max_image_pixels)

    @router.post(f"{API}/png-info", response_model=m.PNGInfoResponse)
    def png_info(payload: m.PNGInfoPayload = Body(...)):
        if not payload.image:
            return m.PNGInfoResponse(info="", items={}, parameters={})
        image = mapping.decode_image(payload.image, "image", services.max_image_pixels)
        items = {k: v for k, v in image.info.items() if isinstance(v, (str, int, float))}
        info = str(items.pop("parameters", ""))
        return m.PNGInfoResponse(info=info, items=items, parameters=_parse_infotext(info))

    return router


def upscale_single_image(payload: m.ExtrasSingleImagePayload, max_pixels: int) -> m.ExtrasSingleImageResponse:
    image = mapping.decode_image(payload.image, "image", max_pixels)
    if payload.upscaler_2 not in (None, "None") and (payload.extras_upscaler_2_visibility or 0) > 0:
        raise RequestError("upscaler_2", "a second upscaler is not supported yet")
    if payload.gfpgan_visibility or payload.codeformer_visibility:
        raise RequestError("gfpgan_visibility", "face restoration is not available on this server")
    if payload.resize_mode == 1:
        scale: Any = (payload.upscaling_resize_w or 512, payload.upscaling_resize_h or 512)
    elif payload.resize_mode in (None, 0):
        scale = payload.upscaling_resize if payload.upscaling_resize is not None else 2.0
    else:
        raise RequestError("resize_mode", f"must be 0 (scale by) or 1 (scale to), got {payload.resize_mode}")
    width, height = upscaling.target_size(image, scale)
    if width * height > max_pixels:
        raise RequestError(
            "upscaling_resize_w" if payload.resize_mode == 1 else "upscaling_resize",
            f"the result of {width}x{height} exceeds the limit of {max_pixels} pixels",
        )
    upscaled = upscaling.upscale(image, scale, payload.upscaler_1 or "None")
    return m.ExtrasSingleImageResponse(html_info="", image=mapping.encode_png(upscaled))


def _parse_infotext(info: str) -> dict[str, Any]:
    if not info:
        return {}
    from sdwebui.engine.infotext_fields import parse_infotext

    return parse_infotext(info)
