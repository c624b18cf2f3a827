"""Public entry of the engine: `generate(model, request, ctx, settings, hooks)` -> GenerationResult.

One job = n_iter batches of batch_size images. Image k of the job uses seed + k and its own CPU noise,
so it does not depend on the batch size. Hooks run in the order documented in hooks.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdwebui.engine import extra_networks, hires, samplers, stages
from sdwebui.engine.conditioning import PromptEncoder
from sdwebui.engine.context import JobContext
from sdwebui.engine.flow import setup as flow
from sdwebui.engine.hooks import (
    EngineHooks,
    ImageSaveArgs,
    JobState,
    PostprocessArgs,
    PostprocessImageArgs,
    StageArgs,
)
from sdwebui.engine.passes import SamplingPass
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
    request.validate()
    hires.check_upscaler(getattr(request, "hires", None), settings.upscalers)
    _check_supported(request)
    sampler, schedule_label = samplers.resolve_sampler(request.sampler_name, request.scheduler)
    eta = _effective_eta(request, settings, sampler)
    if flow.is_flow(model):  # fail before any work
        flow.check_request(model, request, eta)
    else:
        samplers.create_scheduler(sampler.name, schedule_label, model.scheduler_config, eta)
    state = plan_job(request, settings)
    if hooks.process is not None:
        hooks.process(state)  # may also edit state.request (e.g. init images), so the plan comes after
        request = state.request
        request.validate()
    _check_state(state)
    plan = _make_plan(model, request, settings, hooks)
    for sampling_pass in job_passes(request)[1:]:  # an unknown sampler fails before any work
        samplers.resolve_sampler(sampling_pass.sampler_name, sampling_pass.scheduler)

    started = dt.datetime.now()  # A1111's job_timestamp (file-name pattern, info JSON)
    result = GenerationResult(request=request, job_timestamp=started.strftime("%Y%m%d%H%M%S"))
    networks = extra_networks.JobNetworks(model, state, switch_allowed=settings.stage_order == "batch")
    run = stages.JobRun(
        model=model,
        request=request,
        ctx=ctx,
        settings=settings,
        hooks=hooks,
        state=state,
        plan=plan,
        passes=job_passes(request),
        encoder=_prompt_encoder(model, request, settings),
        result=result,
        eta=eta,
        started=started,
        check_state=_check_state,
        check_prompts=networks.prompts_for_batch,
    )
    networks.on_change = lambda: setattr(run, "encoder", _prompt_encoder(model, request, settings))
    with torch.no_grad():
        if settings.stage_order == "job":
            _run_by_stage(run)
        else:
            _run_by_batch(run)
    result.interrupted = ctx.interrupted
    if hooks.postprocess is not None:
        hooks.postprocess(PostprocessArgs(state, result))
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
    return [first, *hires_pass, *request.extra_passes]


def _run_by_batch(run: stages.JobRun) -> None:
    """A1111's order: each batch conditioned, sampled and decoded before the next one starts."""
    for batch_number in range(run.request.n_iter):
        if run.ctx.interrupted:
            break
        run.ctx.clear_skip()
        _before_stage(run, stages.CONDITIONING, [batch_number])
        work = stages.condition(run, batch_number)
        _before_stage(run, stages.SAMPLING, [batch_number])
        stages.sample(run, work)
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
        stages.sample(run, work)
        sampled.append(work)
        if work.stopped == stages.INTERRUPT:
            break
    decodable = [work for work in sampled if work.decodable]
    if decodable:
        _before_stage(run, stages.DECODE, [work.number for work in decodable])
    for work in decodable:
        _finish_batch(run, work)


def _before_stage(run: stages.JobRun, stage: str, batch_numbers: list[int]) -> None:
    if run.hooks.before_stage is not None:
        run.hooks.before_stage(StageArgs(run.state, stage, batch_numbers))


def _finish_batch(run: stages.JobRun, work: stages.BatchWork) -> None:
    images = stages.decode(run, work)
    if images is None:
        return
    for index, image in zip(work.indexes, images, strict=True):
        _finish_image(run, index, image)


def plan_job(request: Txt2ImgRequest, settings: EngineSettings) -> JobState:
    """Resolve styles, random seeds and per-image prompts/seeds (A1111's setup_prompts and seed rules)."""
    count = request.n_iter * request.batch_size
    prompt, negative = request.prompt, request.negative_prompt
    if request.styles:
        if settings.styles is None:
            raise RequestError("styles", "no style database is configured")
        prompt = settings.styles.apply_to_prompt(prompt, request.styles)
        negative = settings.styles.apply_to_negative_prompt(negative, request.styles)
    extra_networks.check_prompts([prompt], [negative])  # LoRA tags are checked here, applied per batch
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
        hires_params = hires.infotext_params(request.hires, hires.first_pass(request), *prompts)
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
        **hires_params,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        # A1111 names the delta only where it changed the image: a sampler that draws step noise
        "ENSD": settings.eta_noise_seed_delta if settings.eta_noise_seed_delta and eta else None,
        # A1111 writes eta only when it differs from the sampler's default: 0 for DDIM-style samplers (the
        # ancestral ones can only run at their default 1 over diffusers, so "Eta" never differs)
        "Eta DDIM": _number(eta) if sampler.eta_mode == samplers.ETA_STEP and eta else None,
        **state.extra_generation_params,
        # our initial noise is A1111's CPU RNG; without this key A1111 would assume GPU noise
        "RNG": "CPU",
        "Version": settings.version or None,
    }
    if flow.is_flow(model):  # Forge's keys, in place of the U-Net sampler registry's
        params.update(flow.infotext_params(model, request))
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
    if request.restore_faces:
        raise RequestError("restore_faces", "face restoration is not available in this build")
    if request.tiling:
        raise RequestError("tiling", "seamless tiling is not available in this build")
    if request.s_noise != 1.0:
        raise RequestError("s_noise", "only 1.0 is supported by the diffusers schedulers")


def _check_state(state: JobState) -> None:
    count = state.request.n_iter * state.request.batch_size
    for name in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        if len(getattr(state, name)) != count:
            raise ValueError(f"JobState.{name} must have {count} entries (n_iter * batch_size) after hooks")
