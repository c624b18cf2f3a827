"""Extension hooks of the engine: a fixed list, called in the documented order with typed argument objects.

Order for one job (A1111 equivalents in brackets; the extension facade maps scripts and callbacks on these):
1. process(JobState)                      once, after seeds and prompts are resolved   [Script.process]
   then for each batch (n_iter):
2. process_batch(BatchArgs)               before conditioning; may edit prompts/seeds [Script.process_batch]
   conditioning(ConditioningArgs)         per pass, its prompts' conditioning; may supply it instead of the
                                          engine [prompt_parser.get_(multicond_)learned_conditioning replaced]
   extra_noise(ExtraNoiseArgs)            img2img with img2img_extra_noise > 0; may replace the noise [on_extra_noise]
3. before_sampling(BeforeSamplingArgs)    after noise/init latents exist  [Script.process_before_every_sampling]
   before_later_pass(BeforeSamplingArgs)  before each later pass (hires), its latents noised [Script.before_hr +
                                          process_before_every_sampling]
   for each U-Net evaluation:
4. cfg_denoiser(CFGDenoiserArgs)          before the U-Net call; may replace x/conds  [on_cfg_denoiser]
5. cfg_denoised(CFGDenoisedArgs)          after the U-Net call, before guidance        [on_cfg_denoised]
   cfg_combine(CFGCombineArgs)            combines cond/uncond in x0 space instead of the engine
                                          [CFGDenoiser.combine_denoised, when an extension overrides it]
6. cfg_after_cfg(CFGAfterArgs)            after guidance; may replace the output      [on_cfg_after_cfg]
   sampler_step(SamplerStepArgs)          every step, before the scheduler's update; may change x and
                                          denoised                                [KDiffusionSampler.callback_state]
7. mask_blend(MaskBlendArgs)              inpainting only, after each step's blend    [on_mask_blend]
   after decoding:
8. postprocess_batch(PostprocessBatchArgs)  may replace the list of images   [Script.postprocess_batch_list]
9. postprocess_image(PostprocessImageArgs)  per image; may replace the image  [Script.postprocess_image]
10. before_image_saved(ImageSaveArgs)      may change image/infotext before saving [on_before_image_saved]
11. image_saved(ImageSaveArgs)             after the file is written               [on_image_saved]
12. postprocess(PostprocessArgs)           once, with the result                    [Script.postprocess]

With `EngineSettings.stage_order == "job"` (memory modes) process_batch runs for every batch before the
first before_sampling, and postprocess_batch for every batch after the last sampling (stages.py).
before_stage(StageArgs) comes before each stage: once per batch and stage, or once per stage by job.
Inside each U-Net call, `unet_addons` (addons.py) may add residuals or wrap attention processors.

Every argument object is mutable on purpose: a hook changes a field and the engine reads it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from sdwebui.engine.addons import UNetAddon
from sdwebui.engine.cond_schedule import BatchConditioning
from sdwebui.engine.conditioning import PromptEncoder
from sdwebui.engine.requests import GenerationResult, Img2ImgRequest, Txt2ImgRequest


@dataclass
class JobState:
    """Per-job plan that hooks may rewrite (A1111's `p.all_prompts`, `p.all_seeds`, ...).

    Lists have one entry per image of the job (n_iter * batch_size). `extra_generation_params` end up in
    every image's infotext, after the engine's own keys and before `Version`.
    """

    request: Txt2ImgRequest | Img2ImgRequest
    all_prompts: list[str]
    all_negative_prompts: list[str]
    all_seeds: list[int]
    all_subseeds: list[int]
    extra_generation_params: dict[str, Any] = field(default_factory=dict)
    batch_number: int = 0  # index of the batch being processed (A1111 p.iteration)
    user_data: dict[str, Any] = field(default_factory=dict)  # free space for extensions

    @property
    def batch_size(self) -> int:
        return self.request.batch_size

    def batch_slice(self, batch_number: int) -> slice:
        start = batch_number * self.request.batch_size
        return slice(start, start + self.request.batch_size)


@dataclass
class BatchArgs:
    state: JobState
    batch_number: int
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    subseeds: list[int]
    # the hooks the engine runs the job with: process_batch may install or clear the per-step hooks
    # (sampler_step, cfg_combine) here for the batches that follow, so none costs a step when unused
    hooks: EngineHooks | None = None


@dataclass
class ConditioningArgs:
    """A pass's prompts of one batch, about to be encoded. The hook may set `conditioning` (built with
    `BatchConditioning.from_learned` or `from_prompts`, on `encoder`: the pass's model's text encoders);
    left None, the engine encodes the prompts itself."""

    prompts: list[str]  # after process_batch, without their extra-network tags
    negative_prompts: list[str]
    steps: int  # the pass's steps: schedules count them
    width: int  # the pass's image size
    height: int
    pass_index: int  # 0: the request's own pass; 1: the hires pass
    encoder: PromptEncoder
    conditioning: BatchConditioning | None = None


@dataclass
class BeforeSamplingArgs:
    state: JobState
    batch_number: int
    latents: torch.Tensor  # starting latents (noise, or noised init image for img2img); replaceable
    noise: torch.Tensor
    pass_index: int = 0  # 0: the request's own pass; 1: the hires pass (A1111's before_hr comes first)


@dataclass
class ExtraNoiseArgs:
    """img2img's extra noise (A1111 ExtraNoiseParams): `xi += noise * img2img_extra_noise` after the hook."""

    noise: torch.Tensor  # the seed's noise (times initial_noise_multiplier); replaceable
    x: torch.Tensor  # latents of the init image
    xi: torch.Tensor  # those latents noised to the first timestep


