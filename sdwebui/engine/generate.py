"""Public entry of the engine: `generate(model, request, ctx, settings, hooks)` -> GenerationResult.

One job = n_iter batches of batch_size images. Image k of the job uses seed + k and its own CPU noise,
so it does not depend on the batch size. Hooks run in the order documented in hooks.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdwebui.engine import samplers, vae
from sdwebui.engine.cond_schedule import BatchConditioning
from sdwebui.engine.conditioning import PromptEncoder
from sdwebui.engine.context import JobContext
from sdwebui.engine.denoiser import CFGDenoiser, ModelAdapter, SizeConditioning, StepInterrupted
from sdwebui.engine.hooks import (
    BatchArgs,
    BeforeSamplingArgs,
    EngineHooks,
    ImageSaveArgs,
    JobState,
    PostprocessArgs,
    PostprocessBatchArgs,
    PostprocessImageArgs,
)
from sdwebui.engine.loop import SamplingJob, run_loop
from sdwebui.engine.plan import Txt2ImgPlan
from sdwebui.engine.prompt_parser import extra_network_tags
from sdwebui.engine.requests import GenerationResult, Img2ImgRequest, RequestError, Txt2ImgRequest
from sdwebui.engine.rng import ImageRNG, resolve_seed
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.model import LoadedModel
from sdwebui.outputs.infotext import create_infotext
from sdwebui.outputs.job_saving import filename_fields, save_generated


def generate(
    model: LoadedModel,
    request: Txt2ImgRequest | Img2ImgRequest,
    ctx: JobContext,
    settings: EngineSettings,
    hooks: EngineHooks | None = None,
) -> GenerationResult:
    """Run one txt2img or img2img job; returns the finished images (all of them, or those before an interrupt)."""
    hooks = hooks or EngineHooks()
    request = request.with_default_size(model.native_resolution)
    request.validate()
    _check_supported(request)
    sampler, schedule_label = samplers.resolve_sampler(request.sampler_name, request.scheduler)
    eta = _effective_eta(request, settings, sampler)
    samplers.create_scheduler(
        sampler.name, schedule_label, model.scheduler_config, eta
    )  # fail before any work
    state = plan_job(request, settings)
    if hooks.process is not None:
        hooks.process(state)  # may also edit state.request (e.g. init images), so the plan comes after
        request = state.request
        request.validate()
    _check_state(state)
    plan = _make_plan(model, request, settings, hooks)

    result = GenerationResult(request=request)
    started = dt.datetime.now()  # A1111's job_timestamp of the file-name pattern
    encoder = PromptEncoder(model, request.clip_skip)
    with torch.no_grad():
        for batch_number in range(request.n_iter):
            if ctx.interrupted:
                break
            ctx.clear_skip()
            state.batch_number = batch_number
            stopped = _run_batch(
                model, request, ctx, settings, hooks, state, plan, encoder, result, eta, started
            )
            if stopped == "interrupt":
                break
    result.interrupted = ctx.interrupted
    if hooks.postprocess is not None:
        hooks.postprocess(PostprocessArgs(state, result))
    return result


def plan_job(request: Txt2ImgRequest, settings: EngineSettings) -> JobState:
    """Resolve styles, random seeds and per-image prompts/seeds (A1111's setup_prompts and seed rules)."""
    count = request.n_iter * request.batch_size
    prompt, negative = request.prompt, request.negative_prompt
    if request.styles:
        if settings.styles is None:
            raise RequestError("styles", "no style database is configured")
        prompt = settings.styles.apply_to_prompt(prompt, request.styles)
        negative = settings.styles.apply_to_negative_prompt(negative, request.styles)
    check_no_extra_networks([prompt], [negative])
    seed = resolve_seed(request.seed)
    subseed = resolve_seed(request.subseed)
    # as A1111: with a variation strength all images share the seed and the subseed advances
    vary = request.subseed_strength > 0
    return JobState(
        request=request,
        all_prompts=[prompt] * count,
        all_negative_prompts=[negative] * count,
        all_seeds=[seed + (0 if vary else k) for k in range(count)],
        all_subseeds=[subseed + k for k in range(count)],
        extra_generation_params=dict(request.extra_generation_params),
    )


def _run_batch(
    model: LoadedModel,
    request: Txt2ImgRequest,
    ctx: JobContext,
    settings: EngineSettings,
    hooks: EngineHooks,
    state: JobState,
    plan: Any,
    encoder: PromptEncoder,
    result: GenerationResult,
    eta: float | None,
    started: dt.datetime,
) -> str | None:
    batch_number = state.batch_number
    indexes = [batch_number * request.batch_size + i for i in range(request.batch_size)]
    part = state.batch_slice(batch_number)
    args = BatchArgs(
        state,
        batch_number,
        state.all_prompts[part],
        state.all_negative_prompts[part],
        state.all_seeds[part],
        state.all_subseeds[part],
    )
    if hooks.process_batch is not None:
        hooks.process_batch(args)
        state.all_prompts[part], state.all_negative_prompts[part] = args.prompts, args.negative_prompts
        state.all_seeds[part], state.all_subseeds[part] = args.seeds, args.subseeds
        _check_state(state)
    check_no_extra_networks(args.prompts, args.negative_prompts)  # also what scripts put there

    scheduler = samplers.create_scheduler(
        request.sampler_name, request.scheduler, model.scheduler_config, eta
    )
    rng = ImageRNG(
        args.seeds,
        plan.latent_shape(),
        subseeds=args.subseeds,
        subseed_strength=request.subseed_strength,
        seed_resize_from_h=request.seed_resize_from_h,
        seed_resize_from_w=request.seed_resize_from_w,
        vae_scale_factor=model.vae_scale_factor,
        eta_noise_seed_delta=settings.eta_noise_seed_delta,
    )
    noise = rng.first()
    try:
        prepared = plan.prepare(scheduler, noise, indexes, lambda: ctx.interrupted)
    except StepInterrupted:  # during the init images' VAE encode: nothing to decode yet
        return "interrupt"
    latents = prepared.latents
    if hooks.before_sampling is not None:
        sampling_args = BeforeSamplingArgs(state, batch_number, latents, noise)
        hooks.before_sampling(sampling_args)
        latents = sampling_args.latents

    stopped = None
    if len(prepared.timesteps):
        adapter = ModelAdapter(
            model, scheduler.alphas_cumprod, SizeConditioning(request.height, request.width)
        )
        job = SamplingJob(
            denoiser=CFGDenoiser(adapter, request.cfg_scale, hooks),
            scheduler=scheduler,
            timesteps=prepared.timesteps,
            latents=latents,
            conditioning=BatchConditioning(
                encoder, args.prompts, args.negative_prompts, len(prepared.timesteps)
            ),
            generators=rng.generators,
            eta=eta,
            image_cond=prepared.image_cond,
            mask_blend=prepared.mask_blend,
        )
        outcome = run_loop(job, ctx, hooks, batch_number, request.n_iter, settings.live_preview_every)
        latents, stopped = outcome.latents, outcome.stopped
        if stopped == "skip" or (stopped == "interrupt" and outcome.steps_done == 0):
            return stopped

    try:
        pixels = vae.decode(model, latents, _stop_check(ctx))
    except StepInterrupted:
        return "interrupt"
    images = plan.finish(vae.pixels_to_pil(pixels), indexes)
    if hooks.postprocess_batch is not None:
        batch_args = PostprocessBatchArgs(state, batch_number, images)
        hooks.postprocess_batch(batch_args)
        images = batch_args.images
    for index, image in zip(indexes, images, strict=True):
        _finish_image(model, request, settings, hooks, state, plan, index, image, result, started)
    return stopped


def _stop_check(ctx: JobContext) -> Callable[[], bool]:
    """The decode stops for an interrupt that comes during it; after an earlier one it still runs, so an
    interrupted batch gets its partial image, as in A1111."""
    if ctx.interrupted:
        return lambda: False
    return lambda: ctx.interrupted


def _finish_image(
    model: LoadedModel,
    request: Txt2ImgRequest,
    settings: EngineSettings,
    hooks: EngineHooks,
    state: JobState,
    plan: Any,
    index: int,
    image: Image.Image,
    result: GenerationResult,
    started: dt.datetime,
) -> None:
    if hooks.postprocess_image is not None:
        image_args = PostprocessImageArgs(state, index, image)
        hooks.postprocess_image(image_args)
        image = image_args.image
    params = infotext_params(model, request, settings, state, index, plan.infotext_params())
    infotext = create_infotext(state.all_prompts[index], state.all_negative_prompts[index], params)
    if settings.save_images and not request.do_not_save_samples:
        save_args = ImageSaveArgs(state, index, image, infotext)
        if hooks.before_image_saved is not None:
            hooks.before_image_saved(save_args)
        fields = filename_fields(model, request, state, index, save_args.image, started)
        save_args.path = str(
            save_generated(save_args.image, save_args.infotext, fields, settings, plan.output_kind)
        )
        result.saved_paths.append(save_args.path)
        if hooks.image_saved is not None:
            hooks.image_saved(save_args)
    result.images.append(image)
    result.seeds.append(state.all_seeds[index])
    result.subseeds.append(state.all_subseeds[index])
    result.prompts.append(state.all_prompts[index])
    result.negative_prompts.append(state.all_negative_prompts[index])
    result.infotexts.append(infotext)


def infotext_params(
    model: LoadedModel,
    request: Txt2ImgRequest,
    settings: EngineSettings,
    state: JobState,
    index: int,
    edit_params: dict[str, Any],
) -> dict[str, Any]:
    """A1111's generation parameters of image `index`, in A1111's key order; None values are left out."""
    sampler, schedule_label = samplers.resolve_sampler(request.sampler_name, request.scheduler)
    eta = _effective_eta(request, settings, sampler) if sampler.eta_mode != samplers.ETA_NONE else None
    info = model.info
    separate_vae = model.vae_name is not None and settings.add_vae_to_info
    resize_from = request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": sampler.name,
        "Schedule type": samplers.infotext_schedule_label(sampler, schedule_label),
        "CFG scale": _number(request.cfg_scale),
        "Seed": state.all_seeds[index],
        "Size": f"{request.width}x{request.height}",
        "Model hash": info.shorthash if settings.add_model_hash_to_info else None,
        "Model": Path(info.name).name if settings.add_model_name_to_info else None,
        "VAE hash": model.extra.get("vae_hash") if separate_vae else None,
        "VAE": Path(model.vae_name).name if separate_vae else None,  # A1111: file name with extension
        "Variation seed": state.all_subseeds[index] if request.subseed_strength > 0 else None,
        "Variation seed strength": request.subseed_strength if request.subseed_strength > 0 else None,
        "Seed resize from": f"{request.seed_resize_from_w}x{request.seed_resize_from_h}"
        if resize_from
        else None,
        **edit_params,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        # A1111 names the delta only where it changed the image: a sampler that draws step noise
        "ENSD": settings.eta_noise_seed_delta if settings.eta_noise_seed_delta and eta else None,
        **state.extra_generation_params,
        # our initial noise is A1111's CPU RNG; without this key A1111 would assume GPU noise
        "RNG": "CPU",
        "Version": settings.version or None,
    }
    return {key: value for key, value in params.items() if value is not None}


