"""The three stages of a job's batches: conditioning -> sampling (every pass) -> decode.

Each stage is a function over one batch's `BatchWork`; `generate` runs them batch by batch (A1111's hook
order) or stage by stage over the whole job (`EngineSettings.stage_order == "job"`), so that a memory mode
can move the text encoders, the U-Net and the VAE between devices once per job, between the stages.
Images are the same in both orders: every image has its own CPU noise streams.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from PIL import Image

from sdwebui.engine import hires, samplers, vae
from sdwebui.engine.addons import wrapped_attention
from sdwebui.engine.cond_schedule import BatchConditioning
from sdwebui.engine.conditioning import PromptEncoder
from sdwebui.engine.context import JobContext
from sdwebui.engine.controlnet.prepare import check_pass_model, same_control_family
from sdwebui.engine.denoiser import CFGDenoiser, ModelAdapter, SizeConditioning, StepInterrupted
from sdwebui.engine.extra_networks import split_prompt
from sdwebui.engine.flow import setup as flow
from sdwebui.engine.hooks import (
    BatchArgs,
    BeforeSamplingArgs,
    ConditioningArgs,
    EngineHooks,
    JobState,
    PostprocessBatchArgs,
)
from sdwebui.engine.loop import LoopOutcome, Progress, SamplingJob, run_loop
from sdwebui.engine.memory.placement import Placement
from sdwebui.engine.pass_models import PassModels, short_title
from sdwebui.engine.pass_networks import SKIPPED_KEY
from sdwebui.engine.passes import SamplingPass, img2img_steps
from sdwebui.engine.plan import PreparedBatch, blank_inpainting_cond
from sdwebui.engine.requests import GenerationResult, Txt2ImgRequest
from sdwebui.engine.rng import ImageRNG
from sdwebui.engine.settings import EngineSettings
from sdwebui.engine.speed.tome import token_merging
from sdwebui.models.model import LoadedModel

log = logging.getLogger(__name__)

INTERRUPT, SKIP = "interrupt", "skip"
CONDITIONING, SAMPLING, DECODE = "conditioning", "sampling", "decode"  # hooks.StageArgs.stage


@dataclass
class JobRun:
    """What every stage of one job reads: the job's model, request, hooks and plan."""

    model: LoadedModel
    request: Txt2ImgRequest
    ctx: JobContext
    settings: EngineSettings
    hooks: EngineHooks
    state: JobState
    plan: Any  # Txt2ImgPlan | Img2ImgPlan: how the first pass starts and how images are finished
    passes: list[SamplingPass]
    encoder: PromptEncoder
    result: GenerationResult
    eta: float | None
    started: dt.datetime  # A1111's job_timestamp of the file-name pattern
    check_state: Callable[[JobState], None]
    # checks a batch's prompts, activates their extra networks; returns the texts to encode
    check_prompts: Callable[[list[str], list[str]], list[str]]
    placement: Placement  # where the components are: moved at the stage boundaries (sdwebui.engine.memory)


@dataclass
class BatchWork:
    """One batch as it goes through the stages."""

    number: int
    indexes: list[int]  # the images of the job in this batch
    args: BatchArgs  # prompts and seeds after process_batch
    # one per pass (None: a pass on another checkpoint, encoded by its own model when it runs)
    conditioning: list[BatchConditioning | None] = field(default_factory=list)
    prompts: list[tuple[list[str], list[str]]] = field(default_factory=list)  # each pass's texts
    latents: torch.Tensor | None = None  # after sampling
    stopped: str | None = None  # INTERRUPT | SKIP
    images: list[Image.Image] | None = None  # a last pass that only upscales (strength 0): its images

    @property
    def decodable(self) -> bool:
        """Sampled (or interrupted after at least one step): an interrupted batch decodes its last estimate."""
        return (self.latents is not None or self.images is not None) and self.stopped != SKIP