@dataclass
class CFGDenoiserArgs:
    x: torch.Tensor  # latents fed to the U-Net (cond/uncond batched), after scheduler input scaling
    image_cond: torch.Tensor | None  # extra channels of inpainting models, batched like x
    timestep: torch.Tensor
    sampling_step: int  # 0-based
    total_sampling_steps: int
    text_cond: torch.Tensor
    text_uncond: torch.Tensor | None  # None when cfg_scale == 1


@dataclass
class CFGDenoisedArgs:
    x: torch.Tensor
    model_output: torch.Tensor  # raw U-Net output for the batched x (eps or v)
    sampling_step: int
    total_sampling_steps: int


@dataclass
class CFGAfterArgs:
    x: torch.Tensor  # guided model output for the batch; replaceable
    sampling_step: int
    total_sampling_steps: int


@dataclass
class CFGCombineArgs:
    """Guidance over the denoised (x0) estimates of the rows; the hook sets `denoised` ([B, ...]) or leaves it
    None (the engine's own guidance then runs). With the uncond rows skipped (cfg 1, s_min_uncond) `uncond`
    holds each image's first cond row and `cfg_scale` is 1, as A1111 does."""

    cond: torch.Tensor  # x0 of each cond row ([R, ...]; row r belongs to image cond_owner[r])
    uncond: torch.Tensor  # x0 of each image's uncond row ([B, ...])
    cond_owner: list[int]
    cond_weight: list[float]
    cfg_scale: float
    text_uncond: torch.Tensor | None  # the uncond text embeddings ([B, tokens, dim]); None when skipped
    sampling_step: int
    total_sampling_steps: int
    denoised: torch.Tensor | None = None


@dataclass
class SamplerStepArgs:
    """One step's state before the scheduler's update, in k-diffusion terms (x = x0 + sigma * eps).

    A hook may edit `x` / `denoised` in place or replace them: the step then runs from the new x, and from
    the new denoised estimate (its prediction re-derived from it) when that changed."""

    x: torch.Tensor
    denoised: torch.Tensor
    sigma: float
    sampling_step: int  # 0-based
    total_sampling_steps: int


@dataclass
class MaskBlendArgs:
    current_latent: torch.Tensor  # scheduler output before blending
    mask: torch.Tensor  # 1 = repaint (A1111 nmask)
    init_latent: torch.Tensor  # original latents noised to the current level
    blended_latent: torch.Tensor  # replaceable result
    sampling_step: int


@dataclass
class PostprocessBatchArgs:
    state: JobState
    batch_number: int
    images: list[Image.Image]  # replaceable list


@dataclass
class PostprocessImageArgs:
    state: JobState
    index: int  # index of the image within the job
    image: Image.Image  # replaceable


@dataclass
class ImageSaveArgs:
    state: JobState
    index: int
    image: Image.Image
    infotext: str
    path: str | None = None  # set for image_saved


@dataclass
class StageArgs:
    """A stage is about to run (stages.py): where a memory mode moves components between devices."""

    state: JobState
    stage: str  # "conditioning" (text encoders) | "sampling" (U-Net; img2img's VAE encode) | "decode" (VAE)
    batch_numbers: list[int]  # the batches it runs over: one by batch, all of them by job


@dataclass
class PostprocessArgs:
    state: JobState
    result: GenerationResult


@dataclass
class EngineHooks:
    """Optional callables; each receives its argument object and returns nothing."""

    process: Callable[[JobState], None] | None = None
    process_batch: Callable[[BatchArgs], None] | None = None
    conditioning: Callable[[ConditioningArgs], None] | None = None
    before_stage: Callable[[StageArgs], None] | None = None
    extra_noise: Callable[[ExtraNoiseArgs], None] | None = None
    before_sampling: Callable[[BeforeSamplingArgs], None] | None = None
    before_later_pass: Callable[[BeforeSamplingArgs], None] | None = None
    cfg_denoiser: Callable[[CFGDenoiserArgs], None] | None = None
    cfg_denoised: Callable[[CFGDenoisedArgs], None] | None = None
    cfg_combine: Callable[[CFGCombineArgs], None] | None = None
    cfg_after_cfg: Callable[[CFGAfterArgs], None] | None = None
    sampler_step: Callable[[SamplerStepArgs], None] | None = None
    mask_blend: Callable[[MaskBlendArgs], None] | None = None
    postprocess_batch: Callable[[PostprocessBatchArgs], None] | None = None
    postprocess_image: Callable[[PostprocessImageArgs], None] | None = None
    before_image_saved: Callable[[ImageSaveArgs], None] | None = None
    image_saved: Callable[[ImageSaveArgs], None] | None = None
    postprocess: Callable[[PostprocessArgs], None] | None = None
    # inside every U-Net call (ControlNet-style residuals, attention processors): sdwebui.engine.addons
    unet_addons: list[UNetAddon] = field(default_factory=list)
    # prompt tag kinds (<kind:...>) an extension registered: removed from the encoded text, not refused
    extra_network_kinds: frozenset[str] = frozenset()
