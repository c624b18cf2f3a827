"""Public entry of the engine: `generate(model, request, ctx, settings, hooks)` -> GenerationResult.

One job = n_iter batches of batch_size images. Image k of the job uses seed + k and its own CPU noise,
so it does not depend on the batch size. Hooks run in the order documented in hooks.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdwebui.engine import extra_networks, face_restoration, hires, samplers, stages, vae
from sdwebui.engine.conditioning import PromptEncoder
from sdwebui.engine.context import JobContext
from sdwebui.engine.controlnet.prepare import build_addons
from sdwebui.engine.flow import setup as flow
from sdwebui.engine.hooks import (
    EngineHooks,
    ImageSaveArgs,
    JobState,
    PostprocessArgs,
    PostprocessImageArgs,
    StageArgs,
)
from sdwebui.engine.memory.job import job_placement
from sdwebui.engine.memory.oom import retrying
from sdwebui.engine.memory.placement import active
from sdwebui.engine.memory.stats import PeakMemory
from sdwebui.engine.pass_models import pass_checkpoints
from sdwebui.engine.passes import RefinerSwitch, SamplingPass
from sdwebui.engine.plan import Txt2ImgPlan
from sdwebui.engine.requests import (
    GeneratedImage,
    GenerationResult,
    Img2ImgRequest,
    RequestError,
    Txt2ImgRequest,
)
from sdwebui.engine.rng import resolve_seed
from sdwebui.engine.saving import filename_fields, save_generated
from sdwebui.engine.settings import EngineSettings
from sdwebui.engine.speed import apply as speed
from sdwebui.models.controlnet import ControlNets
from sdwebui.models.families import family_spec
from sdwebui.models.model import LoadedModel
from sdwebui.outputs.infotext import create_infotext

STAGE_ORDERS = ("batch", "job")  # EngineSettings.stage_order


def generate(
    model: LoadedModel,
    request: Txt2ImgRequest | Img2ImgRequest,
    ctx: JobContext,
    settings: EngineSettings,
    hooks: EngineHooks | None = None,
) -> GenerationResult:
    """Run one txt2img or img2img job; returns the finished images (all of them, or those before an interrupt)."""
    hooks = hooks or EngineHooks()
    if settings.stage_order not in STAGE_ORDERS:
        raise ValueError(
            f"stage_order must be one of {', '.join(STAGE_ORDERS)}, got {settings.stage_order!r}"
        )
    request = request.with_default_size(model.native_resolution)
    request = request.with_family_defaults(family_spec(model.family).defaults)
    request.validate()
    hires.check_upscaler(getattr(request, "hires", None), settings.upscalers)
    _check_supported(request)
    if request.restore_faces:
        face_restoration.check_available(settings.face_restoration)
    sampler, schedule_label = samplers.resolve_sampler(request.sampler_name, request.scheduler)
    eta = _effective_eta(request, settings, sampler)
    if flow.is_flow(model):  # fail before any work
        flow.check_request(model, request, eta, settings.skip_layer_guidance)
    else:
        samplers.create_scheduler(sampler.name, schedule_label, model.scheduler_config, eta)
    state = plan_job(request, settings, hooks.extra_network_kinds)
    if hooks.process is not None:
        hooks.process(state)  # may also edit state.request (e.g. init images), so the plan comes after
        request = state.request
        request.validate()
    _check_state(state)
    plan = _make_plan(model, request, settings, hooks)
    detected_maps: list[Image.Image] = []
    if request.controlnet_units:  # after process(): scripts may have edited the units
        hooks, detected_maps = controlnet_hooks(model, request, settings.controlnets, hooks, state)
    for sampling_pass in job_passes(request)[1:]:  # an unknown sampler fails before any work
        samplers.resolve_sampler(sampling_pass.sampler_name, sampling_pass.scheduler)
    needs = [name for p in job_passes(request) for name in pass_checkpoints(p)]
    if needs and settings.checkpoints is None:  # the app gives its model manager; a bare engine call has none
        field_name = "refiner_checkpoint" if request.refiner_checkpoint else "hr_checkpoint_name"
        raise RequestError(field_name, f"cannot switch to checkpoint {needs[0]!r}: no model manager")

    with speed.applied(model, settings.speed, len(job_passes(request)) > 1) as weight_params:
        state.extra_generation_params.update(weight_params)
        result = _run_job(model, request, ctx, settings, hooks, state, plan, eta)
    result.extra_images = detected_maps
    result.interrupted = ctx.interrupted
    if hooks.postprocess is not None:
        hooks.postprocess(PostprocessArgs(state, result))
    return result


def _run_job(
    model: LoadedModel,
    request: Txt2ImgRequest,
    ctx: JobContext,
    settings: EngineSettings,
    hooks: EngineHooks,
    state: JobState,
    plan: Any,
    eta: float | None,
) -> GenerationResult:
    """The job's stages, with its components placed per its memory plan; the result before postprocess."""
    started = dt.datetime.now()  # A1111's job_timestamp (file-name pattern, info JSON)
    result = GenerationResult(request=request, job_timestamp=started.strftime("%Y%m%d%H%M%S"))
    passes = job_passes(request)
    largest = max(passes, key=lambda p: p.width * p.height)
    placement = job_placement(model, largest.width, largest.height, request.batch_size, settings.memory)
    # a memory mode that moves components runs the stages over the whole job: each moves once per job
    order = "job" if placement.plan.moves_between_stages else settings.stage_order
    networks = extra_networks.JobNetworks(model, state, order == "batch", hooks.extra_network_kinds)
    run = stages.JobRun(
        model=model,
        request=request,
        ctx=ctx,
        settings=settings,
        hooks=hooks,
        state=state,
        plan=plan,
        passes=passes,
        encoder=_prompt_encoder(model, request, settings),
        result=result,
        eta=eta,
        started=started,
        check_state=_check_state,
        check_prompts=networks.prompts_for_batch,
        placement=placement,
    )
    networks.on_change = lambda: setattr(run, "encoder", _prompt_encoder(model, request, settings))
    with torch.no_grad(), active(placement), PeakMemory(model.device) as peak:
        if order == "job":
            _run_by_stage(run)
        else:
            _run_by_batch(run)
    result.peak_memory, result.memory_mode = peak.report(), placement.plan.mode
    return result