# -- stage 1: conditioning ---------------------------------------------------------------------------------
def condition(run: JobRun, batch_number: int) -> BatchWork:
    """process_batch, then every pass's prompt schedules encoded (each pass counts its own steps)."""
    state, request = run.state, run.request
    state.batch_number = batch_number
    part = state.batch_slice(batch_number)
    args = BatchArgs(
        state,
        batch_number,
        state.all_prompts[part],
        state.all_negative_prompts[part],
        state.all_seeds[part],
        state.all_subseeds[part],
        run.hooks,
    )
    if run.hooks.process_batch is not None:
        run.hooks.process_batch(args)
        state.all_prompts[part], state.all_negative_prompts[part] = args.prompts, args.negative_prompts
        state.all_seeds[part], state.all_subseeds[part] = args.seeds, args.subseeds
        run.check_state(state)
    encoded = run.check_prompts(args.prompts, args.negative_prompts)  # also what scripts put there
    indexes = [batch_number * request.batch_size + i for i in range(request.batch_size)]
    work = BatchWork(batch_number, indexes, args)
    for sampling_pass in run.passes:
        prompts, negatives = _pass_prompts(run, sampling_pass, args, encoded)
        work.prompts.append((prompts, negatives))
        # a pass on another checkpoint is encoded by that model's text encoders when it runs
        own = sampling_pass.checkpoint is None
        index = len(work.prompts) - 1
        work.conditioning.append(
            encode_pass(run, run.encoder, sampling_pass, index, work.prompts[-1]) if own else None
        )
    if run.encoder.used:  # A1111 adds them to the job's extra generation params once encoded
        state.extra_generation_params["TI hashes"] = run.encoder.ti_hashes()
    return work


def encode_pass(
    run: JobRun,
    encoder: PromptEncoder,
    sampling_pass: SamplingPass,
    index: int,
    prompts: tuple[list[str], list[str]],
) -> BatchConditioning:
    """A pass's conditioning of (prompts, negative prompts): the conditioning hook's when it supplies one (an
    extension's replacement of A1111's parser functions), else the engine's own encoding."""
    positives, negatives = prompts
    if run.hooks.conditioning is not None:
        args = ConditioningArgs(
            positives,
            negatives,
            sampling_pass.steps,
            sampling_pass.width,
            sampling_pass.height,
            index,
            encoder,
        )
        run.hooks.conditioning(args)
        if args.conditioning is not None:
            return args.conditioning
    return BatchConditioning.from_prompts(encoder, positives, negatives, sampling_pass.steps)


def _pass_prompts(
    run: JobRun, sampling_pass: SamplingPass, args: BatchArgs, encoded: list[str]
) -> tuple[list[str], list[str]]:
    """A pass's own prompts (hires fix's hr_prompt) with the job's styles, as A1111's all_hr_prompts; else
    the batch's prompts after process_batch (`encoded`: without their LoRA tags). A pass's own prompt loses
    its LoRA tags too; the networks active for the batch are those of its first prompt."""
    styles, database = run.request.styles, run.settings.styles
    prompts, negatives = encoded, args.negative_prompts
    if sampling_pass.prompt:
        prompt = sampling_pass.prompt
        if styles and database is not None:
            prompt = database.apply_to_prompt(prompt, styles)
        prompts = [split_prompt(prompt, handled=run.hooks.extra_network_kinds)[0]] * len(prompts)
    if sampling_pass.negative_prompt:
        negative = sampling_pass.negative_prompt
        if styles and database is not None:
            negative = database.apply_to_negative_prompt(negative, styles)
        negatives = [negative] * len(negatives)
    return prompts, negatives


# -- stage 2: sampling ---------------------------------------------------------------------------------------
@dataclass
class _PassStart:
    scheduler: Any
    prepared: PreparedBatch
    generators: list[torch.Generator]
    noise: torch.Tensor


def sample(run: JobRun, work: BatchWork) -> None:
    """Every pass over the batch; sets work.latents (None when nothing is left to decode) and work.stopped.
    The other checkpoints the passes name are leased for the batch's sampling, before its first step."""
    run.state.batch_number = work.number
    with ExitStack() as leases:
        skipped = partial(_note_skipped_network, run.state)
        models = PassModels(
            run.model, run.settings, run.request.clip_skip, run.settings.embeddings, leases, skipped
        )
        pass_models = []
        for sampling_pass in run.passes:
            pass_models.append(models.model(sampling_pass.checkpoint, "hr_checkpoint_name"))
            if pass_models[-1] is not run.model:  # before any step: units that cannot act there fail now
                check_pass_model(run.request, run.model, pass_models[-1], "hr_checkpoint_name")
            if sampling_pass.refiner is not None:
                models.model(sampling_pass.refiner.checkpoint)
        _sample(run, work, models, pass_models)


