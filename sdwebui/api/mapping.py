"""A1111 payloads -> typed engine requests, and results -> A1111 response bodies.

Everything a client can get wrong is turned into RequestError(field, reason) here, before a job is queued.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from sdwebui.api import models
from sdwebui.config.options import LIMIT_PREFIX, OptionError, Options
from sdwebui.config.styles import StyleDatabase
from sdwebui.engine.requests import GenerationResult, Img2ImgRequest, RequestError, Txt2ImgRequest
from sdwebui.outputs import info_json as info_json_builder

VERSION = info_json_builder.VERSION
_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
# Options a request may override and how they reach the request (A1111 option -> request field)
_OVERRIDE_TO_REQUEST = {"CLIP_stop_at_last_layers": "clip_skip", "img2img_fix_steps": "img2img_fix_steps"}


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


def check_overrides(options: Options, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Validate override_settings against the registered options; returns the coerced values."""
    checked: dict[str, Any] = {}
    known = options.items()
    for key, value in (overrides or {}).items():
        if key not in known:
            raise RequestError("override_settings", f"unknown setting {key!r}")
        if key.startswith(LIMIT_PREFIX):  # a request must not lift the limits that bound it
            raise RequestError("override_settings", f"{key} cannot be overridden per request")
        if not options.same_type(key, value):
            expected = type(options.data_labels[key].default).__name__
            raise RequestError("override_settings", f"{key}: expected a {expected}, got {value!r}")
        try:  # range, choices (a clip skip of 99 or an unknown sampler would fail inside the job)
            options.check(key, value)
        except OptionError as exc:
            raise RequestError("override_settings", str(exc)) from exc
        checked[key] = value
    return checked


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _resolve_sampler(payload: models.GenerationPayload, options: Options) -> tuple[str, str]:
    from sdwebui.engine import samplers

    name = payload.sampler_name or payload.sampler_index or options.get("default_sampler", "Euler a")
    try:
        info, schedule = samplers.resolve_sampler(name, payload.scheduler)
    except samplers.UnknownSamplerError as exc:
        field_name = "scheduler" if "schedule type" in str(exc) else "sampler_name"
        raise RequestError(field_name, str(exc)) from exc
    try:  # the sampler/schedule/eta combination, checked now rather than failing inside the job
        samplers.create_scheduler(info.name, schedule, {}, payload.eta)
    except samplers.UnsupportedScheduleError as exc:
        field_name = "eta" if str(exc).startswith("eta=") else "scheduler"
        raise RequestError(field_name, str(exc)) from exc
    except samplers.SamplerUnavailableError as exc:
        raise RequestError("sampler_name", str(exc)) from exc
    return info.name, schedule


# k-diffusion "sigma churn" knobs: A1111's values that mean "off"; diffusers' schedulers have no such options
_SAMPLER_KNOBS_OFF = {"s_churn": 0.0, "s_tmin": 0.0, "s_min_uncond": 0.0}


