"""The one resolution path: a front end's raw fields + the settings -> the typed engine request and the
job's effective settings.

The API (sdwebui.api.mapping) and the UI (webui.backend) both call `resolve`; nothing else fills a request
from the settings. Precedence, as in A1111: a field the front end sent, then `override_settings`, then the
shared options, then the engine's default. Styles are checked here (an unknown name is a RequestError) and
applied once, by the engine's `plan_job`, never by a front end.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from PIL import Image

from sdwebui.config.options import LIMIT_PREFIX, OptionError, Options
from sdwebui.config.options_controlnet import job_controlnets
from sdwebui.config.paths import DataPaths
from sdwebui.config.styles import StyleDatabase
from sdwebui.engine import samplers
from sdwebui.engine.face_restoration import FaceRestorationSettings, FaceRestorers
from sdwebui.engine.flow import slg
from sdwebui.engine.hires import HiresFix
from sdwebui.engine.memory.settings import MemorySettings
from sdwebui.engine.requests import Img2ImgRequest, RequestError, Txt2ImgRequest
from sdwebui.engine.settings import EngineSettings
from sdwebui.engine.speed.settings import SpeedSettings
from sdwebui.engine.upscaling import ModelUpscalers
from sdwebui.models.controlnet import ControlNets
from sdwebui.models.embeddings_library import EmbeddingLibrary


@dataclass
class RawFields:
    """What a front end collected, with the request's (A1111) names; None = not given."""

    prompt: str | None = None
    negative_prompt: str | None = None
    styles: list[str] | None = None
    seed: int | None = None
    subseed: int | None = None
    subseed_strength: float | None = None
    seed_resize_from_h: int | None = None  # 0 or negative: no seed resize (A1111)
    seed_resize_from_w: int | None = None
    sampler_name: str | None = None  # None / "": the default_sampler setting
    scheduler: str | None = None  # None / "": the default_scheduler setting
    batch_size: int | None = None
    n_iter: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    distilled_cfg_scale: float | None = None  # Forge's "Distilled CFG Scale" (Flux dev); None: 3.5
    width: int | None = None  # None: the model's native size, fixed when the job runs
    height: int | None = None
    eta: float | None = None  # None: the eta_ancestral / eta_ddim setting, read by the engine
    s_noise: float | None = None
    restore_faces: bool = False
    tiling: bool = False
    save_images: bool = (
        True  # False: save nothing (the API's default); True: the samples_save setting decides
    )
    # Hires. fix (txt2img), A1111's names; the hr_* fields only count with enable_hr, as in A1111
    enable_hr: bool = False
    denoising_strength: float | None = None  # None: 0.7, A1111's hires default
    hr_scale: float | None = None
    hr_resize_x: int | None = None
    hr_resize_y: int | None = None
    hr_upscaler: str | None = None  # None / "": "Latent"
    hr_second_pass_steps: int | None = None  # 0: the first pass's steps
    hr_sampler_name: str | None = None  # None / "Use same sampler": the first pass's
    hr_scheduler: str | None = None  # None / "Use same scheduler"
    hr_prompt: str | None = None  # None / "": the prompt
    hr_negative_prompt: str | None = None
    hr_cfg: float | None = None  # None: the first pass's CFG scale
    hr_checkpoint_name: str | None = None  # None / "Use same checkpoint": the first pass's
    refiner_checkpoint: str | None = None  # None / "" / "None": no refiner (SDXL refiner, A1111's names)
    refiner_switch_at: float | None = None  # None: 0.8


@dataclass
class RawImg2ImgFields(RawFields):
    init_images: list[Image.Image] = field(default_factory=list)
    resize_mode: int | None = None
    denoising_strength: float | None = None
    mask: Image.Image | None = None
    mask_blur_x: int | None = None
    mask_blur_y: int | None = None
    inpainting_fill: int | None = None
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int | None = None
    inpainting_mask_invert: int | None = None
    initial_noise_multiplier: float | None = None  # None: the initial_noise_multiplier setting
    include_init_images: bool = False


@dataclass(frozen=True)
class SettingsSource:
    """What the effective settings need besides the options: where outputs go, the styles, the version."""

    paths: DataPaths | None = None  # None: the engine's default outputs root (callers that want the request)
    styles: StyleDatabase | None = None
    version: str = ""
    embeddings: EmbeddingLibrary | None = None
    upscalers: ModelUpscalers | None = None
    memory_mode: str = ""  # --medvram / --medvram-sdxl / --lowvram: wins over the memory_mode setting
    controlnets: ControlNets | None = None
    face_restorers: FaceRestorers | None = None  # GFPGAN / CodeFormer files; None: no face restoration