def _note_skipped_network(state: JobState, file_name: str, model: LoadedModel) -> None:
    """A LoRA of the prompt that fits nothing in a pass's checkpoint: named in the job's infotext."""
    note = f"{file_name}: {short_title(model)}"
    written = state.extra_generation_params.get(SKIPPED_KEY)
    notes = written.split(", ") if written else []
    if note not in notes:
        log.warning("LoRA %s fits nothing in %s: not applied there", file_name, short_title(model))
        state.extra_generation_params[SKIPPED_KEY] = ", ".join([*notes, note])


def _sample(run: JobRun, work: BatchWork, models: PassModels, pass_models: list[LoadedModel]) -> None:
    try:
        first = _first_pass_start(run, work)
    except StepInterrupted:  # during the init images' VAE encode: nothing to decode yet
        work.stopped = INTERRUPT
        return
    latents = first.prepared.latents
    if run.hooks.before_sampling is not None:
        sampling_args = BeforeSamplingArgs(run.state, work.number, latents, first.noise)
        run.hooks.before_sampling(sampling_args)
        latents = sampling_args.latents
    # known up front: progress counts every pass
    schedules = [_schedule(run, p, m) for p, m in zip(run.passes[1:], pass_models[1:], strict=True)]
    counts = [len(first.prepared.timesteps)] + [len(timesteps) for _, timesteps in schedules]
    start, previous = first, None
    for index, sampling_pass in enumerate(run.passes):
        if index > 0:
            if run.ctx.interrupted:  # between the passes: the previous pass's result
                work.stopped = INTERRUPT
                return
            previous = latents
            last = index == len(run.passes) - 1
            try:
                start = _later_pass_start(
                    run,
                    work,
                    sampling_pass,
                    latents,
                    schedules[index - 1],
                    last,
                    pass_models[index - 1 : index + 1],
                )
            except StepInterrupted:  # during the upscale's VAE round trip
                work.stopped = INTERRUPT
                return
            if start is None:  # the last pass only upscaled: work.images are the result
                return
            latents = start.prepared.latents
            if sampling_pass.checkpoint and sampling_pass.name == "hires":
                run.state.extra_generation_params["Hires checkpoint"] = short_title(pass_models[index])
            if run.hooks.before_later_pass is not None:  # A1111's before_hr + process_before_every_sampling
                sampling_args = BeforeSamplingArgs(run.state, work.number, latents, start.noise, index)
                run.hooks.before_later_pass(sampling_args)
                latents = sampling_args.latents
        progress = Progress(
            work.number, run.request.n_iter, sum(counts[:index]), sum(counts), index, len(counts)
        )
        latents = _run_pass(run, work, sampling_pass, index, start, latents, previous, progress, models)
        if work.stopped is not None:
            return


def _run_pass(
    run: JobRun,
    work: BatchWork,
    sampling_pass: SamplingPass,
    index: int,
    start: _PassStart,
    latents: torch.Tensor,
    previous: torch.Tensor | None,
    progress: Progress,
    models: PassModels,
) -> torch.Tensor:
    """One pass's loop; `previous` is the last pass's result, decoded if this one stops before a step. With a
    refiner the pass's steps from the switch run on the refiner, same scheduler, latents and noise streams."""
    prepared = start.prepared
    if not len(prepared.timesteps):  # img2img strength 0: the init latents as they are
        work.latents = latents
        return latents
    total = len(prepared.timesteps)
    segments = [(models.model(sampling_pass.checkpoint), range(total))]
    refiner = sampling_pass.refiner
    if refiner is not None:
        switch = refiner.switch_step([float(t) for t in prepared.timesteps])
        refiner_model = models.model(refiner.checkpoint)
        segments = [(segments[0][0], range(switch)), (refiner_model, range(switch, total))]
    estimate = previous
    for position, (model, steps) in enumerate(segments):
        if not len(steps):
            continue
        stopping = run.ctx.interrupted or run.ctx.skipped  # the switch does not come
        if refiner is not None and position == 1 and not stopping:  # may be the job's own checkpoint
            run.state.extra_generation_params["Refiner"] = short_title(model)
            run.state.extra_generation_params["Refiner switch at"] = refiner.switch_at
        outcome = _run_segment(
            run, work, sampling_pass, index, start, latents, model, steps, progress, models
        )
        if outcome.stopped is not None:
            work.stopped = outcome.stopped
            if outcome.stopped == SKIP:
                work.latents = None
            elif outcome.steps_done == steps.start:  # interrupted before a step of this segment
                work.latents = estimate  # None in the first pass: nothing sampled, nothing to decode
            else:
                work.latents = outcome.latents
            return outcome.latents
        latents = outcome.latents
        estimate = outcome.estimate if outcome.estimate is not None else latents
    work.latents = latents
    return latents