def _prompt_encoder(model: LoadedModel, request: Txt2ImgRequest, settings: EngineSettings):
    if flow.is_flow(model):
        return flow.prompt_encoder(model, request.clip_skip, settings.embeddings)
    return PromptEncoder(model, request.clip_skip, settings.embeddings)


def job_passes(request: Txt2ImgRequest) -> list[SamplingPass]:
    """The request's own pass (sampler, steps, size of the request), then its extra passes."""
    first = SamplingPass(
        width=request.width,
        height=request.height,
        steps=request.steps,
        sampler_name=request.sampler_name,
        scheduler=request.scheduler,
        cfg_scale=request.cfg_scale,
        denoising_strength=getattr(request, "denoising_strength", 1.0),
        name="img2img" if isinstance(request, Img2ImgRequest) else "txt2img",
    )
    hires_pass = [hires.second_pass(request.hires, hires.first_pass(request))] if request.hires else []
    passes = [first, *hires_pass, *request.extra_passes]
    if request.refiner_checkpoint:  # A1111's hires_fix_refiner_pass default "second pass": the last one
        switch = RefinerSwitch(request.refiner_checkpoint, request.refiner_switch_at)
        passes[-1] = dataclasses.replace(passes[-1], refiner=switch)
    return passes


def _run_by_batch(run: stages.JobRun) -> None:
    """A1111's order: each batch conditioned, sampled and decoded before the next one starts."""
    for batch_number in range(run.request.n_iter):
        if run.ctx.interrupted:
            break
        run.ctx.clear_skip()
        _before_stage(run, stages.CONDITIONING, [batch_number])
        work = stages.condition(run, batch_number)
        _before_stage(run, stages.SAMPLING, [batch_number])
        retrying(run.placement, stages.SAMPLING, partial(stages.sample, run, work))
        if work.decodable:
            _before_stage(run, stages.DECODE, [batch_number])
            _finish_batch(run, work)
        if work.stopped == stages.INTERRUPT:
            break


