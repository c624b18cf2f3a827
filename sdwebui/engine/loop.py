"""The denoising loop over a diffusers scheduler: guidance, inpainting blend, progress, interrupt and skip."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sdwebui.engine import samplers
from sdwebui.engine.cond_schedule import BatchConditioning
from sdwebui.engine.context import JobContext, StepInfo
from sdwebui.engine.denoiser import CFGDenoiser, StepInterrupted, interrupt_checks, model_blocks
from sdwebui.engine.hooks import EngineHooks, MaskBlendArgs, SamplerStepArgs


@dataclass
class MaskBlend:
    """Inpainting: after every step, latents outside the mask are reset to the original noised to that level."""

    mask: torch.Tensor  # [B, 1, h, w], 1 = repaint
    init_latents: torch.Tensor  # clean latents of the original image
    noise: torch.Tensor  # the job's initial noise, so the kept region follows one noise path

    def apply(
        self, scheduler: Any, latents: torch.Tensor, next_timestep: torch.Tensor | None
    ) -> torch.Tensor:
        if next_timestep is None:
            kept = self.init_latents
        else:
            kept = scheduler.add_noise(self.init_latents, self.noise, next_timestep.reshape(1))
        return kept * (1 - self.mask) + latents * self.mask


@dataclass
class SamplingJob:
    """Everything one batch's loop needs; built by the txt2img/img2img preparation."""

    denoiser: CFGDenoiser
    scheduler: Any  # a fresh diffusers scheduler with timesteps set
    timesteps: torch.Tensor  # the timesteps to run (all of them, or the tail for img2img)
    latents: torch.Tensor  # starting latents, already scaled for the scheduler
    conditioning: BatchConditioning
    generators: list[torch.Generator]  # per-image CPU generators for ancestral/SDE noise
    eta: float | None = None
    image_cond: torch.Tensor | None = None  # inpainting-model channels (mask + masked-image latents)
    mask_blend: MaskBlend | None = None
    # interrupt checks between the U-Net's blocks (hooks); off for a compiled U-Net, whose graph new hooks
    # would recompile every pass: it is checked before each step only
    block_checks: bool = True
    # the steps of `timesteps` this loop runs (a refiner switch splits a pass in two); None: all of them
    steps: range | None = None


@dataclass(frozen=True)
class Progress:
    """Where a pass's steps lie in its batch's progress: the batch's steps are those of all its passes."""

    job_no: int  # batch index
    job_count: int  # n_iter
    offset: int = 0  # steps of the earlier passes
    total: int = 0  # steps of all passes; 0 = this pass's own
    pass_index: int = 0
    pass_count: int = 1


@dataclass
class LoopOutcome:
    latents: torch.Tensor  # final latents, or the last denoised estimate when stopped early
    steps_done: int
    stopped: str | None = None  # "interrupt" | "skip" | None
    estimate: torch.Tensor | None = None  # a loop that ran only part of its timesteps: the last denoised one


