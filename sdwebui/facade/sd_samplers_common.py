"""A1111's `modules.sd_samplers_common`: latents <-> images with the current model's VAE, and the names
extensions import from it (`InterruptedException`, `SamplerData`, `setup_img2img_steps`).

The sampling loop is the engine's (sdwebui.engine.samplers, loop.py); A1111's sampler classes with the
callback points extensions patch are in sd_samplers_kdiffusion / sd_samplers_cfg_denoiser.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import torch
from PIL import Image

from sdwebui.engine import vae as _vae
from sdwebui.facade import shared

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])

approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}


class InterruptedException(BaseException):
    """Raised by A1111's samplers when the job is interrupted (extensions catch it)."""


def _model(model: Any = None) -> Any:
    model = model if model is not None else shared.current_model()
    if model is None:
        raise RuntimeError("sd_samplers_common: no model is loaded")
    return getattr(model, "loaded_model", model)  # shared.sd_model is a view over our LoadedModel


def samples_to_images_tensor(sample: torch.Tensor, approximation: int | None = None, model: Any = None):
    """Latents [B, 4, h, w] -> pixels in [-1, 1] [B, 3, 8h, 8w], decoded with the model's VAE (A1111)."""
    return _vae.decode(_model(model), sample) * 2 - 1


def images_tensor_to_samples(image: torch.Tensor, approximation: int | None = None, model: Any = None):
    """Pixels in [0, 1] [B, 3, H, W] -> latents, encoded with the model's VAE (A1111's input range)."""
    return _vae.encode(_model(model), image * 2 - 1)


def single_sample_to_image(sample: torch.Tensor, approximation: int | None = None) -> Image.Image:
    pixels = samples_to_images_tensor(sample.unsqueeze(0), approximation)[0]
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def sample_to_image(samples: torch.Tensor, index: int = 0, approximation: int | None = None) -> Image.Image:
    return single_sample_to_image(samples[index], approximation)


def samples_to_image_grid(samples: torch.Tensor, approximation: int | None = None) -> Image.Image:
    from sdwebui.facade import images

    return images.image_grid([single_sample_to_image(sample, approximation) for sample in samples])


def setup_img2img_steps(p: Any, steps: int | None = None) -> tuple[int, int]:
    """(steps, t_enc) of an img2img run as A1111 counts them (`img2img_fix_steps` runs all `steps`)."""
    if shared.opts.get("img2img_fix_steps", False) or steps is not None:
        requested = steps or p.steps
        steps = int(requested / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
        t_enc = requested - 1
    else:
        steps = p.steps
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
    return steps, t_enc