@dataclass(frozen=True)
class Resolved:
    request: Txt2ImgRequest | Img2ImgRequest
    settings: EngineSettings


def resolve(
    raw: RawFields,
    options: Options,
    override_settings: dict[str, Any] | None = None,
    source: SettingsSource | None = None,
) -> Resolved:
    """The validated request and the settings its job runs with; RequestError names the first bad field."""
    source = source or SettingsSource()
    overrides = check_overrides(options, override_settings)
    values = {**options.items(), **overrides}
    styles = list(raw.styles or [])
    if styles:
        if source.styles is None:
            raise RequestError("styles", "no style database is configured")
        source.styles.check(styles)  # a 4xx now; the engine applies them (once) when it runs
    settings = _settings(values, source)
    request = _request(raw, values, overrides, styles)
    if "sampler_name" not in request.family_defaults:  # else the job checks the family's, once it is known
        _check_sampler(request, raw.eta, settings)
    request.validate()
    return Resolved(request, settings)


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
            checked[key] = options.check(key, value)
        except OptionError as exc:
            raise RequestError("override_settings", str(exc)) from exc
    return checked


def engine_settings(
    options: Options, overrides: dict[str, Any] | None, source: SettingsSource
) -> EngineSettings:
    """The settings a job reads: the options with the job's (checked) overrides applied."""
    return _settings({**options.items(), **(overrides or {})}, source)


def _settings(values: dict[str, Any], source: SettingsSource) -> EngineSettings:
    root = values.get("outdir_samples")
    return EngineSettings(
        outputs_root=source.paths.output_dir(root) if source.paths else EngineSettings.outputs_root,
        save_images=bool(values.get("samples_save", True)),
        samples_format=str(values.get("samples_format") or "png"),
        # empty = the default "[seed]" (A1111 also falls back to a pattern; "[none]" gives bare numbers)
        filename_pattern=str(values.get("samples_filename_pattern") or "[seed]"),
        add_number=bool(values.get("save_images_add_number", True)),
        enable_pnginfo=bool(values.get("enable_pnginfo", True)),
        live_preview_every=int(values.get("show_progress_every_n_steps", 0))
        if values.get("live_previews_enable", True)
        else 0,
        img2img_fix_steps=bool(values.get("img2img_fix_steps", False)),
        inpainting_mask_weight=float(values.get("inpainting_mask_weight", 1.0)),
        img2img_extra_noise=float(values.get("img2img_extra_noise", 0.0)),
        eta_ancestral=float(values.get("eta_ancestral", 1.0)),
        eta_ddim=float(values.get("eta_ddim", 0.0)),
        eta_noise_seed_delta=int(values.get("eta_noise_seed_delta", 0)),
        version=source.version,
        styles=source.styles,
        embeddings=source.embeddings,
        upscalers=source.upscalers,
        s_min_uncond=float(values.get("s_min_uncond", 0.0)),
        speed=SpeedSettings(
            fp8_storage=str(values.get("fp8_storage") or "Disable"),
            channels_last=bool(values.get("channels_last", False)),
            compile=bool(values.get("unet_compile", False)),
            cudnn_benchmark=bool(values.get("cudnn_benchmark", False)),
            step_cache_threshold=float(values.get("step_cache_threshold", 0.0)),
            token_merging_ratio=float(values.get("token_merging_ratio", 0.0)),
            token_merging_ratio_hr=float(values.get("token_merging_ratio_hr", 0.0)),
        ),
        memory=_memory(values, source),
        skip_layer_guidance=slg.from_values(values),
        controlnets=job_controlnets(source.controlnets, values),
        face_restoration=FaceRestorationSettings(
            source.face_restorers,
            str(values.get("face_restoration_model") or "CodeFormer"),
            float(values.get("code_former_weight", 0.5)),
            bool(values.get("face_restoration_unload", False)),
        ),
    )


def _memory(values: dict[str, Any], source: SettingsSource) -> MemorySettings:
    return MemorySettings(
        mode=source.memory_mode or str(values.get("memory_mode") or "auto"),
        gpu_weights_mb=int(values.get("gpu_weights_mb", 0)),
        vae_tiling=str(values.get("vae_tiling") or "auto"),
        vae_tiling_min_pixels=int(values.get("vae_tiling_min_pixels", 2048 * 2048)),
        auto_vae_precision=bool(values.get("auto_vae_precision", True)),
    )