def _number(value: float) -> int | float:
    """7.0 -> 7, as A1111's UI writes whole CFG scales."""
    return int(value) if float(value).is_integer() else value


def _make_plan(model: LoadedModel, request: Txt2ImgRequest, settings: EngineSettings, hooks: EngineHooks):
    if isinstance(request, Img2ImgRequest):
        from sdwebui.engine.img2img import Img2ImgPlan

        return Img2ImgPlan(model, request, settings, hooks.extra_noise)
    return Txt2ImgPlan(model, request)


def _effective_eta(
    request: Txt2ImgRequest, settings: EngineSettings, sampler: samplers.SamplerInfo
) -> float | None:
    if request.eta is not None:
        return request.eta
    if sampler.eta_mode == samplers.ETA_STEP:
        return settings.eta_ddim
    if sampler.eta_mode == samplers.ETA_FIXED:
        return settings.eta_ancestral
    return None


def _check_supported(request: Txt2ImgRequest) -> None:
    if request.restore_faces:
        raise RequestError("restore_faces", "face restoration is not available in this build")
    if request.tiling:
        raise RequestError("tiling", "seamless tiling is not available in this build")
    if request.s_noise != 1.0:
        raise RequestError("s_noise", "only 1.0 is supported by the diffusers schedulers")


def check_no_extra_networks(prompts: list[str], negative_prompts: list[str]) -> None:
    """No extra networks (LoRA, hypernetworks) exist in this build: a `<lora:...>` tag is refused rather than
    encoded as prompt text, which would silently change the image."""
    for field_name, texts in (("prompt", prompts), ("negative_prompt", negative_prompts)):
        for text in texts:
            tags = extra_network_tags(text)
            if tags:
                raise RequestError(
                    field_name,
                    f"extra networks are not supported in this build: remove {', '.join(tags)}",
                )


def _check_state(state: JobState) -> None:
    count = state.request.n_iter * state.request.batch_size
    for name in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        if len(getattr(state, name)) != count:
            raise ValueError(f"JobState.{name} must have {count} entries (n_iter * batch_size) after hooks")