def _run_by_stage(run: stages.JobRun) -> None:
    """Stage by stage over the job: all batches' conditioning, then all sampling, then all decodes, so a
    component moves between devices once per job."""
    batches = list(range(run.request.n_iter))
    _before_stage(run, stages.CONDITIONING, batches)
    works = []
    for batch_number in batches:
        if run.ctx.interrupted:
            break
        works.append(stages.condition(run, batch_number))
    _before_stage(run, stages.SAMPLING, [work.number for work in works])
    sampled = []
    for work in works:
        if run.ctx.interrupted:
            break
        run.ctx.clear_skip()
        retrying(run.placement, stages.SAMPLING, partial(stages.sample, run, work))
        sampled.append(work)
        if work.stopped == stages.INTERRUPT:
            break
    decodable = [work for work in sampled if work.decodable]
    if decodable:
        _before_stage(run, stages.DECODE, [work.number for work in decodable])
    for work in decodable:
        _finish_batch(run, work)


def _before_stage(run: stages.JobRun, stage: str, batch_numbers: list[int]) -> None:
    run.placement.enter(stage)
    if run.hooks.before_stage is not None:
        run.hooks.before_stage(StageArgs(run.state, stage, batch_numbers))


def _finish_batch(run: stages.JobRun, work: stages.BatchWork) -> None:
    images = retrying(run.placement, stages.DECODE, partial(stages.decode, run, work))
    if images is None:
        return
    for index, image in zip(work.indexes, images, strict=True):
        _finish_image(run, index, image)


def plan_job(
    request: Txt2ImgRequest, settings: EngineSettings, network_kinds: frozenset[str] = frozenset()
) -> JobState:
    """Resolve styles, random seeds and per-image prompts/seeds (A1111's setup_prompts and seed rules)."""
    count = request.n_iter * request.batch_size
    prompt, negative = request.prompt, request.negative_prompt
    if request.styles:
        if settings.styles is None:
            raise RequestError("styles", "no style database is configured")
        prompt = settings.styles.apply_to_prompt(prompt, request.styles)
        negative = settings.styles.apply_to_negative_prompt(negative, request.styles)
    extra_networks.check_prompts([prompt], [negative], network_kinds)  # LoRA tags: checked, applied per batch
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


