"""A plain diffusers pipeline over the default model's components, built without any hub access.

Used by the trainer's progress evaluation and, until the engine's txt2img is available, by the
quality benchmark and the meaning tests.
"""

from __future__ import annotations

import diffusers
import torch
from PIL import Image

from sdwebui.models.default_model import architecture
from sdwebui.models.tokenizer import build_clip_tokenizer


def build_pipeline(
    unet, vae, text_encoder, scheduler_config: dict | None = None
) -> diffusers.StableDiffusionPipeline:
    scheduler = diffusers.EulerDiscreteScheduler.from_config(
        scheduler_config or architecture.SCHEDULER_CONFIG
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(
    pipe: diffusers.StableDiffusionPipeline,
    prompts: list[str],
    seeds: list[int],
    negative_prompts: list[str] | None = None,
    cfg_scale: float = 7.0,
    steps: int = 20,
    size: int = architecture.NATIVE_RESOLUTION,
) -> list[Image.Image]:
    """One image per (prompt, seed), noise drawn on the CPU from each seed (as the web UI does)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"prompts ({len(prompts)}) and seeds ({len(seeds)}) must have the same length")
    channels = pipe.unet.config.in_channels
    latent = size // pipe.vae_scale_factor
    noise = torch.stack(
        [torch.randn((channels, latent, latent), generator=torch.Generator().manual_seed(s)) for s in seeds]
    )
    return pipe(
        prompt=prompts,
        negative_prompt=negative_prompts,
        latents=noise.to(pipe.device, pipe.unet.dtype),
        guidance_scale=cfg_scale,
        num_inference_steps=steps,
        height=size,
        width=size,
    ).images