# fields whose default is the model family's (Flux, SD3), not A1111's, when the front end leaves them out
FAMILY_DEFAULT_FIELDS = ("sampler_name", "steps", "cfg_scale", "distilled_cfg_scale")


def _family_default_fields(raw: RawFields, overrides: dict[str, Any]) -> tuple[str, ...]:
    """The FAMILY_DEFAULT_FIELDS the front end left out; a per-job default_sampler override gives one."""
    sampler_given = bool(raw.sampler_name) or "default_sampler" in overrides
    return tuple(
        name
        for name in FAMILY_DEFAULT_FIELDS
        if (not sampler_given if name == "sampler_name" else getattr(raw, name) is None)
    )


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _request(
    raw: RawFields, values: dict[str, Any], overrides: dict[str, Any], styles: list[str]
) -> Txt2ImgRequest | Img2ImgRequest:
    sampler_name, scheduler = _sampler(raw, values)
    common: dict[str, Any] = {
        "prompt": raw.prompt or "",
        "negative_prompt": raw.negative_prompt or "",
        "styles": styles,
        "seed": _pick(raw.seed, -1),
        "subseed": _pick(raw.subseed, -1),
        "subseed_strength": _pick(raw.subseed_strength, 0.0),
        # A1111 treats 0 and negative sizes as "no seed resize"
        "seed_resize_from_h": raw.seed_resize_from_h if (raw.seed_resize_from_h or 0) > 0 else -1,
        "seed_resize_from_w": raw.seed_resize_from_w if (raw.seed_resize_from_w or 0) > 0 else -1,
        "sampler_name": sampler_name,
        "scheduler": scheduler,
        "batch_size": _pick(raw.batch_size, 1),
        "n_iter": _pick(raw.n_iter, 1),
        "steps": _pick(raw.steps, 20),
        "cfg_scale": _pick(raw.cfg_scale, 7.0),
        "distilled_cfg_scale": _pick(raw.distilled_cfg_scale, 3.5),
        "width": raw.width,
        "height": raw.height,
        "eta": raw.eta,
        "s_noise": _pick(raw.s_noise, 1.0),
        "clip_skip": int(values.get("CLIP_stop_at_last_layers", 1)),  # the Clip skip (quick)setting
        "restore_faces": bool(raw.restore_faces),
        "tiling": bool(raw.tiling),
        "do_not_save_samples": not raw.save_images,
        "do_not_save_grid": not raw.save_images,
        "override_settings": overrides,
        "family_defaults": _family_default_fields(raw, overrides),
        **_refiner(raw),
    }
    if isinstance(raw, RawImg2ImgFields):
        return _img2img_request(raw, common, values)
    sampler_given = "sampler_name" not in common["family_defaults"]
    return Txt2ImgRequest(**common, hires=_hires(raw, sampler_name, scheduler, sampler_given))


def _refiner(raw: RawFields) -> dict[str, Any]:
    """A1111's refiner fields: a checkpoint named other than "None" switches; the name is checked against
    the app's checkpoints before the job is queued."""
    name = raw.refiner_checkpoint
    if name is None or name.strip() in ("", "None", "none"):
        return {}
    return {"refiner_checkpoint": name.strip(), "refiner_switch_at": _pick(raw.refiner_switch_at, 0.8)}


_SAME = ("", "Use same sampler", "Use same scheduler", "Use same checkpoint")


