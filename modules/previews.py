"""Live preview without a model: latent -> RGB by A1111's "Approx cheap" linear map.

The coefficients (A1111 `sd_vae_approx.cheap_approximation`, first published on the Hugging Face forum
thread "Decoding latents to RGB without upscaling") act on the
sampler's latents (already multiplied by the VAE scaling factor) and give RGB in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from modules.sd_models.model import ModelFamily

# rows: latent channels, columns: R, G, B
SD_COEFFS = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
SDXL_COEFFS = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)
_SDXL_FAMILIES = {ModelFamily.SDXL, ModelFamily.SDXL_INPAINT, ModelFamily.SDXL_REFINER}


def _coefficients(family: ModelFamily | str) -> tuple[tuple[float, float, float], ...]:
    try:
        family = ModelFamily(family)
    except ValueError:
        valid = ", ".join(f.value for f in ModelFamily)
        raise ValueError(f"unknown model family {family!r} for preview; valid: {valid}") from None
    return SDXL_COEFFS if family in _SDXL_FAMILIES else SD_COEFFS


def latent_to_rgb(latents: torch.Tensor, family: ModelFamily | str) -> torch.Tensor:
    """[C, H, W] latents -> [3, H, W] RGB in [0, 1]. Non-4-channel latents show their first channels."""
    if latents.dim() == 4 and latents.shape[0] == 1:
        latents = latents[0]
    if latents.dim() != 3:
        raise ValueError(f"latent preview expects [C, H, W] latents, got shape {tuple(latents.shape)}")
    x = torch.nan_to_num(latents.detach().float().cpu())
    if x.shape[0] == 4:
        coeffs = torch.tensor(_coefficients(family), dtype=torch.float32)
        rgb = torch.einsum("lhw,lr->rhw", x, coeffs)
    else:
        rgb = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, -1, -1)
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


def latent_preview(
    latents: torch.Tensor, family: ModelFamily | str, size: tuple[int, int] | None = None
) -> Image.Image:
    """RGB preview image at latent resolution (or resized to `size` = (width, height))."""
    rgb = latent_to_rgb(latents, family)
    array = (rgb.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    image = Image.fromarray(array, "RGB")
    if size is not None and size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image
