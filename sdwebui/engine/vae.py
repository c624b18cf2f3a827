"""VAE encode/decode between PIL images and scaled latents, with the NaN check A1111 users know."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from sdwebui.engine.denoiser import StepInterrupted, interrupt_checks, model_blocks
from sdwebui.models.model import LoadedModel


class NaNLatentsError(RuntimeError):
    """The U-Net or VAE produced NaN or inf values (in half precision usually an overflow)."""


def check_finite(tensor: torch.Tensor, where: str, dtype: torch.dtype) -> None:
    """Raise NaNLatentsError when `tensor` has NaN/inf; `dtype` is the one `where` ran in, for a true hint."""
    if bool(torch.isfinite(tensor).all()):
        return
    if dtype not in (torch.float16, torch.bfloat16):
        hint = f"it ran in {_dtype_name(dtype)}, so this is not a half-precision overflow"
    elif where == "VAE":
        hint = "the VAE overflowed in half precision; restart with --no-half-vae"
    else:
        hint = "the U-Net overflowed in half precision; try --no-half (or --no-half-vae if it is the VAE)"
    raise NaNLatentsError(f"A tensor with NaN or inf values was produced in the {where}: {hint}.")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _scale(model: LoadedModel) -> tuple[float, float]:
    config = model.vae.config
    return config.scaling_factor, getattr(config, "shift_factor", None) or 0.0


@torch.no_grad()
def encode(
    model: LoadedModel, pixels: torch.Tensor, should_stop: Callable[[], bool] | None = None
) -> torch.Tensor:
    """Pixels in [-1, 1] [B, 3, H, W] -> scaled latents (the distribution's mean: deterministic).

    With `should_stop`, checks between the encoder's blocks: StepInterrupted stops a long encode early."""
    scaling, shift = _scale(model)
    with interrupt_checks(model_blocks(getattr(model.vae, "encoder", None)), should_stop or _never):
        dist = model.vae.encode(pixels.to(model.device, model.vae_dtype)).latent_dist
    return ((dist.mean - shift) * scaling).to(torch.float32)


def _never() -> bool:
    return False


@torch.no_grad()
def decode(
    model: LoadedModel, latents: torch.Tensor, should_stop: Callable[[], bool] | None = None
) -> torch.Tensor:
    """Scaled latents -> pixels in [0, 1] as float32 [B, 3, H, W]; NaNs raise NaNLatentsError.

    With `should_stop`, one image at a time with checks between the decoder's blocks: StepInterrupted
    (sdwebui.engine.denoiser) stops a long decode early."""
    check_finite(latents, "U-Net", model.dtype)
    scaling, shift = _scale(model)
    scaled = latents.to(model.device, model.vae_dtype) / scaling + shift
    if should_stop is None:
        pixels = model.vae.decode(scaled, return_dict=False)[0]
    else:
        with interrupt_checks(model_blocks(getattr(model.vae, "decoder", None)), should_stop):
            slices = []
            for row in scaled.split(1):  # per image, as diffusers' VAE slicing: a check between images
                if should_stop():
                    raise StepInterrupted
                slices.append(model.vae.decode(row, return_dict=False)[0])
        pixels = torch.cat(slices)
    check_finite(pixels, "VAE", model.vae_dtype)
    return (pixels.float() / 2 + 0.5).clamp(0, 1)


def pil_to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size -> [B, 3, H, W] in [-1, 1]."""
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0 for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def pixels_to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [0, 1] -> PIL images (rounded as diffusers' image processor does)."""
    arrays = (pixels.cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(array) for array in arrays]