def run_loop(
    job: SamplingJob,
    ctx: JobContext,
    hooks: EngineHooks,
    progress: Progress,
    preview_every: int = 0,
) -> LoopOutcome:
    """Run the scheduler over `job.timesteps`; checks interrupt/skip before each step and between the
    U-Net's blocks (a step of a big image on the CPU can take minutes)."""
    scheduler = job.scheduler
    generators = job.generators if len(job.generators) > 1 else job.generators[0]
    step_kwargs = samplers.step_kwargs(scheduler, job.eta, generators)
    latents = job.latents
    total = len(job.timesteps)
    steps = job.steps if job.steps is not None else range(total)
    last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    unet_blocks = model_blocks(getattr(job.denoiser.adapter.model, "unet", None)) if job.block_checks else []
    with interrupt_checks(unet_blocks, lambda: ctx.interrupted or ctx.skipped):
        for i in steps:
            t = job.timesteps[i]
            if ctx.interrupted or ctx.skipped:
                return _stopped(job, ctx, last, latents, i)
            x_in = scheduler.scale_model_input(latents, t)
            try:
                output = job.denoiser(x_in, t, job.conditioning.at_step(i), job.image_cond, i, total)
            except StepInterrupted:
                return _stopped(job, ctx, last, latents, i)
            if hooks.sampler_step is not None:
                latents, x_in, output = _sampler_step(job, hooks, latents, x_in, t, output, i, total)
            latents = scheduler.step(output, t, latents, **step_kwargs, return_dict=False)[0]
            if job.mask_blend is not None:
                latents = _blend(job, latents, i, hooks)
            last = (x_in, t, output)
            want_preview = preview_every > 0 and ((i + 1) % preview_every == 0 or i + 1 == total)
            preview = _denoised(job, *last) if want_preview else None
            ctx.report(
                StepInfo(
                    progress.job_no,
                    progress.job_count,
                    progress.offset + i + 1,
                    progress.total or total,
                    preview,
                    progress.pass_index,
                    progress.pass_count,
                )
            )
    partial = steps.stop < total and last is not None
    return LoopOutcome(latents, steps.stop, estimate=_denoised(job, *last) if partial else None)


def _stopped(
    job: SamplingJob, ctx: JobContext, last: tuple | None, latents: torch.Tensor, i: int
) -> LoopOutcome:
    # an interrupted job decodes the last denoised estimate, as A1111 does
    stopped = "interrupt" if ctx.interrupted else "skip"
    return LoopOutcome(_denoised(job, *last) if last is not None else latents, i, stopped)


def _denoised(job: SamplingJob, x_in: torch.Tensor, t: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    x0 = job.denoiser.adapter.to_x0(x_in, t, output)
    if job.mask_blend is not None:
        mask = job.mask_blend.mask
        x0 = job.mask_blend.init_latents * (1 - mask) + x0 * mask
    return x0


def _sampler_step(
    job: SamplingJob, hooks: EngineHooks, latents: torch.Tensor, x_in: torch.Tensor, t: torch.Tensor,
    output: torch.Tensor, i: int, total: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The per-step hook in k-diffusion terms: x = x_in / sqrt(alpha) (x0 + sigma * eps, whatever scaling
    the scheduler keeps its latents in), denoised = the x0 estimate. Returns (latents, x_in, output) with
    what the hook changed."""
    adapter = job.denoiser.adapter
    root_alpha = adapter.input_scale_root_alpha(t)
    input_scale = float(job.scheduler.scale_model_input(torch.ones(1), t))  # latents -> x_in (a scalar)
    x = x_in.float() / root_alpha
    denoised = adapter.to_x0(x_in, t, output)
    seen_x, seen_denoised = x.clone(), denoised.clone()
    args = SamplerStepArgs(x, denoised, adapter.sigma(t), i, total)
    hooks.sampler_step(args)
    if args.x is not x or not torch.equal(x, seen_x):
        x_in = (args.x * root_alpha).to(latents.dtype)
        latents = x_in / input_scale
    if args.denoised is not denoised or not torch.equal(denoised, seen_denoised):
        output = adapter.from_x0(x_in, t, args.denoised).to(output.dtype)
    return latents, x_in, output


def _blend(job: SamplingJob, latents: torch.Tensor, i: int, hooks: EngineHooks) -> torch.Tensor:
    blend = job.mask_blend
    next_t = job.timesteps[i + 1] if i + 1 < len(job.timesteps) else None
    blended = blend.apply(job.scheduler, latents, next_t)
    if hooks.mask_blend is not None:
        init = (
            blended
            if next_t is None
            else job.scheduler.add_noise(blend.init_latents, blend.noise, next_t.reshape(1))
        )
        args = MaskBlendArgs(latents, blend.mask, init, blended, i)
        hooks.mask_blend(args)
        blended = args.blended_latent
    return blended