def _run_segment(
    run: JobRun,
    work: BatchWork,
    sampling_pass: SamplingPass,
    index: int,
    start: _PassStart,
    latents: torch.Tensor,
    model: LoadedModel,
    steps: range,
    progress: Progress,
    models: PassModels,
) -> LoopOutcome:
    """`steps` of a pass's timesteps on `model` (the job's model gets the U-Net add-ons and its conditioning)."""
    prepared = start.prepared
    size = SizeConditioning(
        *(sampling_pass.original_size or (sampling_pass.height, sampling_pass.width)), *sampling_pass.crop
    )
    own = model is run.model
    addons = run.hooks.unet_addons if _takes_addons(run, sampling_pass, model, models) else ()
    if flow.is_flow(model):
        guidance = flow.Guidance(
            run.request.distilled_cfg_scale, sampling_pass.cfg_scale, run.settings.skip_layer_guidance
        )
        adapter = flow.adapter(model, guidance, index, addons)
    else:
        adapter = ModelAdapter(model, start.scheduler.alphas_cumprod, size, addons, index)
    conditioning = work.conditioning[index] if own else None
    if conditioning is None:
        encoder = run.encoder if own else models.encoder(model)  # the job's: its cache, its TI hashes
        conditioning = encode_pass(run, encoder, sampling_pass, index, work.prompts[index])
    job = SamplingJob(
        denoiser=CFGDenoiser(
            adapter, sampling_pass.cfg_scale, run.hooks, work.indexes, run.settings.s_min_uncond
        ),
        scheduler=start.scheduler,
        timesteps=prepared.timesteps,
        latents=latents,
        conditioning=conditioning,
        generators=start.generators,
        eta=run.eta,
        image_cond=prepared.image_cond,
        mask_blend=prepared.mask_blend,
        steps=steps,
        block_checks=not run.settings.speed.compile,
    )
    factor, ratio = model.vae_scale_factor, run.settings.speed.merging_ratio(index)
    latent_size = (sampling_pass.height // factor, sampling_pass.width // factor)
    with wrapped_attention(model.unet, adapter.addons), token_merging(model.unet, ratio, *latent_size):
        return run_loop(job, run.ctx, run.hooks, progress, run.settings.live_preview_every)


def _takes_addons(run: JobRun, sampling_pass: SamplingPass, model: LoadedModel, models: PassModels) -> bool:
    """The U-Net add-ons (ControlNet) are built for the job's model; they also act on a later pass's own
    checkpoint of the same family (as sd-webui-controlnet in a hires pass on hr_checkpoint_name; another
    family failed in `sample`), not on a refiner's steps."""
    if model is run.model:
        return True
    own_checkpoint = sampling_pass.checkpoint and model is models.model(sampling_pass.checkpoint)
    return bool(own_checkpoint) and same_control_family(run.model, model)


def _first_pass_start(run: JobRun, work: BatchWork) -> _PassStart:
    request, args = run.request, work.args
    scheduler = _create_scheduler(
        run, run.model, request.sampler_name, request.scheduler, request.width, request.height
    )
    rng = _rng(run, args, run.plan.latent_shape())
    noise = rng.first()
    prepared = run.plan.prepare(scheduler, noise, work.indexes, lambda: run.ctx.interrupted)
    return _PassStart(scheduler, prepared, rng.generators, noise)


def _schedule(run: JobRun, sampling_pass: SamplingPass, model: LoadedModel) -> tuple[Any, torch.Tensor]:
    """A later pass's scheduler (its model's) and the timesteps it runs (the tail of its schedule)."""
    scheduler = _create_scheduler(
        run,
        model,
        sampling_pass.sampler_name,
        sampling_pass.scheduler,
        sampling_pass.width,
        sampling_pass.height,
    )
    total, steps_run = img2img_steps(
        sampling_pass.steps, sampling_pass.denoising_strength, sampling_pass.fix_steps
    )
    samplers.set_timesteps(scheduler, total, device=model.device)
    if steps_run == 0:
        return scheduler, scheduler.timesteps[:0]
    begin = (total - steps_run) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler, scheduler.timesteps[begin:]


def _create_scheduler(
    run: JobRun, model: LoadedModel, sampler_name: str, schedule: str | None, width: int, height: int
) -> Any:
    """A fresh scheduler for a pass on `model`: flow matching for DiT families, a diffusers one for U-Nets."""
    if flow.is_flow(model):
        return flow.create_scheduler(model, sampler_name, schedule, run.eta, width, height)
    return samplers.create_scheduler(sampler_name, schedule, model.scheduler_config, run.eta)


def _later_pass_start(
    run: JobRun,
    work: BatchWork,
    sampling_pass: SamplingPass,
    latents: torch.Tensor,
    schedule: tuple[Any, torch.Tensor],
    last: bool,
    models: list[LoadedModel],
) -> _PassStart | None:
    """The previous latents at this pass's size, noised to its first timestep with fresh noise of its
    shape from the images' seeds (as A1111's hires pass). None when the last pass runs no step after an
    image upscaler (A1111's upscale-only hires fix): the upscaled images are the batch's result.
    `models`: the previous pass's model (decodes) and this pass's (encodes, samples)."""
    before, model = models
    scheduler, timesteps = schedule
    factor = model.vae_scale_factor
    size = (sampling_pass.height // factor, sampling_pass.width // factor)
    if hires.is_latent(sampling_pass.upscaler):
        latents = hires.upscale_latents(latents, sampling_pass, factor)
    else:  # an image upscaler: decode, upscale, encode (A1111's hires fix with a non-latent upscaler)
        stop = _stop_check(run.ctx)
        images = hires.upscale_images(
            vae.pixels_to_pil(vae.decode(before, latents, stop)),
            sampling_pass,
            factor,
            run.settings.upscalers,
        )
        if last and not len(timesteps):
            work.latents, work.images = latents, images
            return None
        latents = vae.encode(model, vae.pil_to_pixels(images), stop)
    rng = _rng(run, work.args, (model.latent_channels, *size))
    noise = rng.first().to(latents.device, latents.dtype)
    if len(timesteps):
        latents = scheduler.add_noise(latents, noise, timesteps[:1])
    image_cond = blank_inpainting_cond(model, latents) if model.is_inpainting else None
    return _PassStart(scheduler, PreparedBatch(latents, timesteps, image_cond), rng.generators, noise)


def _rng(run: JobRun, args: BatchArgs, shape: tuple[int, int, int]) -> ImageRNG:
    request = run.request
    return ImageRNG(
        args.seeds,
        shape,
        subseeds=args.subseeds,
        subseed_strength=request.subseed_strength,
        seed_resize_from_h=request.seed_resize_from_h,
        seed_resize_from_w=request.seed_resize_from_w,
        vae_scale_factor=run.model.vae_scale_factor,
        eta_noise_seed_delta=run.settings.eta_noise_seed_delta,
    )


# -- stage 3: decode -----------------------------------------------------------------------------------------
def decode(run: JobRun, work: BatchWork) -> list[Image.Image] | None:
    """Decoded, finished (inpainting overlay) and postprocess_batch'ed images; None when interrupted."""
    run.state.batch_number = work.number
    if work.images is not None:
        images = run.plan.finish(list(work.images), work.indexes)
    else:
        try:
            pixels = vae.decode(run.model, work.latents, _stop_check(run.ctx))
        except StepInterrupted:
            work.stopped = INTERRUPT
            return None
        images = run.plan.finish(vae.pixels_to_pil(pixels), work.indexes)
    if run.hooks.postprocess_batch is not None:
        batch_args = PostprocessBatchArgs(run.state, work.number, images)
        run.hooks.postprocess_batch(batch_args)
        images = batch_args.images
    return images


def _stop_check(ctx: JobContext) -> Callable[[], bool]:
    """The decode stops for an interrupt that comes during it; after an earlier one it still runs, so an
    interrupted batch gets its partial image, as in A1111."""
    if ctx.interrupted:
        return lambda: False
    return lambda: ctx.interrupted