def _finish_image(run: stages.JobRun, index: int, image: Image.Image) -> None:
    """postprocess_image, infotext, saving and its hooks for image `index` of the job."""
    model, request, settings, hooks = run.model, run.request, run.settings, run.hooks
    state, plan, result = run.state, run.plan, run.result
    if request.restore_faces:  # A1111: before the scripts' postprocess_image
        image = face_restoration.restore_for_job(image, settings.face_restoration)
    if hooks.postprocess_image is not None:
        image_args = PostprocessImageArgs(state, index, image)
        hooks.postprocess_image(image_args)
        image = image_args.image
    params = infotext_params(model, request, settings, state, index, plan.infotext_params())
    infotext = create_infotext(state.all_prompts[index], state.all_negative_prompts[index], params)
    saved_path = None
    if settings.save_images and not request.do_not_save_samples:
        save_args = ImageSaveArgs(state, index, image, infotext)
        if hooks.before_image_saved is not None:
            hooks.before_image_saved(save_args)
        fields = filename_fields(model, request, state, index, save_args.image, run.started)
        save_args.path = str(
            save_generated(save_args.image, save_args.infotext, fields, settings, plan.output_kind)
        )
        saved_path = save_args.path
        if hooks.image_saved is not None:
            hooks.image_saved(save_args)
    item = GeneratedImage(
        image=image,
        seed=state.all_seeds[index],
        subseed=state.all_subseeds[index],
        prompt=state.all_prompts[index],
        negative_prompt=state.all_negative_prompts[index],
        infotext=infotext,
        saved_path=saved_path,
    )
    result.images.append(item)


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
    hires_params = {}
    if request.hires is not None:
        prompts = (state.all_prompts[index], state.all_negative_prompts[index])
        checkpoint = state.extra_generation_params.get("Hires checkpoint")
        hires_params = hires.infotext_params(request.hires, hires.first_pass(request), *prompts, checkpoint)
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": sampler.name,
        "Schedule type": samplers.infotext_schedule_label(sampler, schedule_label),
        "CFG scale": _number(request.cfg_scale),
        "Seed": state.all_seeds[index],
        "Face restoration": settings.face_restoration.model if request.restore_faces else None,
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
        **hires_params,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        # A1111 names the delta only where it changed the image: a sampler that draws step noise
        "ENSD": settings.eta_noise_seed_delta if settings.eta_noise_seed_delta and eta else None,
        # A1111 writes eta only when it differs from the sampler's default: 0 for DDIM-style samplers (the
        # ancestral ones can only run at their default 1 over diffusers, so "Eta" never differs)
        "Eta DDIM": _number(eta) if sampler.eta_mode == samplers.ETA_STEP and eta else None,
        "NGMS": _number(settings.s_min_uncond) if settings.s_min_uncond else None,  # A1111's key
        **state.extra_generation_params,
        # our initial noise is A1111's CPU RNG; without this key A1111 would assume GPU noise
        "RNG": "CPU",
        "Version": settings.version or None,
    }
    if flow.is_flow(model):  # Forge's keys, in place of the U-Net sampler registry's
        params.update(flow.infotext_params(model, request, settings.skip_layer_guidance))
        params.pop("ENSD", None)
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
    if request.tiling:
        raise RequestError("tiling", "seamless tiling is not available in this build")
    if request.s_noise != 1.0:
        raise RequestError("s_noise", "only 1.0 is supported by the diffusers schedulers")


def _check_state(state: JobState) -> None:
    count = state.request.n_iter * state.request.batch_size
    for name in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        if len(getattr(state, name)) != count:
            raise ValueError(f"JobState.{name} must have {count} entries (n_iter * batch_size) after hooks")


def controlnet_hooks(
    model: LoadedModel,
    request: Txt2ImgRequest,
    controlnets: ControlNets | None,
    hooks: EngineHooks,
    state: JobState,
) -> tuple[EngineHooks, list[Image.Image]]:
    """`hooks` with the job's ControlNet add-ons (their `ControlNet i` infotext entries put in the job's
    params), and the detected maps to show after the images (units with a preprocessor and save_detected_map)."""
    init: tuple[Image.Image | None, Image.Image | None] = (None, None)
    if isinstance(request, Img2ImgRequest) and request.init_images:
        init = (request.init_images[0], request.mask)
    job = build_addons(
        model,
        request.controlnet_units,
        controlnets,
        (request.width, request.height),
        init,
        hires=request.hires is not None,
        seed=state.all_seeds[0] if state.all_seeds else 0,
        encode=lambda pixels: vae.encode(model, pixels),
    )
    if not job.addons:
        return hooks, []
    state.extra_generation_params.update(job.infotext)
    if job.fixes:  # inpaint_only's final blend, before extensions' postprocess_image
        then = hooks.postprocess_image

        def postprocess_image(args: PostprocessImageArgs) -> None:
            args.image = job.final_image(args.image, args.index)
            if then is not None:
                then(args)

        hooks = dataclasses.replace(hooks, postprocess_image=postprocess_image)
    # first, so that later add-ons (extensions') see the residuals
    return dataclasses.replace(hooks, unet_addons=[*job.addons, *hooks.unet_addons]), job.maps
