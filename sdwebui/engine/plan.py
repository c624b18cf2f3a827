"""How a batch starts and ends: txt2img starts from pure noise; img2img (img2img.py) from an init image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from sdwebui.engine import samplers, vae
from sdwebui.engine.loop import MaskBlend
from sdwebui.engine.requests import Txt2ImgRequest
from sdwebui.models.model import LoadedModel


@dataclass
class PreparedBatch:
    latents: torch.Tensor  # starting latents, scaled for the scheduler
    timesteps: torch.Tensor  # the timesteps to run; empty = nothing to sample (img2img strength 0)
    image_cond: torch.Tensor | None = None
    mask_blend: MaskBlend | None = None


class Txt2ImgPlan:
    """txt2img: the full schedule from noise * init_noise_sigma."""

    output_kind = "txt2img-images"

    def __init__(self, model: LoadedModel, request: Txt2ImgRequest):
        self.model = model
        self.request = request

    def latent_shape(self) -> tuple[int, int, int]:
        factor = self.model.vae_scale_factor
        return (self.model.latent_channels, self.request.height // factor, self.request.width // factor)

    def prepare(
        self, scheduler: Any, noise: torch.Tensor, image_indexes: list[int], should_stop: Any = None
    ) -> PreparedBatch:
        samplers.set_timesteps(scheduler, self.request.steps, device=self.model.device)
        latents = noise.to(self.model.device) * scheduler.init_noise_sigma
        image_cond = None
        if self.model.is_inpainting:
            image_cond = blank_inpainting_cond(self.model, latents)
        return PreparedBatch(latents, scheduler.timesteps, image_cond)

    def finish(self, images: list[Image.Image], image_indexes: list[int]) -> list[Image.Image]:
        return images

    def infotext_params(self) -> dict[str, Any]:
        return {}


def blank_inpainting_cond(model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
    """txt2img on an inpainting model: mask everything, masked image = mid-grey (as A1111 does)."""
    batch, _, h, w = latents.shape
    factor = model.vae_scale_factor
    grey = torch.zeros(1, 3, h * factor, w * factor)
    masked_latents = vae.encode(model, grey).to(latents.device, latents.dtype)
    mask = torch.ones(1, 1, h, w, device=latents.device, dtype=latents.dtype)
    return torch.cat([mask, masked_latents], dim=1).expand(batch, -1, -1, -1)