def _refuse_unsupported(payload: models.GenerationPayload) -> None:
    """Features a client may ask for that this server cannot do: refuse rather than silently ignore.

    A field that only matters together with a switch (hr_* with enable_hr, refiner_switch_at with
    refiner_checkpoint) is accepted while the switch is off, as A1111 does and as clients such as webuiapi
    always send it."""
    if payload.restore_faces:
        raise RequestError("restore_faces", "face restoration is not available on this server")
    if payload.tiling:
        raise RequestError("tiling", "seamless tiling is not available on this server")
    if payload.refiner_checkpoint and payload.refiner_checkpoint.lower() not in ("none", ""):
        raise RequestError("refiner_checkpoint", "refiner switching is not supported yet")
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
    if isinstance(payload, models.Txt2ImgPayload) and payload.enable_hr:
        raise RequestError("enable_hr", "hires. fix is not supported yet")
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
    """Map a txt2img/img2img payload onto a validated engine request."""
    _refuse_unsupported(payload)
    overrides = check_overrides(options, payload.override_settings)
    merged = {**options.items(), **overrides}
    sampler_name, scheduler = _resolve_sampler(payload, options)
    style_names = list(payload.styles or [])
    styles.check(style_names)  # an unknown style is a 422 now; the engine applies them (once) when it runs
    common: dict[str, Any] = {
        "prompt": payload.prompt or "",
        "negative_prompt": payload.negative_prompt or "",
        "styles": style_names,
        "seed": _pick(payload.seed, -1),
        "subseed": _pick(payload.subseed, -1),
        "subseed_strength": _pick(payload.subseed_strength, 0.0),
        # A1111 treats 0 and negative sizes as "no seed resize"
        "seed_resize_from_h": payload.seed_resize_from_h if (payload.seed_resize_from_h or 0) > 0 else -1,
        "seed_resize_from_w": payload.seed_resize_from_w if (payload.seed_resize_from_w or 0) > 0 else -1,
        "sampler_name": sampler_name,
        "scheduler": scheduler,
        "batch_size": _pick(payload.batch_size, 1),
        "n_iter": _pick(payload.n_iter, 1),
        "steps": _pick(payload.steps, 20),
        "cfg_scale": _pick(payload.cfg_scale, 7.0),
        # omitted: the model's native size (512 for SD 1.x as in A1111, 64 for the embedded model)
        "width": payload.width,
        "height": payload.height,
        "eta": payload.eta,
        "s_noise": _pick(payload.s_noise, 1.0),
        "clip_skip": merged.get("CLIP_stop_at_last_layers", 1),
        "tiling": bool(payload.tiling),
        # the API saves nothing unless asked (A1111: do_not_save_samples = not save_images)
        "do_not_save_samples": not payload.save_images,
        "do_not_save_grid": not payload.save_images,
        "override_settings": overrides,
    }
    if isinstance(payload, models.Img2ImgPayload):
        request: Txt2ImgRequest = _img2img_request(payload, common, merged, max_pixels)
    else:
        request = Txt2ImgRequest(**common)
    request.validate()
    return request


def _img2img_request(
    payload: models.Img2ImgPayload, common: dict[str, Any], merged: dict[str, Any], max_pixels: int
) -> Img2ImgRequest:
    init_images = [
        decode_image(data, f"init_images[{index}]", max_pixels)
        for index, data in enumerate(payload.init_images or [])
    ]
    mask = decode_image(payload.mask, "mask", max_pixels) if payload.mask else None
    blur_x = _pick(payload.mask_blur_x, 4)
    blur_y = _pick(payload.mask_blur_y, 4)
    if payload.mask_blur is not None:  # A1111: mask_blur sets both directions
        blur_x = blur_y = payload.mask_blur
    return Img2ImgRequest(
        **common,
        init_images=init_images,
        resize_mode=_pick(payload.resize_mode, 0),
        denoising_strength=_pick(payload.denoising_strength, 0.75),
        mask=mask,
        mask_blur_x=blur_x,
        mask_blur_y=blur_y,
        inpainting_fill=_pick(payload.inpainting_fill, 1),
        inpaint_full_res=bool(payload.inpaint_full_res),
        inpaint_full_res_padding=_pick(payload.inpaint_full_res_padding, 32),
        inpainting_mask_invert=_pick(payload.inpainting_mask_invert, 0),
        initial_noise_multiplier=_pick(
            payload.initial_noise_multiplier, merged.get("initial_noise_multiplier", 1.0)
        ),
        inpainting_mask_weight=merged.get("inpainting_mask_weight", 1.0),
        img2img_fix_steps=bool(merged.get("img2img_fix_steps", False)),
        include_init_images=bool(payload.include_init_images),
    )


def info_json(result: GenerationResult, request: Txt2ImgRequest, model_info: dict[str, Any]) -> str:
    """A1111's `info` string: first-image values plus per-image lists (sdwebui.outputs.info_json)."""
    names = info_json_builder.ModelNames(
        sd_model_name=model_info.get("sd_model_name"),
        sd_model_hash=model_info.get("sd_model_hash"),
        sd_vae_name=model_info.get("sd_vae_name"),
        sd_vae_hash=model_info.get("sd_vae_hash"),
        is_inpainting=bool(model_info.get("is_inpainting")),
    )
    return info_json_builder.from_result(result, request, names).dumps()


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
    return models.GenerationResponse(
        images=images,
        parameters=response_parameters(payload),
        # the request as it ran (sizes resolved to the model's, scripts' changes)
        info=info_json(result, result.request or request, model_info),
    )


def option_error_to_request_error(exc: OptionError) -> RequestError:
    return RequestError(exc.key, exc.reason)
