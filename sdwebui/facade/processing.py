"""A1111's `modules.processing` for extensions: the `p` objects, `Processed` and `process_images(p)`.

A thin facade at the pipeline's edge. A job only builds a `p` when a script can see it
(sdwebui.extensions.bridge.builds_p); that `p` is a view of the job's typed request (`processing_from_request`,
one field table), and `process_images(p)` reads what scripts changed back once (`p.to_request()`), runs the
engine with `EngineHooks` that call the alwayson scripts and the `script_callbacks`, and mirrors the engine's
per-job state (`all_prompts`, `all_seeds`, `extra_generation_params`, ...) onto `p` around every hook, so
extensions read and write `p` exactly as in A1111. The running job (its State, model, engine run) is found
through `shared.current_job()`, never through process-wide state.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdwebui.config import paths
from sdwebui.engine import hooks as eh
from sdwebui.engine.hires import HiresFix
from sdwebui.engine.info_json import VERSION as INFO_VERSION
from sdwebui.engine.info_json import InfoJson
from sdwebui.engine.requests import (
    GeneratedImage,
    GenerationResult,
    Img2ImgRequest,
    Txt2ImgRequest,
)
from sdwebui.engine.rng import ImageRNG
from sdwebui.facade import extra_networks, script_callbacks, sd_samplers, shared
from sdwebui.facade.learned_conditioning import conditioning_hook
from sdwebui.facade.sampler_hooks import SamplerHooks

log = logging.getLogger("webui.extensions")

EngineRun = Callable[[Txt2ImgRequest, eh.EngineHooks | None], GenerationResult]

_COMMON_DEFAULTS: dict[str, Any] = {
    "sd_model": None,
    "outpath_samples": None,
    "outpath_grids": None,
    "prompt": "",
    "prompt_for_display": None,
    "negative_prompt": "",
    "styles": None,
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0.0,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "seed_enable_extras": True,
    "sampler_name": None,
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 50,
    "cfg_scale": 7.0,
    "distilled_cfg_scale": 3.5,  # Forge's p field: Flux dev's guidance embedding
    "width": 512,
    "height": 512,
    "restore_faces": None,
    "tiling": None,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "extra_generation_params": None,
    "overlay_images": None,
    "eta": None,
    "do_not_reload_embeddings": False,
    "denoising_strength": None,
    "ddim_discretize": None,
    "s_min_uncond": None,
    "s_churn": None,
    "s_tmax": None,
    "s_tmin": None,
    "s_noise": None,
    "override_settings": None,
    "override_settings_restore_afterwards": True,
    "sampler_index": None,
    "refiner_checkpoint": None,
    "refiner_switch_at": None,
    "token_merging_ratio": 0,
    "token_merging_ratio_hr": 0,
    "disable_extra_networks": False,
    "firstpass_image": None,
    "scripts_value": None,
    "script_args_value": None,
    "user": None,
}
_TXT2IMG_DEFAULTS: dict[str, Any] = {
    "enable_hr": False,
    "hr_scale": 2.0,
    "hr_upscaler": None,
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "hr_checkpoint_name": None,
    "hr_sampler_name": None,
    "hr_scheduler": None,
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "hr_cfg": None,
    "force_task_id": None,
}
_IMG2IMG_DEFAULTS: dict[str, Any] = {
    "init_images": None,
    "resize_mode": 0,
    "image_cfg_scale": None,
    "mask": None,
    "mask_blur_x": 4,
    "mask_blur_y": 4,
    "mask_blur": None,
    "mask_round": True,
    "inpainting_fill": 0,
    "inpaint_full_res": True,
    "inpaint_full_res_padding": 0,
    "inpainting_mask_invert": 0,
    "initial_noise_multiplier": None,
    "latent_mask": None,
    "force_task_id": None,
}


class StableDiffusionProcessing:
    """A1111's `p`: generation parameters plus the per-job lists extensions read and rewrite."""

    _defaults: dict[str, Any] = _COMMON_DEFAULTS

    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - set(self._defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unexpected arguments {sorted(unknown)}")
        for key, default in self._defaults.items():
            value = kwargs.get(key, default)
            setattr(self, key, value)
        if self.sampler_name is None:
            self.sampler_name = shared.opts.get("default_sampler", "Euler a")
        self.styles = list(self.styles or [])
        self.extra_generation_params = dict(self.extra_generation_params or {})
        self.override_settings = dict(self.override_settings or {})
        self.comments: dict[str, int] = {}
        self.scripts = self.scripts_value
        self.script_args = list(self.script_args_value or [])
        self.all_prompts: list[str] | None = None
        self.all_negative_prompts: list[str] | None = None
        self.all_seeds: list[int] | None = None
        self.all_subseeds: list[int] | None = None
        self.all_hr_prompts: list[str] | None = None
        self.all_hr_negative_prompts: list[str] | None = None
        self.prompts: list[str] = []
        self.negative_prompts: list[str] = []
        self.seeds: list[int] = []
        self.subseeds: list[int] = []
        self.iteration = 0
        self.sampler: Any = None  # the batch's A1111 sampler object (sdwebui.facade.sampler_hooks)
        self.is_hr_pass = False
        self.is_api = False
        self.main_prompt = self.prompt
        self.main_negative_prompt = self.negative_prompt
        self.extra_network_data: dict[str, Any] = {}
        self.sd_model_name = self.sd_model_hash = self.sd_vae_name = self.sd_vae_hash = None
        self.job_timestamp = shared.state.job_timestamp
        # the typed request this p is a view of (set by processing_from_request); fields p does not map are
        # taken from it unchanged by to_request(). None: a p an extension built, over the request defaults
        self.base_request: Txt2ImgRequest | None = None
        # set by the job that runs this p; None = the running job's engine run, else the app bound to shared
        self.engine_run: EngineRun | None = None
        self.engine_state: eh.JobState | None = None

    @property
    def is_img2img(self) -> bool:
        return isinstance(self, StableDiffusionProcessingImg2Img)

    def add_comment(self, comment: str) -> None:
        self.comments[comment] = 1

    def close(self) -> None:
        pass

    # --- conversion to the engine's request (the one read-back of what scripts changed) ---
    def to_request(self) -> Txt2ImgRequest:
        """The typed request this p now describes: `base_request` with every mapped field read from p."""
        base = self.base_request or (Img2ImgRequest() if self.is_img2img else Txt2ImgRequest())
        fields = {}
        for name, convert in _fields_of(self).items():
            value = getattr(self, name)
            if value is None and name in _NONE_KEEPS_BASE:
                continue
            fields[name] = convert(value)
        clip_skip = self.override_settings.get("CLIP_stop_at_last_layers")
        if clip_skip is not None:  # A1111 scripts (X/Y/Z "Clip skip") set it there
            fields["clip_skip"] = int(clip_skip)
        if not self.is_img2img:
            fields["hires"] = _hires_of(self)
        refiner = self.refiner_checkpoint
        fields["refiner_checkpoint"] = None if refiner in (None, "", "None") else str(refiner)
        if self.refiner_switch_at is not None:
            fields["refiner_switch_at"] = float(self.refiner_switch_at)
        return dataclasses.replace(base, **fields)


_SAME = (None, "", "Use same sampler", "Use same scheduler", "Use same checkpoint")


def _hires_of(p: StableDiffusionProcessing) -> HiresFix | None:
    """p's A1111 hires fields as the request's Hires. fix (None with enable_hr off); "Use same ..." = None."""
    if not p.enable_hr:
        return None
    return HiresFix(
        hr_scale=float(p.hr_scale if p.hr_scale is not None else 2.0),
        hr_resize_x=int(p.hr_resize_x or 0),
        hr_resize_y=int(p.hr_resize_y or 0),
        hr_upscaler=p.hr_upscaler or "Latent",
        hr_second_pass_steps=int(p.hr_second_pass_steps or 0),
        denoising_strength=0.7 if p.denoising_strength is None else float(p.denoising_strength),
        hr_sampler_name=None if p.hr_sampler_name in _SAME else p.hr_sampler_name,
        hr_scheduler=None if p.hr_scheduler in _SAME else p.hr_scheduler,
        hr_prompt=_first(p.hr_prompt) or None,
        hr_negative_prompt=_first(p.hr_negative_prompt) or None,
        hr_cfg=getattr(p, "hr_cfg", None),
        hr_checkpoint_name=None if p.hr_checkpoint_name in _SAME else p.hr_checkpoint_name,
    )


def _hires_fields(hires: HiresFix | None) -> dict[str, Any]:
    """A request's Hires. fix as p's A1111 attributes (what scripts read)."""
    if hires is None:
        return {"enable_hr": False}
    names = ("hr_scale", "hr_resize_x", "hr_resize_y", "hr_second_pass_steps", "denoising_strength", "hr_cfg")
    fields = {name: getattr(hires, name) for name in names}
    fields.update(enable_hr=True, hr_upscaler=hires.hr_upscaler, hr_prompt=hires.hr_prompt or "",
                  hr_negative_prompt=hires.hr_negative_prompt or "",
                  hr_sampler_name=hires.hr_sampler_name or "Use same sampler",
                  hr_scheduler=hires.hr_scheduler or "Use same scheduler",
                  hr_checkpoint_name=hires.hr_checkpoint_name or "Use same checkpoint")  # fmt: skip
    return fields


def _first(value: Any) -> str:
    return value[0] if isinstance(value, list) and value else (value or "")


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    _defaults = {**_COMMON_DEFAULTS, **_TXT2IMG_DEFAULTS}


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    _defaults = {**_COMMON_DEFAULTS, **_IMG2IMG_DEFAULTS}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.init_images = list(self.init_images or [])
        if self.denoising_strength is None:
            self.denoising_strength = 0.75
        if self.mask_blur is not None:
            self.mask_blur_x = self.mask_blur_y = self.mask_blur

    @property
    def image_mask(self) -> Any:
        return self.mask

    @image_mask.setter
    def image_mask(self, value: Any) -> None:
        self.mask = value


def _same(value: Any) -> Any:
    return value


def _int_or(default: int) -> Callable[[Any], int]:
    return lambda value: int(value if value not in (None, "") else default)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


# p attribute (== request field) -> how p's A1111-typed value becomes the request's. The one mapping between
# p and the typed request, read in both directions (processing_from_request and to_request).
_COMMON_FIELDS: dict[str, Callable[[Any], Any]] = {
    "prompt": _first,
    "negative_prompt": lambda value: _first(value) or "",
    "styles": list,
    "seed": _int_or(-1),
    "subseed": _int_or(-1),
    "subseed_strength": lambda value: float(value or 0.0),
    "seed_resize_from_h": lambda value: int(value or -1),
    "seed_resize_from_w": lambda value: int(value or -1),
    "sampler_name": _same,
    "scheduler": lambda value: value or "Automatic",
    "batch_size": int,
    "n_iter": int,
    "steps": int,
    "cfg_scale": float,
    "distilled_cfg_scale": float,
    "width": _optional_int,
    "height": _optional_int,
    "eta": _same,
    "s_noise": float,
    "restore_faces": bool,
    "tiling": bool,
    "do_not_save_samples": bool,
    "do_not_save_grid": bool,
    "override_settings": dict,
    "extra_generation_params": dict,
}
_IMG2IMG_FIELDS: dict[str, Callable[[Any], Any]] = {
    **_COMMON_FIELDS,
    "init_images": list,
    "resize_mode": int,
    "denoising_strength": float,
    "mask": _same,
    "mask_blur_x": int,
    "mask_blur_y": int,
    "inpainting_fill": int,
    "inpaint_full_res": bool,
    "inpaint_full_res_padding": int,
    "inpainting_mask_invert": int,
    "initial_noise_multiplier": float,
}
_NONE_KEEPS_BASE = {"s_noise", "initial_noise_multiplier"}  # p's None = "not set": the request's value


def _fields_of(p_or_request: Any) -> dict[str, Callable[[Any], Any]]:
    img2img = isinstance(p_or_request, (StableDiffusionProcessingImg2Img, Img2ImgRequest))
    return _IMG2IMG_FIELDS if img2img else _COMMON_FIELDS


def _copied(value: Any) -> Any:
    return type(value)(value) if isinstance(value, (list, dict)) else value


def processing_from_request(request: Txt2ImgRequest) -> StableDiffusionProcessing:
    """The `p` A1111 would have built for this request (UI/API path): a view of it (see `to_request`)."""
    common = {name: _copied(getattr(request, name)) for name in _fields_of(request)}
    if request.clip_skip != 1:
        common["override_settings"].setdefault("CLIP_stop_at_last_layers", request.clip_skip)
    kind = "img2img" if isinstance(request, Img2ImgRequest) else "txt2img"
    common["outpath_samples"] = _output_dir("outdir_samples", f"outdir_{kind}_samples")
    common["outpath_grids"] = _output_dir("outdir_grids", f"outdir_{kind}_grids")
    cls = StableDiffusionProcessingImg2Img if kind == "img2img" else StableDiffusionProcessingTxt2Img
    if kind == "txt2img":
        common.update(_hires_fields(request.hires))
    common["refiner_checkpoint"] = request.refiner_checkpoint
    common["refiner_switch_at"] = request.refiner_switch_at if request.refiner_checkpoint else None
    p = cls(**common)
    p.base_request = request
    return p


def _output_dir(override_key: str, kind_key: str) -> str | None:
    """A1111's folder rule: the shared override if set, else the per-kind folder, relative to the data dir."""
    folder = shared.opts.get(override_key) or shared.opts.get(kind_key)
    if not folder:
        return None
    return os.path.join(paths.data_path, folder)


class Processed:
    """Result of `process_images(p)` (A1111 fields; `js()` is the API's "info" JSON)."""

    def __init__(
        self,
        p: StableDiffusionProcessing,
        images_list: list[Image.Image],
        seed: int = -1,
        info: str = "",
        subseed: int | None = None,
        all_prompts: list[str] | None = None,
        all_negative_prompts: list[str] | None = None,
        all_seeds: list[int] | None = None,
        all_subseeds: list[int] | None = None,
        index_of_first_image: int = 0,
        infotexts: list[str] | None = None,
        comments: str = "",
    ):
        self.images = images_list
        self.prompt = _first(p.prompt)
        self.negative_prompt = _first(p.negative_prompt)
        self.seed = seed
        self.subseed = subseed
        self.subseed_strength = p.subseed_strength
        self.info = info
        self.comments = "".join(f"{c}\n" for c in p.comments) + comments
        self.width, self.height = p.width, p.height
        self.sampler_name = p.sampler_name
        self.cfg_scale = p.cfg_scale
        self.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.steps = p.steps
        self.batch_size = p.batch_size
        self.restore_faces = p.restore_faces
        self.face_restoration_model = None
        self.sd_model_name, self.sd_model_hash = p.sd_model_name, p.sd_model_hash
        self.sd_vae_name, self.sd_vae_hash = p.sd_vae_name, p.sd_vae_hash
        self.seed_resize_from_w, self.seed_resize_from_h = p.seed_resize_from_w, p.seed_resize_from_h
        self.denoising_strength = p.denoising_strength
        self.extra_generation_params = p.extra_generation_params
        self.index_of_first_image = index_of_first_image
        self.styles = p.styles
        self.job_timestamp = shared.state.job_timestamp
        self.clip_skip = int(p.override_settings.get("CLIP_stop_at_last_layers", 1))
        self.eta = p.eta
        self.is_using_inpainting_conditioning = False
        self.all_prompts = all_prompts or p.all_prompts or [self.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [self.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [self.seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [self.subseed]
        self.infotexts = infotexts or [info] * len(images_list)
        self.extra_images: list[Image.Image] = []  # shown after the images (the engine's extra_images)
        self.version = INFO_VERSION

    def js(self) -> str:
        prompt = self.all_prompts[0] if self.all_prompts else self.prompt
        return InfoJson.from_attributes(self, prompt=prompt, interrupted=shared.state.interrupted).dumps()

    def infotext(self, p: StableDiffusionProcessing, index: int) -> str:
        return self.infotexts[index] if index < len(self.infotexts) else self.info

    def to_result(self, request: Txt2ImgRequest | None = None) -> GenerationResult:
        """Back to the engine's result type, one record per image, for the API and the UI."""
        n = len(self.images)
        lead = self.index_of_first_image

        def aligned(values: list[Any], fill: Any) -> list[Any]:
            values = list(values or [])
            values = [fill] * lead + values if len(values) + lead <= n else values
            return (values + [fill] * n)[:n]

        seed0 = self.all_seeds[0] if self.all_seeds else self.seed
        columns = zip(
            self.images,
            aligned(self.all_seeds, seed0),
            aligned(self.all_subseeds, self.subseed),
            aligned(self.all_prompts, self.prompt),
            aligned(self.all_negative_prompts, self.negative_prompt),
            (list(self.infotexts) + [self.info] * n)[:n],
            strict=True,
        )
        return GenerationResult(
            images=[GeneratedImage(*column) for column in columns],
            interrupted=shared.state.interrupted,
            request=request,
            extra_images=list(self.extra_images),
        )


def create_infotext(p: StableDiffusionProcessing, all_prompts=None, all_seeds=None, all_subseeds=None,
                    comments=None, iteration: int = 0, position_in_batch: int = 0, **kwargs) -> str:  # fmt: skip
    """The infotext of image `iteration * batch_size + position_in_batch` of p's last run, if known."""
    index = iteration * p.batch_size + position_in_batch
    infotexts = getattr(p, "_last_infotexts", None) or []
    return infotexts[index] if index < len(infotexts) else ""


# --- running ---
def process_images(p: StableDiffusionProcessing) -> Processed:
    """Run `p` through the engine with its alwayson scripts and the registered callbacks.

    Inside a job it runs on that job's engine run (its model, its progress, its interrupt); an extension's
    own call outside any job gets a job scope of its own on the app bound to `shared`.
    """
    if shared.current_job() is None:
        with shared.job_scope(_standalone_scope()):
            return process_images(p)
    overrides_token = shared.push_overrides(p.override_settings)
    try:
        return _process_images(p)
    finally:
        shared.pop_overrides(overrides_token)


def _process_images(p: StableDiffusionProcessing) -> Processed:
    if p.scripts is not None:
        p.scripts.before_process(p)
    request = p.to_request()
    scope = shared.current_job()
    run = p.engine_run or scope.run
    if run is None:
        raise RuntimeError("process_images: no app is bound to modules.shared (shared.bind was not called)")
    shared.state.job_count = p.n_iter
    try:
        result = run(request, build_engine_hooks(p))
    finally:
        if not p.disable_extra_networks:
            extra_networks.deactivate_job(p)
    p._last_infotexts = list(result.infotexts)
    processed = processed_from_result(p, result)
    if p.scripts is not None:
        p.scripts.postprocess(p, processed)
    return processed


def processed_from_result(p: StableDiffusionProcessing, result: GenerationResult) -> Processed:
    seed = result.seeds[0] if result.seeds else p.seed
    subseed = result.subseeds[0] if result.subseeds else p.subseed
    processed = Processed(
        p,
        result.pil_images,
        seed=seed,
        info=result.infotexts[0] if result.infotexts else "",
        subseed=subseed,
        # the result's lists, one entry per image made (a skipped batch has none); p's lists name every
        # planned image, so after a skip they would be off against the images
        all_prompts=list(result.prompts or p.all_prompts or []),
        all_negative_prompts=list(result.negative_prompts or p.all_negative_prompts or []),
        all_seeds=list(result.seeds or p.all_seeds or []),
        all_subseeds=list(result.subseeds or p.all_subseeds or []),
        infotexts=list(result.infotexts),
    )
    processed.job_timestamp = result.job_timestamp or processed.job_timestamp  # when the job started
    processed.extra_images = list(result.extra_images)  # ControlNet's detected maps, after the images
    processed.peak_memory, processed.memory_mode = dict(result.peak_memory), result.memory_mode
    return processed


def _standalone_scope() -> shared.JobScope:
    """The job scope of `process_images(p)` called outside any job: its own State and JobContext, the app
    bound to `shared` (None when unbound: then only a p with its own `engine_run` can run)."""
    from sdwebui.engine.context import JobContext

    ctx = JobContext()
    state = shared.State(ctx)
    ctx.on_step = state.update_from_step  # shared.state follows this run's progress
    state.begin("process_images")
    scope = shared.JobScope(state)
    services = shared._services
    if services is None:
        return scope

    def run(request: Txt2ImgRequest, hooks: eh.EngineHooks | None) -> GenerationResult:
        override = request.override_settings.get("sd_model_checkpoint")
        scope.model = services.models.load(override) if override else services.load_plain_model()
        settings = services.engine_settings(request.override_settings)
        return services.generate(scope.model, request, ctx, settings, hooks)

    scope.run = run
    return scope


# --- the adapter: engine hooks -> alwayson scripts and script_callbacks ---
def _pull(p: StableDiffusionProcessing, state: eh.JobState) -> None:
    p.engine_state = state
    p.all_prompts, p.all_negative_prompts = state.all_prompts, state.all_negative_prompts
    p.all_seeds, p.all_subseeds = state.all_seeds, state.all_subseeds
    p.all_hr_prompts, p.all_hr_negative_prompts = state.all_prompts, state.all_negative_prompts
    state.extra_generation_params.update(p.extra_generation_params)
    p.extra_generation_params = state.extra_generation_params


def _push(p: StableDiffusionProcessing, state: eh.JobState) -> None:
    state.all_prompts, state.all_negative_prompts = list(p.all_prompts), list(p.all_negative_prompts)
    state.all_seeds, state.all_subseeds = [int(s) for s in p.all_seeds], [int(s) for s in p.all_subseeds]
    state.extra_generation_params = p.extra_generation_params


class _ScriptHooks:
    """Engine hooks -> p's alwayson scripts, with p kept in step with the engine's JobState around each."""

    def __init__(self, p: StableDiffusionProcessing, sampling: SamplerHooks):
        self.p, self.runner, self.sampling = p, p.scripts, sampling

    def process(self, state: eh.JobState) -> None:
        _pull(self.p, state)
        if self.runner is not None:
            self.runner.process(self.p)
        _push(self.p, state)

    def process_batch(self, args: eh.BatchArgs) -> None:
        p, state = self.p, args.state
        _pull(p, state)
        p.iteration = args.batch_number
        shared.state.job_no = args.batch_number
        p.prompts, p.negative_prompts = args.prompts, args.negative_prompts
        p.seeds, p.subseeds = args.seeds, args.subseeds
        if self.runner is not None:
            self.runner.before_process_batch(p, **self._batch_kwargs(args.batch_number))
            part = state.batch_slice(args.batch_number)  # A1111 re-slices after before_process_batch
            p.prompts, p.negative_prompts = p.all_prompts[part], p.all_negative_prompts[part]
            p.seeds, p.subseeds = p.all_seeds[part], p.all_subseeds[part]
        if not p.disable_extra_networks:  # A1111: between before_process_batch and process_batch
            extra_networks.activate_batch(p, list(p.prompts))
        if self.runner is not None:
            self.runner.process_batch(p, **self._batch_kwargs(args.batch_number))
        self.sampling.start_batch(args.hooks)  # p.sampler, where A1111 creates it (after process_batch)
        _push(p, state)
        args.prompts, args.negative_prompts = list(p.prompts), list(p.negative_prompts)
        args.seeds, args.subseeds = [int(s) for s in p.seeds], [int(s) for s in p.subseeds]

    def _batch_kwargs(self, batch_number: int) -> dict[str, Any]:
        p = self.p
        return {"batch_number": batch_number, "prompts": p.prompts, "seeds": p.seeds, "subseeds": p.subseeds}

    def before_sampling(self, args: eh.BeforeSamplingArgs) -> None:
        self.p.is_hr_pass = args.pass_index > 0
        if self.p.is_hr_pass:
            self.runner.before_hr(self.p)
        self.runner.process_before_every_sampling(self.p, x=args.latents, noise=args.noise, c=None, uc=None)
        self.sampling.install()  # a script may have replaced p.sampler's callbacks or set its stop_at

    def mask_blend(self, args: eh.MaskBlendArgs) -> None:
        from sdwebui.facade.scripts import MaskBlendArgs

        mba = MaskBlendArgs(
            args.current_latent, args.mask, args.init_latent, 1 - args.mask, args.blended_latent, sigma=None
        )
        self.runner.on_mask_blend(self.p, mba)
        args.blended_latent = mba.blended_latent

    def postprocess_batch(self, args: eh.PostprocessBatchArgs) -> None:
        from sdwebui.facade.scripts import PostprocessBatchListArgs

        tensors = [pil_to_tensor(image) for image in args.images]
        batch = torch.stack(tensors) if tensors else None
        self.runner.postprocess_batch(self.p, batch, batch_number=args.batch_number)
        pp = PostprocessBatchListArgs(list(tensors))
        self.runner.postprocess_batch_list(self.p, pp, batch_number=args.batch_number)
        if len(pp.images) != len(tensors) or any(
            a is not b for a, b in zip(pp.images, tensors, strict=False)
        ):
            args.images = [tensor_to_pil(t) if isinstance(t, torch.Tensor) else t for t in pp.images]

    def postprocess_image(self, args: eh.PostprocessImageArgs) -> None:
        from sdwebui.facade.scripts import PostprocessImageArgs

        pp = PostprocessImageArgs(args.image)
        self.runner.postprocess_image(self.p, pp)
        args.image = pp.image


class _CallbackHooks:
    """Engine hooks -> the registered script_callbacks; every replaceable field is read back.

    `p` is None on a job that built no p (the image-saving callbacks, which receive p, make a job build one).
    """

    def __init__(self, p: StableDiffusionProcessing | None):
        self.p = p

    def extra_noise(self, args: eh.ExtraNoiseArgs) -> None:
        params = script_callbacks.ExtraNoiseParams(args.noise, args.x, args.xi)
        script_callbacks.extra_noise_callback(params)
        args.noise = params.noise

    def cfg_denoiser(self, args: eh.CFGDenoiserArgs) -> None:
        params = script_callbacks.CFGDenoiserParams(
            args.x, args.image_cond, args.timestep, args.sampling_step, args.total_sampling_steps,
            args.text_cond, args.text_uncond,
        )  # fmt: skip
        script_callbacks.cfg_denoiser_callback(params)
        args.x, args.image_cond = params.x, params.image_cond
        args.text_cond, args.text_uncond = params.text_cond, params.text_uncond
        shared.state.sampling_step, shared.state.sampling_steps = (
            args.sampling_step,
            args.total_sampling_steps,
        )

    def cfg_denoised(self, args: eh.CFGDenoisedArgs) -> None:
        params = script_callbacks.CFGDenoisedParams(
            args.model_output, args.sampling_step, args.total_sampling_steps
        )
        script_callbacks.cfg_denoised_callback(params)
        args.model_output = params.x

    def cfg_after_cfg(self, args: eh.CFGAfterArgs) -> None:
        params = script_callbacks.AfterCFGCallbackParams(
            args.x, args.sampling_step, args.total_sampling_steps
        )
        script_callbacks.cfg_after_cfg_callback(params)
        args.x = params.x

    def before_image_saved(self, args: eh.ImageSaveArgs) -> None:
        params = script_callbacks.ImageSaveParams(
            args.image, self.p, args.path or "", {"parameters": args.infotext}
        )
        script_callbacks.before_image_saved_callback(params)
        args.image, args.infotext = params.image, params.pnginfo.get("parameters", args.infotext)

    def image_saved(self, args: eh.ImageSaveArgs) -> None:
        params = script_callbacks.ImageSaveParams(
            args.image, self.p, args.path or "", {"parameters": args.infotext}
        )
        script_callbacks.image_saved_callback(params)


CALLBACKS_WITH_P = ("callbacks_before_image_saved", "callbacks_image_saved")  # they receive p (A1111)


def callback_hooks(p: StableDiffusionProcessing | None = None) -> eh.EngineHooks:
    """EngineHooks for the registered callbacks only (a hook is None when nobody listens: no cost)."""
    cb, has = _CallbackHooks(p), script_callbacks.has_callbacks
    with_p = p is not None
    return eh.EngineHooks(
        conditioning=conditioning_hook(),  # only when an extension replaced prompt_parser's functions
        extra_noise=cb.extra_noise if has("callbacks_extra_noise") else None,
        cfg_denoiser=cb.cfg_denoiser if has("callbacks_cfg_denoiser") else None,
        cfg_denoised=cb.cfg_denoised if has("callbacks_cfg_denoised") else None,
        cfg_after_cfg=cb.cfg_after_cfg if has("callbacks_cfg_after_cfg") else None,
        before_image_saved=cb.before_image_saved if with_p and has("callbacks_before_image_saved") else None,
        image_saved=cb.image_saved if with_p and has("callbacks_image_saved") else None,
    )


def build_engine_hooks(p: StableDiffusionProcessing) -> eh.EngineHooks:
    """EngineHooks that run p's alwayson scripts and the global callbacks with A1111's argument objects."""
    hooks = callback_hooks(p)
    config = sd_samplers.find_sampler_config(p.sampler_name)
    sampling = SamplerHooks(p, config.name if config is not None else None)
    sh = _ScriptHooks(p, sampling)
    hooks.process, hooks.process_batch = sh.process, sh.process_batch
    hooks.extra_network_kinds = extra_networks.custom_kinds() if not p.disable_extra_networks else frozenset()
    if p.scripts is not None and p.scripts.alwayson_scripts:
        hooks.before_sampling, hooks.mask_blend = sh.before_sampling, sh.mask_blend
        hooks.before_later_pass = sh.before_sampling
        hooks.postprocess_batch, hooks.postprocess_image = sh.postprocess_batch, sh.postprocess_image
    return hooks


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    array = (tensor.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round()
    return Image.fromarray(array.astype(np.uint8))


def fix_seed(p: StableDiffusionProcessing) -> None:
    """Replace -1 seeds with concrete random ones (A1111 helper scripts call it)."""
    from sdwebui.engine.rng import resolve_seed

    p.seed = resolve_seed(int(p.seed if p.seed is not None else -1))
    p.subseed = resolve_seed(int(p.subseed if p.subseed is not None else -1))


def get_fixed_seed(seed: int | None) -> int:
    from sdwebui.engine.rng import resolve_seed

    return resolve_seed(-1 if seed is None or seed == "" else int(seed))


# --- A1111's module-level helpers extensions import ---
opt_C = 4  # noqa: N816 (A1111 name): latent channels
opt_f = 8  # the VAE's downscale factor


def create_binary_mask(image: Image.Image, round: bool = True) -> Image.Image:  # noqa: A002 (A1111 name)
    """An L mask from an image: its alpha channel when it has one (A1111), thresholded at 128 when `round`."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        image = image.split()[-1].convert("L")
    else:
        image = image.convert("L")
    return image.point(lambda x: 255 if x > 128 else 0) if round else image


def create_random_tensors(shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0,
                          seed_resize_from_w=0, p=None) -> torch.Tensor:  # fmt: skip
    """The initial noise of a batch, as the engine draws it (one CPU generator per seed; A1111's RNG)."""
    generator = ImageRNG(seeds, shape, subseeds, subseed_strength, seed_resize_from_h or -1,
                         seed_resize_from_w or -1, opt_f)  # fmt: skip
    return generator.first()


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    """`process_images` without applying `p.override_settings` (A1111: the caller did)."""
    if shared.current_job() is None:
        with shared.job_scope(_standalone_scope()):
            return _process_images(p)
    return _process_images(p)