def _hires(raw: RawFields, sampler_name: str, scheduler: str, sampler_given: bool) -> HiresFix | None:
    """The Hires. fix record (None when enable_hr is off); A1111's "Use same ..." choices are None. A
    pass on the first pass's sampler is checked by the job when that sampler is the family's default."""
    if not raw.enable_hr:
        return None
    hr_sampler = None if raw.hr_sampler_name in (None, *_SAME) else raw.hr_sampler_name
    hr_scheduler = None if raw.hr_scheduler in (None, *_SAME) else raw.hr_scheduler
    if hr_sampler is not None or hr_scheduler is not None:
        try:
            info, label = samplers.resolve_sampler(hr_sampler or sampler_name, hr_scheduler or scheduler)
        except samplers.UnknownSamplerError as exc:
            field_name = "hr_scheduler" if "schedule type" in str(exc) else "hr_sampler_name"
            raise RequestError(field_name, str(exc)) from exc
        try:  # the combination the hires pass will run (e.g. "Euler a" has no Karras schedule)
            if hr_sampler is not None or sampler_given:
                samplers.create_scheduler(info.name, label, {}, None)
        except (samplers.UnsupportedScheduleError, samplers.SamplerUnavailableError) as exc:
            raise RequestError("hr_scheduler" if hr_scheduler else "hr_sampler_name", str(exc)) from exc
        hr_sampler = info.name if hr_sampler is not None else None
        hr_scheduler = label if hr_scheduler is not None else None
    defaults = HiresFix()
    return HiresFix(
        hr_scale=_pick(raw.hr_scale, defaults.hr_scale),
        hr_resize_x=_pick(raw.hr_resize_x, 0),
        hr_resize_y=_pick(raw.hr_resize_y, 0),
        hr_upscaler=raw.hr_upscaler or defaults.hr_upscaler,
        hr_second_pass_steps=_pick(raw.hr_second_pass_steps, 0),
        denoising_strength=_pick(raw.denoising_strength, defaults.denoising_strength),
        hr_sampler_name=hr_sampler,
        hr_scheduler=hr_scheduler,
        hr_prompt=raw.hr_prompt or None,
        hr_negative_prompt=raw.hr_negative_prompt or None,
        hr_cfg=raw.hr_cfg,
        hr_checkpoint_name=None if raw.hr_checkpoint_name in (None, *_SAME) else raw.hr_checkpoint_name,
    )


def _img2img_request(raw: RawImg2ImgFields, common: dict[str, Any], values: dict[str, Any]) -> Img2ImgRequest:
    defaults = Img2ImgRequest()
    given = {
        name: getattr(raw, name)
        for name in (
            "resize_mode",
            "denoising_strength",
            "mask_blur_x",
            "mask_blur_y",
            "inpainting_fill",
            "inpaint_full_res_padding",
            "inpainting_mask_invert",
        )
    }
    return Img2ImgRequest(
        **common,
        **{name: _pick(value, getattr(defaults, name)) for name, value in given.items()},
        init_images=list(raw.init_images),
        mask=raw.mask,
        inpaint_full_res=bool(raw.inpaint_full_res),
        initial_noise_multiplier=float(
            _pick(raw.initial_noise_multiplier, values.get("initial_noise_multiplier", 1.0))
        ),
        inpainting_mask_weight=float(values.get("inpainting_mask_weight", 1.0)),
        img2img_fix_steps=bool(values.get("img2img_fix_steps", False)),
        include_init_images=bool(raw.include_init_images),
    )


def _sampler(raw: RawFields, values: dict[str, Any]) -> tuple[str, str]:
    name = raw.sampler_name or values.get("default_sampler") or "Euler a"
    schedule = raw.scheduler or values.get("default_scheduler") or "Automatic"
    try:
        info, label = samplers.resolve_sampler(name, schedule)
    except samplers.UnknownSamplerError as exc:
        field_name = "scheduler" if "schedule type" in str(exc) else "sampler_name"
        raise RequestError(field_name, str(exc)) from exc
    return info.name, label


def _check_sampler(request: Txt2ImgRequest, raw_eta: float | None, settings: EngineSettings) -> None:
    """The sampler/schedule/eta combination the job will run, checked now rather than failing inside it."""
    info, _ = samplers.resolve_sampler(request.sampler_name, request.scheduler)
    eta = raw_eta
    if eta is None:  # the setting the engine will use for this sampler
        eta = {samplers.ETA_STEP: settings.eta_ddim, samplers.ETA_FIXED: settings.eta_ancestral}.get(
            info.eta_mode
        )
    try:
        samplers.create_scheduler(info.name, request.scheduler, {}, eta)
    except samplers.UnsupportedScheduleError as exc:
        if not str(exc).startswith("eta="):
            raise RequestError("scheduler", str(exc)) from exc
        raise RequestError("eta" if raw_eta is not None else "eta_ancestral", str(exc)) from exc
    except samplers.SamplerUnavailableError as exc:
        raise RequestError("sampler_name", str(exc)) from exc


def field_names(record: type[RawFields]) -> list[str]:
    """The record's field names (a front end copies its own fields of the same names)."""
    return [f.name for f in fields(record)]


__all__ = [
    "RawFields",
    "RawImg2ImgFields",
    "Resolved",
    "SettingsSource",
    "check_overrides",
    "engine_settings",
    "field_names",
    "resolve",
]
