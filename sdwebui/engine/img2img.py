"""img2img and inpainting: init images, denoising strength, masks, masked content, only-masked crops.

Semantics follow A1111 (issue 4): `int(strength * steps)` last steps of a `steps` schedule (or exactly `steps`
with img2img_fix_steps); strength 0 returns the init image after a VAE round trip. With a mask, the
unmasked latents are reset to the noised original after every step (loop.MaskBlend) and the decoded result
is composited over the original with the blurred mask, so pixels outside it are exactly the original's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdwebui.engine import masking, samplers, vae
from sdwebui.engine.hooks import ExtraNoiseArgs
from sdwebui.engine.loop import MaskBlend
from sdwebui.engine.passes import img2img_steps
from sdwebui.engine.plan import PreparedBatch
from sdwebui.engine.requests import INPAINT_AREAS, MASK_MODES, MASKED_CONTENT, Img2ImgRequest, RequestError
from sdwebui.engine.settings import EngineSettings
from sdwebui.models.model import LoadedModel

StopCheck = Callable[[], bool] | None  # True once the job is interrupted (the VAE encode then stops early)

FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = range(4)  # request.inpainting_fill


@dataclass
class _Inpainting:
    latent_mask: torch.Tensor  # [1, 1, h, w], 1 = repaint
    pixel_mask: torch.Tensor  # [1, 1, H, W] rounded, for inpainting-model conditioning
    overlays: list[Image.Image]  # per init image: original with alpha = inverted overlay mask
    paste_box: masking.Box | None  # only masked: where the W x H result goes back


class Img2ImgPlan:
    output_kind = "img2img-images"

    def __init__(
        self,
        model: LoadedModel,
        request: Img2ImgRequest,
        settings: EngineSettings,
        extra_noise_hook: Callable[[ExtraNoiseArgs], None] | None = None,
    ):
        self.model = model
        self.request = request
        self.fix_steps = request.img2img_fix_steps or settings.img2img_fix_steps
        self.mask_weight = _mask_weight(request, settings)
        self.extra_noise = settings.img2img_extra_noise
        if not math.isfinite(self.extra_noise) or self.extra_noise < 0:
            raise RequestError("img2img_extra_noise", f"must be a number >= 0, got {self.extra_noise!r}")
        self._extra_noise_hook = extra_noise_hook
        count = len(request.init_images)
        if count not in (1, request.batch_size):
            raise RequestError(
                "init_images", f"give 1 or batch_size ({request.batch_size}) images, got {count}"
            )
        originals = _same_size([_as_rgb(image, i) for i, image in enumerate(request.init_images)])
        if request.resize_mode == masking.LATENT_UPSCALE:
            factor = model.vae_scale_factor  # the VAE needs sizes divisible by its scale factor
            w, h = (max(v // factor * factor, factor) for v in originals[0].size)
            originals = [image.resize((w, h), Image.Resampling.LANCZOS) for image in originals]
        self.inpainting: _Inpainting | None = None
        self.images, self.kept_images = self._prepare_images(originals)
        self._latents: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None

    # -- pixels ---------------------------------------------------------------------------------------------
    def _prepare_images(self, originals: list[Image.Image]) -> tuple[list[Image.Image], list[Image.Image]]:
        """(images to encode, images whose latents are kept outside the mask) at the processing size."""
        req = self.request
        width, height = req.width, req.height
        mask = self._user_mask(originals[0].size)
        if mask is None:
            if req.resize_mode == masking.LATENT_UPSCALE:
                return originals, originals  # resized in latent space
            resized = [masking.resize_image(req.resize_mode, image, width, height) for image in originals]
            return resized, resized

        if req.inpaint_full_res:
            box = masking.crop_region(mask, req.inpaint_full_res_padding)
            box = masking.expand_to_aspect(box, width, height, *mask.size)
            overlay_mask = mask
            work_mask = masking.resize_image(masking.JUST_RESIZE, mask.crop(box), width, height)
            bases = [image.crop(box).resize((width, height), Image.Resampling.LANCZOS) for image in originals]
            overlay_bases = originals
        else:
            box = None
            mode = req.resize_mode
            work_mask = masking.resize_image(mode, mask, width, height)
            # A1111 doubles the blurred mask for the overlay: the generated part reaches further into the blur
            overlay_mask = Image.fromarray(
                np.clip(np.asarray(work_mask, np.float32) * 2, 0, 255).astype(np.uint8)
            )
            bases = [masking.resize_image(mode, image, width, height) for image in originals]
            overlay_bases = bases
        factor = self.model.vae_scale_factor
        latent = masking.latent_mask(work_mask, width // factor, height // factor)
        pixel = np.around(np.asarray(work_mask, np.float32) / 255.0)
        self.inpainting = _Inpainting(
            latent_mask=torch.from_numpy(latent)[None, None],
            pixel_mask=torch.from_numpy(pixel)[None, None],
            overlays=[masking.overlay(base, overlay_mask) for base in overlay_bases],
            paste_box=box,
        )
        if req.inpainting_fill == FILL:
            return [masking.fill(base, work_mask) for base in bases], bases
        return bases, bases

    def _user_mask(self, size: tuple[int, int]) -> Image.Image | None:
        """The blurred, possibly inverted mask at the init image's size; None when absent or empty."""
        req = self.request
        if req.mask is None:
            return None
        if not isinstance(req.mask, Image.Image):
            raise RequestError("mask", f"expected an image, got {type(req.mask).__name__}")
        mask = masking.to_mask(req.mask, size)
        if req.inpainting_mask_invert:
            mask = Image.eval(mask, lambda v: 255 - v)
        if masking.is_empty(mask):
            return None  # nothing to repaint: plain img2img, as A1111
        return masking.blur_mask(mask, req.mask_blur_x, req.mask_blur_y)

    # -- latents --------------------------------------------------------------------------------------------
    def latent_shape(self) -> tuple[int, int, int]:
        factor = self.model.vae_scale_factor
        return (self.model.latent_channels, self.request.height // factor, self.request.width // factor)

    def _encoded(self, should_stop: StopCheck) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(latents to start from, latents kept outside the mask, inpainting-model conditioning), cached."""
        if self._latents is None:
            latents = self._encode(self.images, should_stop)
            kept = latents if self.kept_images is self.images else self._encode(self.kept_images, should_stop)
            image_cond = self._image_cond(should_stop) if self.model.is_inpainting else None
            self._latents = (latents, kept, image_cond)
        return self._latents

    def _encode(self, images: list[Image.Image], should_stop: StopCheck) -> torch.Tensor:
        latents = vae.encode(self.model, vae.pil_to_pixels(images), should_stop)
        if self.request.resize_mode == masking.LATENT_UPSCALE and self.inpainting is None:
            size = self.latent_shape()[1:]
            latents = torch.nn.functional.interpolate(latents, size=size, mode="bilinear", antialias=True)
        return latents

    def _image_cond(self, should_stop: StopCheck) -> torch.Tensor:
        """Mask + masked-image latents for 9-channel U-Nets; `mask_weight` < 1 keeps some of the masked area."""
        pixels = vae.pil_to_pixels(self.images)
        if self.inpainting is None:
            mask = torch.ones(1, 1, *pixels.shape[2:])
        else:
            mask = self.inpainting.pixel_mask
        masked = torch.lerp(pixels, pixels * (1 - mask), self.mask_weight)
        masked_latents = vae.encode(self.model, masked, should_stop)
        latent_mask = torch.nn.functional.interpolate(mask, size=masked_latents.shape[2:])
        return torch.cat([latent_mask.expand(masked_latents.shape[0], -1, -1, -1), masked_latents], dim=1)

    def prepare(
        self, scheduler: Any, noise: torch.Tensor, image_indexes: list[int], should_stop: StopCheck = None
    ) -> PreparedBatch:
        """`should_stop`: the VAE encode of the init images stops early for an interrupt (StepInterrupted)."""
        req, device = self.request, self.model.device
        batch = noise.shape[0]
        latents, kept, image_cond = (_batch(t, batch, device) for t in self._encoded(should_stop))
        noise = noise.to(device)
        total, run = img2img_steps(req.steps, req.denoising_strength, self.fix_steps)
        mask_blend = None
        if self.inpainting is not None:
            mask = self.inpainting.latent_mask.to(device)
            if req.inpainting_fill == LATENT_NOISE:
                latents = latents * (1 - mask) + noise * mask
            elif req.inpainting_fill == LATENT_NOTHING:
                latents = latents * (1 - mask)
            mask_blend = MaskBlend(mask, kept, noise)

        samplers.set_timesteps(scheduler, total, device=device)
        if run == 0:
            if mask_blend is not None:
                latents = kept * (1 - mask_blend.mask) + latents * mask_blend.mask
            return PreparedBatch(latents, scheduler.timesteps[:0])
        start = (total - run) * scheduler.order
        timesteps = scheduler.timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        start_t = timesteps[:1]
        scaled_noise = noise * req.initial_noise_multiplier
        noised = scheduler.add_noise(latents, scaled_noise, start_t)
        if mask_blend is not None:
            outside = scheduler.add_noise(kept, noise, start_t)
            noised = outside * (1 - mask_blend.mask) + noised * mask_blend.mask
        if self.extra_noise > 0:
            noised = self._add_extra_noise(scheduler, start_t, latents, scaled_noise, noised)
        return PreparedBatch(noised, timesteps, image_cond, mask_blend)

    def _add_extra_noise(
        self, scheduler: Any, start_t, x: torch.Tensor, noise: torch.Tensor, xi: torch.Tensor
    ):
        """A1111's img2img_extra_noise: `xi += noise * extra` in k-diffusion's (sigma) space, after
        on_extra_noise may replace the noise; a variance-preserving scheduler's latents are that times c_x."""
        args = ExtraNoiseArgs(noise, x, xi)
        if self._extra_noise_hook is not None:
            self._extra_noise_hook(args)
        if args.noise.shape != xi.shape:
            raise ValueError(
                f"extra_noise: noise of shape {tuple(args.noise.shape)} for latents {tuple(xi.shape)}"
            )
        one = torch.ones_like(xi[:1, :1, :1, :1])
        c_x = scheduler.add_noise(one, torch.zeros_like(one), start_t)  # 1 for sigma schedulers, sqrt(a) else
        return xi + c_x * args.noise.to(xi.device, xi.dtype) * self.extra_noise

    def finish(self, images: list[Image.Image], image_indexes: list[int]) -> list[Image.Image]:
        if self.inpainting is None:
            return images
        overlays = self.inpainting.overlays
        return [
            masking.apply_overlay(image, overlays[min(i, len(overlays) - 1)], self.inpainting.paste_box)
            for i, image in enumerate(images)
        ]

    def infotext_params(self) -> dict[str, Any]:
        req = self.request
        params: dict[str, Any] = {"Denoising strength": req.denoising_strength}
        if req.initial_noise_multiplier != 1.0:
            params["Noise multiplier"] = req.initial_noise_multiplier
        if self.extra_noise > 0:
            params["Extra noise"] = self.extra_noise
        if self.model.is_inpainting:
            params["Conditional mask weight"] = self.mask_weight
        if req.mask is not None:
            params.update(
                {
                    "Mask blur": req.mask_blur,
                    "Inpaint area": INPAINT_AREAS[int(req.inpaint_full_res)],
                    "Masked area padding": req.inpaint_full_res_padding,
                    "Masked content": MASKED_CONTENT[req.inpainting_fill],
                    "Mask mode": MASK_MODES[req.inpainting_mask_invert],
                }
            )
        return params


def _batch(tensor: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
    if tensor is None:
        return None
    tensor = tensor.to(device)
    return tensor.expand(batch, -1, -1, -1).clone() if tensor.shape[0] == 1 else tensor


def _as_rgb(image: Any, index: int) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise RequestError(f"init_images[{index}]", f"expected an image, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # transparent areas become white, as A1111's img2img_background_color default
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _same_size(images: list[Image.Image]) -> list[Image.Image]:
    """Batch init images share the first one's size (and its mask)."""
    size = images[0].size
    return [image if image.size == size else image.resize(size, Image.Resampling.LANCZOS) for image in images]


def _mask_weight(request: Img2ImgRequest, settings: EngineSettings) -> float:
    """Per-request override first (A1111 override_settings), then a non-default request value, then settings."""
    if "inpainting_mask_weight" in request.override_settings:
        return float(request.override_settings["inpainting_mask_weight"])
    if request.inpainting_mask_weight != 1.0:
        return request.inpainting_mask_weight
    return settings.inpainting_mask_weight
