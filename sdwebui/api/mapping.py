"""A1111 payloads -> typed engine requests, and results -> A1111 response bodies.

Everything a client can get wrong is turned into RequestError(field, reason) here, before a job is queued.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from sdwebui.api import models
from sdwebui.config.options import Options
from sdwebui.config.resolve import RawFields, RawImg2ImgFields, SettingsSource, field_names, resolve
from sdwebui.config.styles import StyleDatabase
from sdwebui.engine import info_json as info_json_builder
from sdwebui.engine.requests import GenerationResult, Img2ImgRequest, RequestError, Txt2ImgRequest

VERSION = info_json_builder.VERSION
_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


def decode_image(data: Any, field_name: str, max_pixels: int) -> Image.Image:
    """base64 PNG/JPEG/WebP, with or without a data: URL prefix -> RGB(A) PIL image, size-checked."""
    if not isinstance(data, str) or not data.strip():
        raise RequestError(field_name, "expected a base64-encoded image")
    text = _DATA_URL.sub("", data.strip(), count=1)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(field_name, f"not valid base64: {exc}") from exc
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
        if width * height > max_pixels:
            raise RequestError(
                field_name, f"image of {width}x{height} exceeds the limit of {max_pixels} pixels"
            )
        image.load()
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(field_name, f"not a readable image: {exc}") from exc
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return image


def encode_png(image: Image.Image, infotext: str | None = None) -> str:
    pnginfo = None
    if infotext:
        pnginfo = PngImagePlugin.PngInfo()
        pnginfo.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_jpeg_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# k-diffusion "sigma churn" knobs: A1111's values that mean "off"; diffusers' schedulers have no such options
_SAMPLER_KNOBS_OFF = {"s_churn": 0.0, "s_tmin": 0.0}


def _refuse_unsupported(payload: models.GenerationPayload) -> None:
    """Features a client may ask for that this server cannot do: refuse rather than silently ignore.

    A field that only matters together with a switch (hr_* with enable_hr, refiner_switch_at with
    refiner_checkpoint) is accepted while the switch is off, as A1111 does and as clients such as webuiapi
    always send it."""
    if payload.tiling:
        raise RequestError("tiling", "seamless tiling is not available on this server")
    for name, off in _SAMPLER_KNOBS_OFF.items():
        value = getattr(payload, name)
        if value is not None and value != off:
            raise RequestError(
                name, f"{name}={value:g} is not supported by the diffusers samplers; use {off:g}"
            )
    if payload.s_tmax is not None and payload.s_tmax not in (0.0, float("inf")):
        raise RequestError("s_tmax", f"s_tmax={payload.s_tmax:g} is not supported; use 0 (no limit)")
    if payload.s_noise is not None and payload.s_noise != 1.0:
        raise RequestError("s_noise", f"s_noise={payload.s_noise:g} is not supported; only 1.0 is")
    if payload.infotext:
        raise RequestError(
            "infotext", "filling a request from an infotext is not supported yet; send the fields"
        )
    if isinstance(payload, models.Img2ImgPayload):
        if payload.latent_mask:
            raise RequestError("latent_mask", "latent_mask is not supported")
        if payload.mask_round is False:
            raise RequestError(
                "mask_round", "only the rounded mask (mask_round=true, A1111's default) is supported"
            )


def build_request(
    payload: models.GenerationPayload, options: Options, styles: StyleDatabase, max_pixels: int
) -> Txt2ImgRequest | Img2ImgRequest:
    """Map a txt2img/img2img payload onto a validated engine request (sdwebui.config.resolve)."""
    _refuse_unsupported(payload)
    overrides = _with_payload_settings(payload)
    resolved = resolve(raw_fields(payload, max_pixels), options, overrides, SettingsSource(styles=styles))
    return resolved.request


def _with_payload_settings(payload: models.GenerationPayload) -> dict[str, Any]:
    """The request's override_settings plus the payload fields A1111 reads as per-job settings: `s_min_uncond`
    (Negative Guidance minimum sigma) unless override_settings names it too."""
    overrides = dict(payload.override_settings or {})
    value = payload.s_min_uncond
    if value is not None and value != 0.0 and "s_min_uncond" not in overrides:
        if not math.isfinite(value) or not 0.0 <= value <= 15.0:
            raise RequestError("s_min_uncond", f"s_min_uncond={value!r} must be a number from 0 to 15")
        overrides["s_min_uncond"] = float(value)
    return overrides


def raw_fields(payload: models.GenerationPayload, max_pixels: int) -> RawFields:
    """The payload's fields as the resolution's record; images decoded (a bad one is a RequestError)."""
    is_img2img = isinstance(payload, models.Img2ImgPayload)
    record = RawImg2ImgFields if is_img2img else RawFields
    given = {name: getattr(payload, name) for name in field_names(record) if hasattr(payload, name)}
    given["sampler_name"] = payload.sampler_name or payload.sampler_index
    # the API saves nothing unless asked (A1111: do_not_save_samples = not save_images)
    given["save_images"] = bool(payload.save_images)
    given["restore_faces"], given["tiling"] = bool(payload.restore_faces), bool(payload.tiling)
    if not is_img2img:
        given["enable_hr"] = bool(payload.enable_hr)
        return RawFields(**given)
    given["init_images"] = [
        decode_image(data, f"init_images[{index}]", max_pixels)
        for index, data in enumerate(payload.init_images or [])
    ]
    given["mask"] = decode_image(payload.mask, "mask", max_pixels) if payload.mask else None
    if payload.mask_blur is not None:  # A1111: mask_blur sets both directions
        given["mask_blur_x"] = given["mask_blur_y"] = payload.mask_blur
    given["inpaint_full_res"] = bool(payload.inpaint_full_res)
    given["include_init_images"] = bool(payload.include_init_images)
    return RawImg2ImgFields(**given)


def info_json(result: GenerationResult, request: Txt2ImgRequest, model_info: dict[str, Any]) -> str:
    """A1111's `info` string: first-image values plus per-image lists (sdwebui.engine.info_json)."""
    names = info_json_builder.ModelNames(
        sd_model_name=model_info.get("sd_model_name"),
        sd_model_hash=model_info.get("sd_model_hash"),
        sd_vae_name=model_info.get("sd_vae_name"),
        sd_vae_hash=model_info.get("sd_vae_hash"),
        is_inpainting=bool(model_info.get("is_inpainting")),
    )
    info = info_json_builder.from_result(result, request, names)
    info.worker = model_info.get("worker")
    return info.dumps()


def response_parameters(payload: models.GenerationPayload) -> dict[str, Any]:
    """A1111 echoes the request as `parameters`, without the init images unless asked."""
    params = payload.model_dump()
    if isinstance(payload, models.Img2ImgPayload) and not payload.include_init_images:
        params["init_images"] = None
        params["mask"] = None
    return params


def build_response(
    payload: models.GenerationPayload,
    request: Txt2ImgRequest,
    result: GenerationResult,
    model_info: dict[str, Any],
) -> models.GenerationResponse:
    images: list[str] | None = None
    if payload.send_images is not False:
        images = [encode_png(item.image, item.infotext) for item in result.images]
        if isinstance(request, Img2ImgRequest) and request.include_init_images:
            images += [encode_png(image) for image in request.init_images]
        images += [encode_png(image) for image in result.extra_images]  # ControlNet's detected maps
    return models.GenerationResponse(
        images=images,
        parameters=response_parameters(payload),
        # the request as it ran (sizes resolved to the model's, scripts' changes)
        info=info_json(result, result.request or request, model_info),
    )
