"""VAE encode/decode between PIL images and scaled latents, with the NaN check A1111 users know.

Large images (or a decode that ran out of memory) go through diffusers' tiled VAE; a half-precision VAE that
gives NaN (SDXL's does) decodes once more in float32 (A1111's auto_vae_precision), saying so in the log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from sdwebui.engine.denoiser import StepInterrupted, interrupt_checks, model_blocks
from sdwebui.engine.memory import placement as placements
from sdwebui.engine.memory.oom import OOM_ERRORS
from sdwebui.engine.memory.plan import VAE
from sdwebui.engine.memory.settings import MemorySettings
from sdwebui.models.model import LoadedModel

log = logging.getLogger(__name__)
HALF = (torch.float16, torch.bfloat16)


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
    placements.require(model, VAE)
    tile = _wants_tiling(pixels.shape[-2] * pixels.shape[-1])
    with interrupt_checks(model_blocks(getattr(model.vae, "encoder", None)), should_stop or _never):
        with tiling(model.vae, tile):
            dist = model.vae.encode(pixels.to(_device(model), model.vae_dtype)).latent_dist
    return ((dist.mean - shift) * scaling).to(torch.float32)


def _device(model: LoadedModel) -> torch.device:
    """The job's device; outside a job (a live preview on another thread) wherever the VAE is now: a
    memory mode may have offloaded it."""
    if placements.current() is not None:
        return model.device
    for parameter in model.vae.parameters():
        return parameter.device
    return model.device


def _never() -> bool:
    return False


@contextlib.contextmanager
def tiling(vae: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """diffusers' VAE tiling for the duration (the shared VAE is the same afterwards)."""
    before = getattr(vae, "use_tiling", None)
    if before is None or before == enabled:
        yield
        return
    vae.enable_tiling() if enabled else vae.disable_tiling()
    try:
        yield
    finally:
        vae.enable_tiling() if before else vae.disable_tiling()


def _memory_settings() -> tuple[MemorySettings, bool]:
    """The running job's memory settings and whether its plan tiles the VAE (defaults outside a job)."""
    placement = placements.current()
    if placement is None:
        return MemorySettings(), False
    return placement.settings, placement.plan.tile_vae


def _wants_tiling(pixels: int) -> bool:
    settings, planned = _memory_settings()
    if settings.vae_tiling != "auto":
        return settings.vae_tiling == "always"
    return planned or pixels >= settings.vae_tiling_min_pixels


@torch.no_grad()
def decode(
    model: LoadedModel, latents: torch.Tensor, should_stop: Callable[[], bool] | None = None
) -> torch.Tensor:
    """Scaled latents -> pixels in [0, 1] as float32 [B, 3, H, W]; NaNs raise NaNLatentsError.

    With `should_stop`, one image at a time with checks between the decoder's blocks: StepInterrupted
    (sdwebui.engine.denoiser) stops a long decode early."""
    check_finite(latents, "U-Net", model.dtype)
    placements.require(model, VAE)
    settings, _ = _memory_settings()
    try:
        pixels = _decode_or_tiled(model, latents, should_stop, model.vae_dtype)
    except NaNLatentsError:
        if model.vae_dtype not in HALF or not settings.auto_vae_precision:
            raise
        log.warning(
            "the VAE produced NaN values in %s: decoding again in float32 (auto_vae_precision; "
            "--no-half-vae keeps the VAE in float32)",
            _dtype_name(model.vae_dtype),
        )
        with _upcast(model.vae, model.vae_dtype):
            pixels = _decode_or_tiled(model, latents, should_stop, torch.float32)
    return (pixels.float() / 2 + 0.5).clamp(0, 1)


@contextlib.contextmanager
def _upcast(vae: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    vae.to(torch.float32)
    try:
        yield
    finally:
        vae.to(dtype)


def _decode_or_tiled(
    model: LoadedModel, latents: torch.Tensor, should_stop: Callable[[], bool] | None, dtype: torch.dtype
) -> torch.Tensor:
    """Tiled when the settings or the size ask for it; untiled out of memory -> once more, tiled."""
    factor = model.vae_scale_factor
    tile = _wants_tiling(latents.shape[-2] * latents.shape[-1] * factor * factor)
    try:
        with tiling(model.vae, tile):
            return _decode(model, latents, should_stop, dtype)
    except OOM_ERRORS as error:
        if tile or getattr(model.vae, "use_tiling", None) is None:
            raise
        log.warning("out of memory in the VAE decode (%s): decoding again tiled", str(error).splitlines()[0])
        error.__traceback__ = None
    placement = placements.current()
    if placement is not None:  # the rest of the job decodes tiled too
        placement.tile_vae()
    placements.empty_cache(model.device)
    with tiling(model.vae, True):
        return _decode(model, latents, should_stop, dtype)


def _decode(
    model: LoadedModel, latents: torch.Tensor, should_stop: Callable[[], bool] | None, dtype: torch.dtype
) -> torch.Tensor:
    scaling, shift = _scale(model)
    scaled = latents.to(_device(model), dtype) / scaling + shift
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
    check_finite(pixels, "VAE", dtype)
    return pixels


def pil_to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size -> [B, 3, H, W] in [-1, 1]."""
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0 for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def pixels_to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [0, 1] -> PIL images (rounded as diffusers' image processor does)."""
    arrays = (pixels.cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(array) for array in arrays]
