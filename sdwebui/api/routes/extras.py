"""Image tools: /sdapi/v1/extra-single-image and /extra-batch-images (upscale, with a second upscaler blended
in), and /png-info (read the parameters). Upscaling runs as a job of the queue: it uses the device like a
generation, and /interrupt stops it between tiles."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Body
from PIL import Image

from sdwebui.api import mapping
from sdwebui.api import models as m
from sdwebui.api.errors import job_failure_response
from sdwebui.api.routes.common import API, RouteContext
from sdwebui.engine import face_restoration, upscaling
from sdwebui.engine.context import JobContext
from sdwebui.engine.requests import RequestError
from sdwebui.jobs.queue import JobError
from sdwebui.services import AppServices, ExtrasStep


def router(ctx: RouteContext) -> APIRouter:
    router = APIRouter()
    services = ctx.services

    @router.post(f"{API}/extra-single-image", response_model=m.ExtrasSingleImageResponse)
    def extra_single_image(payload: m.ExtrasSingleImagePayload = Body(...)):
        image = mapping.decode_image(payload.image, "image", services.max_image_pixels)
        result = run_extras(services, [image], plan_extras(services, payload))
        if not isinstance(result, list):
            return result
        image, info = result[0]
        return m.ExtrasSingleImageResponse(html_info=_info_html(info), image=mapping.encode_png(image))

    @router.post(f"{API}/extra-batch-images", response_model=m.ExtrasBatchImagesResponse)
    def extra_batch_images(payload: m.ExtrasBatchImagesPayload = Body(...)):
        images = [
            mapping.decode_image(item.data, f"imageList[{n}].data", services.max_image_pixels)
            for n, item in enumerate(payload.imageList)
        ]
        result = run_extras(services, images, plan_extras(services, payload))
        if not isinstance(result, list):
            return result
        encoded = [mapping.encode_png(image) for image, _ in result]
        return m.ExtrasBatchImagesResponse(
            html_info=_info_html(result[0][1] if result else {}), images=encoded
        )

    @router.post(f"{API}/png-info", response_model=m.PNGInfoResponse)
    def png_info(payload: m.PNGInfoPayload = Body(...)):
        if not payload.image:
            return m.PNGInfoResponse(info="", items={}, parameters={})
        image = mapping.decode_image(payload.image, "image", services.max_image_pixels)
        items = {k: v for k, v in image.info.items() if isinstance(v, (str, int, float))}
        info = str(items.pop("parameters", ""))
        return m.PNGInfoResponse(info=info, items=items, parameters=_parse_infotext(info))

    return router


def plan_extras(services: AppServices, payload: m.ExtrasBasePayload) -> ExtrasRequest:
    """The request's upscaling, or RequestError / UpscaleError naming the field (422)."""
    models = services.upscalers()
    upscaler_1 = payload.upscaler_1 or "None"
    upscaler_2 = payload.upscaler_2 or "None"
    upscaling.check_name(upscaler_1, models, "upscaler_1")
    upscaling.check_name(upscaler_2, models, "upscaler_2")
    visibility = payload.extras_upscaler_2_visibility or 0.0
    if not 0.0 <= visibility <= 1.0:
        raise RequestError("extras_upscaler_2_visibility", f"must be between 0 and 1, got {visibility:g}")
    mode = 0 if payload.resize_mode is None else payload.resize_mode
    if mode not in (0, 1):
        raise RequestError("resize_mode", f"must be 0 (scale by) or 1 (scale to), got {payload.resize_mode}")
    factor = payload.upscaling_resize if payload.upscaling_resize is not None else 2.0
    size = (payload.upscaling_resize_w or 512, payload.upscaling_resize_h or 512)
    if mode == 1:  # the factor is checked against each image's size (_check_pixels)
        upscaling.target_size(Image.new("L", (1, 1)), size)
    crop = True if payload.upscaling_crop is None else bool(payload.upscaling_crop)
    faces = face_restoration.plan_extras_faces(
        payload.gfpgan_visibility,
        payload.codeformer_visibility,
        payload.codeformer_weight,
        services.face_restorers(),
    )
    step = services.postprocessing.prepare(dict(payload.scripts or {}))
    plan = upscaling.ExtrasPlan(upscaler_1, upscaler_2, visibility, mode, factor, size, crop)
    return ExtrasRequest(plan, faces, step)


@dataclass(frozen=True)
class ExtrasRequest:
    upscale: upscaling.ExtrasPlan
    faces: face_restoration.ExtrasFaces
    scripts: ExtrasStep  # the extensions' Extras steps, after the built-in ones


def _check_pixels(images: Sequence[Image.Image], plan: upscaling.ExtrasPlan, max_pixels: int) -> None:
    for image in images:
        width, height = upscaling.extras_output_size(image, plan)
        if width * height > max_pixels:
            raise RequestError(
                "upscaling_resize_w" if plan.resize_mode == 1 else "upscaling_resize",
                f"the result of {width}x{height} exceeds the limit of {max_pixels} pixels",
            )
        upscaling.target_size(image, (width, height))


def run_extras(services: AppServices, images: list[Image.Image], request: ExtrasRequest) -> Any:
    """Upscale `images` and restore their faces in one job of the default queue; the images, or the error
    response of the job."""
    plan = request.upscale
    _check_pixels(images, plan, services.max_image_pixels)
    models, restorers = services.upscalers(), services.face_restorers()
    unload = bool(services.options.get("face_restoration_unload", False))

    def work(ctx: JobContext) -> list[Image.Image]:
        done = []
        for index, image in enumerate(images):
            if ctx.interrupted:
                break
            upscaled = upscaling.upscale_extras(
                image, plan, models, ctx, upscaling.tile_progress(ctx, index, len(images))
            )
            restored = face_restoration.restore_extras(upscaled, request.faces, restorers, unload)
            done.append(request.scripts(restored))
        return done

    job = services.jobs.submit(work, kind="extras")
    try:
        return job.wait()
    except JobError as error:
        return job_failure_response(error.job, services.paths.redact)


def _info_html(info: dict[str, Any]) -> str:
    """The Extras scripts' infotext items (PostprocessedImage.info), as A1111 lists them: "key: value, ..."."""
    return html.escape(", ".join(f"{key}: {value}" for key, value in info.items()))


def _parse_infotext(info: str) -> dict[str, Any]:
    if not info:
        return {}
    from sdwebui.engine.infotext_fields import parse_infotext

    return parse_infotext(info)
